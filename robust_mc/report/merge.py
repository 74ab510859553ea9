"""`robust-mc merge`'s table: each contender's test figures, size and cost."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from robust_mc.config import MergeRunConfig
from robust_mc.evaluation.robustness import Metrics
from robust_mc.evaluation.verification import PointVerification
from robust_mc.report.plot import figure


@dataclass(frozen=True)
class Contender:
    """One model of the comparison: its figures on the test split, its size and its cost (the
    network passes one prediction takes)."""

    name: str
    metrics: Metrics
    parameters: int
    forwards: int
    barrier: float | None = None  # a member: the robust loss barrier of its line to the merge
    verified: PointVerification | None = None  # --verify: AutoAttack and the masking checks

    def as_dict(self) -> dict:
        return {"name": self.name, **self.metrics.as_dict(), "parameters": self.parameters,
                "forwards": self.forwards, "barrier_to_merge": self.barrier,
                "verification": None if self.verified is None else self.verified.to_state()}


def show_merge(contenders: Sequence[Contender], cfg: MergeRunConfig, members: int) -> None:
    frame = f"{cfg.merge.frame} frame" if cfg.aligned else "not aligned"
    table = Table(title=f"robust-mc merge: {members} members, {frame} "
                        f"(test, {cfg.path.attack}, eps {cfg.attack.eps * 255:.3g}/255)")
    barriers = any(c.barrier is not None for c in contenders)
    verified = any(c.verified is not None for c in contenders)
    for column in ("model", "clean %", "robust %", "robust loss", "params", "passes",
                   *(["barrier"] if barriers else []), *(["AA %"] if verified else [])):
        table.add_column(column, justify="left" if column == "model" else "right")
    for c in contenders:
        m = c.metrics
        barrier = ([] if not barriers else ["" if c.barrier is None else f"{c.barrier:.3f}"])
        attack = [] if not verified else ["" if c.verified is None else
                                          f"{c.verified.autoattack_figure:.2f}"
                                          + ("!" if c.verified.flagged else "")]
        table.add_row(c.name, f"{m.clean_acc:.2f}", f"{m.robust_acc:.2f}",
                      f"{m.robust_loss:.3f}", f"{c.parameters:,}", str(c.forwards), *barrier,
                      *attack)
    Console().print(table)
    for c in contenders:
        if c.verified is not None and c.verified.flagged:
            Console().print(f"{c.name}: {'; '.join(c.verified.hints)}")
    note = "; barrier: each member's robust loss barrier to the merge" if barriers else ""
    if verified:
        note += (f"; AA: AutoAttack on the first {cfg.verify.images} test images, ! where a "
                 "gradient-masking check failed (below)")
    Console().print(f"passes: networks run per prediction{note}")


def plot_merge(contenders: Sequence[Contender], path: Path, title: str) -> Path | None:
    """Each contender's clean and robust accuracy (and AutoAttack's, where verified) as bars,
    written to ``path``; None where matplotlib is missing."""
    rows = list(reversed(contenders))  # the first contender on top
    with figure(path, 1, 1, size=(7.5, 0.45 * len(rows) + 1.4)) as (fig, ax):
        if fig is None:
            return None
        y = list(range(len(rows)))
        ax.barh(y, [c.metrics.clean_acc for c in rows], color="#c6dbef", label="clean")
        ax.barh(y, [c.metrics.robust_acc for c in rows], color="#2171b5", label="robust (PGD)")
        verified = [(i, c.verified.autoattack_figure) for i, c in enumerate(rows)
                    if c.verified is not None]
        if verified:
            ax.scatter([v for _, v in verified], [i for i, _ in verified], color="black",
                       marker="|", s=200, label="AutoAttack", zorder=3)
        ax.set_yticks(y, [c.name for c in rows])
        ax.set_xlim(0, 100)
        ax.set_xlabel("test accuracy (%)")
        ax.set_title(title, fontsize=10)
        ax.legend(loc="lower right", fontsize=8)
    return path
