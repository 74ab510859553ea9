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

    def as_dict(self) -> dict:
        return {"name": self.name, **self.metrics.as_dict(), "parameters": self.parameters,
                "forwards": self.forwards}


def show_merge(contenders: Sequence[Contender], cfg: MergeRunConfig, members: int) -> None:
    table = Table(title=f"robust-mc merge: {members} members, {cfg.merge.frame} frame "
                        f"(test, {cfg.path.attack}, eps {cfg.attack.eps * 255:.3g}/255)")
    for column in ("model", "clean acc", "robust acc", "robust loss", "parameters",
                   "forwards"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for c in contenders:
        m = c.metrics
        table.add_row(c.name, f"{m.clean_acc:.2f}%", f"{m.robust_acc:.2f}%",
                      f"{m.robust_loss:.3f}", f"{c.parameters:,}", str(c.forwards))
    Console().print(table)
