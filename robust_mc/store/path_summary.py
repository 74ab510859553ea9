"""``summary.json``, a connect run's results as a typed record (:class:`PathSummary`): the
curve, barriers per split (and of the lines beside it), the best t, the endpoint checks, timings
and the verification; files written by earlier versions of the format load.

Example::

    summary = PathSummary.read(Path("runs/r20/summary.json"))
    print(summary.label, summary.barriers["test"].robust_loss_barrier)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from robust_mc.errors import UserError
from robust_mc.evaluation.barriers import PathStats
from robust_mc.evaluation.robustness import Metrics
from robust_mc.evaluation.verification import Verification
from robust_mc.limits import check_regular_file
from robust_mc.run.files import as_written, atomic_write_json, read_json
from robust_mc.store.records import PamHistory, PathLabel

SUMMARY_FORMAT = "robust-mc-summary/1"


def _field(state: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    """``state[key]`` when it is a ``kind``; ``default`` when absent or null; ValueError naming
    the field otherwise (a list where a mapping belongs is not read as one)."""
    value = state.get(key)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise ValueError(f"{key} must be a {'JSON object' if kind is dict else kind.__name__}, "
                         f"not {type(value).__name__}")
    return value


@dataclass(frozen=True)
class CurveInfo:
    kind: str
    bends: int
    aligned: bool

    @property
    def label(self) -> PathLabel:
        return PathLabel(self.kind, self.aligned)


@dataclass(frozen=True)
class SecondsPerT:
    """Mean seconds per evaluated t: batch-norm recomputation, clean passes, the attack, all."""

    bn: float = 0.0
    repair: float = 0.0
    clean: float = 0.0
    attack: float = 0.0
    total: float = 0.0

    @classmethod
    def mean_of(cls, seconds: list[dict[str, float]]) -> SecondsPerT:
        """The mean of the points' own timings (keys as ``evaluate_path`` records them)."""
        return cls(**{f.name: sum(s.get(f.name, 0.0) for s in seconds) / max(len(seconds), 1)
                      for f in fields(cls)})


