"""What `robust-mc plane` yields: the grid's test figures, the anchors' and the curve's
projection, as written to plane.json."""

from __future__ import annotations

from dataclasses import dataclass, field

from robust_mc.evaluation.robustness import Metrics


@dataclass
class PlaneResult:
    """The grid's test figures (row-major: y outer, x inner), the anchors' (a, b, the bend) at
    their exact coordinates, and the curve's projection."""

    xs: list[float]
    ys: list[float]
    grid: list[Metrics]
    anchors: dict[str, tuple[float, float, Metrics]]
    curve: list[tuple[float, float]]
    settings: dict = field(default_factory=dict)

    def to_state(self) -> dict:
        return {"format": "robust-mc-plane/1", "xs": self.xs, "ys": self.ys,
                "grid": [m.as_dict() for m in self.grid],
                "anchors": {name: {"x": x, "y": y, **m.as_dict()}
                            for name, (x, y, m) in self.anchors.items()},
                "curve": [list(p) for p in self.curve], "config": self.settings}
