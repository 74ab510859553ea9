"""`robust-mc merge`'s table: each contender's test figures, size and cost."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from robust_mc.config import MergeRunConfig
from robust_mc.evaluation.robustness import Metrics


@dataclass(frozen=True)
class Contender:
    """One model of the comparison: its figures on the test split, its size and its cost (the
    network passes one prediction takes)."""

    name: str
    metrics: Metrics
    parameters: int
    forwards: int
    barrier: float | None = None  # a member: the robust loss barrier of its line to the merge

    def as_dict(self) -> dict:
        return {"name": self.name, **self.metrics.as_dict(), "parameters": self.parameters,
                "forwards": self.forwards, "barrier_to_merge": self.barrier}


def show_merge(contenders: Sequence[Contender], cfg: MergeRunConfig, members: int) -> None:
    frame = f"{cfg.merge.frame} frame" if cfg.aligned else "not aligned"
    table = Table(title=f"robust-mc merge: {members} members, {frame} "
                        f"(test, {cfg.path.attack}, eps {cfg.attack.eps * 255:.3g}/255)")
    barriers = any(c.barrier is not None for c in contenders)
    for column in ("model", "clean %", "robust %", "robust loss", "params", "passes",
                   *(["barrier"] if barriers else [])):
        table.add_column(column, justify="left" if column == "model" else "right")
    for c in contenders:
        m = c.metrics
        barrier = ([] if not barriers else ["" if c.barrier is None else f"{c.barrier:.3f}"])
        table.add_row(c.name, f"{m.clean_acc:.2f}", f"{m.robust_acc:.2f}",
                      f"{m.robust_loss:.3f}", f"{c.parameters:,}", str(c.forwards), *barrier)
    Console().print(table)
    note = "; barrier: each member's robust loss barrier to the merge" if barriers else ""
    Console().print(f"passes: networks run per prediction{note}")