@dataclass(frozen=True)
class BestPoint:
    """The best on-path robust model: the interior t with the highest validation robust
    accuracy, and its figures."""

    t: float
    val: Metrics
    test: Metrics

    def to_state(self) -> dict[str, Any]:
        return {"t": self.t, "val": self.val.as_dict(), "test": self.test.as_dict()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BestPoint:
        return cls(state["t"], Metrics.from_state(state["val"]), Metrics.from_state(state["test"]))


@dataclass(frozen=True)
class EndpointCheck:
    """An endpoint's own test figures (its own BN statistics) against its end of the path."""

    own: Metrics
    on_path: Metrics
    max_diff: float  # accuracy points
    reproduced: bool

    def to_state(self) -> dict[str, Any]:
        return {"own": self.own.as_dict(), "on_path": self.on_path.as_dict(),
                "max_diff": self.max_diff, "reproduced": self.reproduced}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EndpointCheck:
        return cls(Metrics.from_state(state["own"]), Metrics.from_state(state["on_path"]),
                   float(state["max_diff"]), bool(state["reproduced"]))


@dataclass
class PathSummary:
    """``summary.json``: per split, the path's statistics; the straight lines' beside it; the
    best on-path robust model; endpoint reproduction; timings; the resolved configuration and
    where it came from. Written last: its presence marks a run complete."""

    curve: CurveInfo
    barriers: dict[str, PathStats]  # split -> statistics
    config: dict[str, Any]
    lines: dict[PathLabel, dict[str, PathStats]] = field(default_factory=dict)
    best: BestPoint | None = None
    endpoints: dict[str, EndpointCheck] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # evaluate, align_and_train
    per_t: SecondsPerT = field(default_factory=SecondsPerT)
    alignment: dict[str, Any] | None = None
    pam: PamHistory | None = None
    training: list[dict[str, Any]] = field(default_factory=list)
    record: dict[str, Any] | None = None
    runtime: dict[str, Any] | None = None
    endpoint_digests: dict[str, str] | None = None
    files: list[str] = field(default_factory=list)
    source: str | None = None  # the curve re-evaluated (eval)
    verification: Verification | None = None  # connect --verify, robust-mc verify

    @property
    def label(self) -> PathLabel:
        return self.curve.label

    def to_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "format": SUMMARY_FORMAT,
            "curve": {"kind": self.curve.kind, "bends": self.curve.bends,
                      "aligned": self.curve.aligned},
            "barriers": {split: s.to_state() for split, s in self.barriers.items()}}
        if self.lines:
            state["lines"] = {str(label): {split: s.to_state() for split, s in splits.items()}
                              for label, splits in self.lines.items()}
        if self.best is not None:
            state["best"] = self.best.to_state()
        state["endpoints"] = {end: c.to_state() for end, c in self.endpoints.items()}
        state["timings"] = {**self.seconds, "per_t": asdict(self.per_t)}
        state["config"] = self.config
        if self.pam is not None:
            state["pam"] = self.pam.to_state()
        optional = {"alignment": self.alignment, "training": self.training,
                    "record": self.record, "runtime": self.runtime,
                    "endpoint_digests": self.endpoint_digests, "files": self.files,
                    "source": self.source}
        state.update({k: v for k, v in optional.items() if v not in (None, [])})
        if self.verification is not None:
            state["verification"] = self.verification.to_state()
        return state

    def write(self, path: Path) -> Path:
        return atomic_write_json(path, self.to_state())

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PathSummary:
        """The summary :meth:`to_state` wrote; ValueError (or KeyError, TypeError) for a file
        of another format or a field of the wrong type."""
        if not isinstance(state, dict):
            raise ValueError("not a JSON object")
        if state.get("format", SUMMARY_FORMAT) != SUMMARY_FORMAT:
            raise ValueError(f"format {state['format']!r}, not {SUMMARY_FORMAT!r}")
        timings = dict(_field(state, "timings", dict, {}))
        per_t = SecondsPerT(**timings.pop("per_t", {}))
        curve = state["curve"]
        if not (isinstance(curve["kind"], str) and isinstance(curve["bends"], int)
                and isinstance(curve["aligned"], bool)):
            raise ValueError("curve must hold its kind, bends and aligned")
        best = state.get("best")
        if best and not (isinstance(best.get("t"), (int, float)) and 0 <= best["t"] <= 1):
            raise ValueError("best t must be a number in [0, 1]")
        barriers = _field(state, "barriers", dict, None)
        if not barriers:
            raise ValueError("barriers must hold at least one split")
        files = _field(state, "files", list, [])
        if not all(isinstance(name, str) for name in files):
            raise ValueError("files must be a list of file names")
        return cls(CurveInfo(curve["kind"], curve["bends"], curve["aligned"]),
                   {split: PathStats.from_state(s) for split, s in barriers.items()},
                   _field(state, "config", dict, {}),
                   {PathLabel.parse(label): {split: PathStats.from_state(s)
                                             for split, s in splits.items()}
                    for label, splits in _field(state, "lines", dict, {}).items()},
                   BestPoint.from_state(state["best"]) if state.get("best") else None,
                   {end: EndpointCheck.from_state(c)
                    for end, c in _field(state, "endpoints", dict, {}).items()},
                   timings, per_t, _field(state, "alignment", dict, None),
                   PamHistory.from_state(state.get("pam")),
                   _field(state, "training", list, []), _field(state, "record", dict, None),
                   _field(state, "runtime", dict, None),
                   _field(state, "endpoint_digests", dict, None), files,
                   _field(state, "source", str, None),
                   Verification.from_state(state.get("verification")))

    @classmethod
    def read(cls, path: Path) -> PathSummary | None:
        """summary.json, or None where there is none; one that robust-mc did not write (another
        format, a field of the wrong type, not JSON) is refused in one line, and left as it
        is."""
        if not check_regular_file(path).exists():
            return None
        if not path.is_file():
            raise UserError(f"{path} is a directory, not a run's summary; move it away")
        with as_written(path, "delete it to evaluate the run again, or restore the one it "
                              "wrote"):
            return cls.from_state(read_json(path))
