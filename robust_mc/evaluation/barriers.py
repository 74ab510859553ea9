"""Loss barriers and path statistics (Garipov et al. 2018; Zhao et al. 2020; Tatro et al. 2020).

barrier = max over t of [value(t) - ((1 - t) value(0) + t value(1))]: how far the path rises
above the straight interpolation of its endpoints' values, with the t where it does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

from robust_mc.evaluation.path import PointResult


def barrier(ts: Sequence[float], values: Sequence[float]) -> tuple[float, float]:
    """(height, t of the maximum) of ``values`` above the chord between the two ends."""
    first, last = values[0], values[-1]
    heights = [v - ((1 - t) * first + t * last) for t, v in zip(ts, values, strict=True)]
    index = max(range(len(heights)), key=heights.__getitem__)
    return heights[index], ts[index]


@dataclass(frozen=True)
class PathStats:
    """One path on one split: barriers of clean and robust loss and error (percent points), the t
    where each peaks, and the min and mean accuracies (percent) along the path."""

    clean_loss_barrier: float
    clean_loss_barrier_t: float
    clean_error_barrier: float
    clean_error_barrier_t: float
    clean_acc_min: float
    clean_acc_mean: float
    robust_loss_barrier: float
    robust_loss_barrier_t: float
    robust_error_barrier: float
    robust_error_barrier_t: float
    robust_acc_min: float
    robust_acc_mean: float

    def to_state(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> PathStats:
        return cls(**{f.name: float(state[f.name]) for f in fields(cls)})

    @classmethod
    def metrics(cls) -> list[str]:
        """The statistics a table reports (the t of each peak aside)."""
        return [f.name for f in fields(cls) if not f.name.endswith("_t")]


def path_summary(points: Sequence[PointResult], split: str) -> PathStats:
    """Barriers of clean and robust loss and error, and min/mean accuracies, on one split."""
    ts = [p.t for p in points]
    metrics = [getattr(p, split) for p in points]
    out: dict[str, float] = {}
    for kind in ("clean", "robust"):
        loss = [getattr(m, f"{kind}_loss") for m in metrics]
        acc = [getattr(m, f"{kind}_acc") for m in metrics]
        out[f"{kind}_loss_barrier"], out[f"{kind}_loss_barrier_t"] = barrier(ts, loss)
        out[f"{kind}_error_barrier"], out[f"{kind}_error_barrier_t"] = barrier(
            ts, [100 - a for a in acc])
        out[f"{kind}_acc_min"] = min(acc)
        out[f"{kind}_acc_mean"] = sum(acc) / len(acc)
    return PathStats(**out)
