"""What a bench run yields: its methods, one result per cell (the path statistics of one connect
run, with its verification), and the table of mean, std and count per method and metric."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from robust_mc.core.align import Inputs
from robust_mc.core.rotatable import MAP_CLASSES, MapClass
from robust_mc.errors import UserError
from robust_mc.evaluation.barriers import PathStats
from robust_mc.evaluation.verification import Verification

METRICS = ("clean_acc_min", "clean_acc_mean", "robust_acc_min", "robust_acc_mean",
           "clean_loss_barrier", "robust_loss_barrier", "clean_error_barrier",
           "robust_error_barrier")
# with bench.verify: over each cell's verified points (endpoints, best t, worst t)
VERIFY_METRICS = ("autoattack_acc_min", "gap_max", "flagged_points")


@dataclass(frozen=True)
class Method:
    name: str
    curve: bool
    align: bool
    pam: bool
    # every t's unit statistics repaired (path.repair: repair) on clean inputs or on each
    # network's own PGD examples; None: as the connect section says
    repair: Inputs | None = None
    # aligned with this map class (+permutations, +head-rotations, +orthogonal); None: +align
    # takes the connect section's
    maps: MapClass | None = None
    # the maps then trained on the line's loss (+learned: clean inputs, +learned-adv: PGD
    # examples); None: as the connect section says
    learned: Inputs | None = None


REPAIRS: dict[str, Inputs] = {"repair": "clean", "repair-adv": "adversarial"}
LEARNED: dict[str, Inputs] = {"learned": "clean", "learned-adv": "adversarial"}


def parse_method(name: str) -> Method:
    base, *extras = name.split("+")
    unknown = [e for e in extras if e not in ("align", "pam", *REPAIRS, *MAP_CLASSES, *LEARNED)]
    repairs = [REPAIRS[e] for e in extras if e in REPAIRS]
    maps = [e for e in extras if e in MAP_CLASSES]
    learned = [LEARNED[e] for e in extras if e in LEARNED]
    if base not in ("line", "curve") or unknown or len(set(extras)) != len(extras) \
            or len(repairs) > 1 or len(maps) > 1 or len(learned) > 1 \
            or (maps and "align" in extras):
        raise UserError(f"bench method {name!r}: write line or curve, then +align (or the map "
                        "class it aligns with: +permutations, +head-rotations, +orthogonal), "
                        "+learned or +learned-adv (the maps then trained on the line's loss), "
                        "+pam and +repair or +repair-adv (e.g. curve+align+repair)")
    if base == "line" and "pam" in extras:
        raise UserError(f"bench method {name!r}: PAM trains a curve; use curve+pam")
    if "pam" in extras and maps and maps[0] != "permutations":
        raise UserError(f"bench method {name!r}: PAM updates permutations; it cannot follow "
                        f"+{maps[0]} (use curve+permutations+pam)")
    return Method(name, base == "curve", "align" in extras or bool(maps) or bool(learned),
                  "pam" in extras, repairs[0] if repairs else None, maps[0] if maps else None,
                  learned[0] if learned else None)


@dataclass
class CellResult:
    pair: str
    method: str
    seed: int | None
    out: Path
    cached: bool
    barriers: PathStats  # test split
    robust_acc_along_t: list[tuple[float, float]] = field(default_factory=list)
    verification: Verification | None = None

    def value(self, metric: str) -> float:
        """A barrier statistic, or a figure of the verification (NaN for a cell without)."""
        if metric not in VERIFY_METRICS:
            return float(getattr(self.barriers, metric))
        if self.verification is None:
            return math.nan
        points = self.verification.points
        if metric == "autoattack_acc_min":
            return min(p.autoattack_figure for p in points)
        if metric == "gap_max":
            return max(p.gap for p in points)
        return float(len(self.verification.flagged))


@dataclass
class BenchResult:
    methods: list[Method]
    cells: list[CellResult]
    table: dict[str, dict[str, MetricStats]]  # method -> metric -> its statistics
    missing: list[Path] = field(default_factory=list)  # cells no worker has finished yet

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def verified(self) -> bool:
        return any(c.verification is not None for c in self.cells)

    @property
    def computed(self) -> list[str]:
        return [str(c.out) for c in self.cells if not c.cached]


@dataclass(frozen=True)
class MetricStats:
    """One metric over a method's cells: mean, sample standard deviation, number of cells."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> MetricStats:
        return cls(statistics.fmean(values),
                   statistics.stdev(values) if len(values) > 1 else 0.0, len(values))


def aggregate(cells: list[CellResult], methods: list[str]) -> dict[str, dict[str, MetricStats]]:
    """Per method, each metric's mean, sample std and count over pairs and seeds (and the
    verification's figures where cells were verified)."""
    metrics = METRICS + (VERIFY_METRICS if any(c.verification for c in cells) else ())
    return {method: {metric: MetricStats.of([c.value(metric) for c in cells
                                             if c.method == method])
                     for metric in metrics}
            for method in methods}
