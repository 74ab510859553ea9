"""What ``demo`` shows: the endpoints it trained and the robust loss barrier falling from the
line to the aligned line to the curve."""

from __future__ import annotations

from rich.table import Table

from robust_mc.store.path_summary import PathSummary
from robust_mc.store.records import PathLabel


def endpoint_table(rows: list[dict]) -> Table:
    """The endpoints (file, seed, test accuracies, training seconds), one row each."""
    table = Table(title="PGD-trained endpoints (digits test split)")
    for column in ("checkpoint", "seed", "clean acc", "robust acc", "train s"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["checkpoint"], str(r["seed"]), f"{r['clean_acc']:.2f}%",
                      f"{r['robust_acc']:.2f}%", f"{r['train_s']:.1f}")
    return table


def robust_barriers(summary: PathSummary) -> dict[str, float]:
    """The story the demo tells: the robust loss barrier (test) of the straight line between
    the endpoints as given, of the line after alignment, and of the trained curve."""
    story = {str(label): summary.lines[label]["test"].robust_loss_barrier
             for label in (PathLabel("line", False), PathLabel("line", True))
             if label in summary.lines}
    story["curve (aligned)"] = summary.barriers["test"].robust_loss_barrier
    return story
