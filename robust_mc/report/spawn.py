"""What `robust-mc spawn` leaves: the barriers between the two children of each spawn epoch as
a table (terminal, spawn.md), spawn.json and spawn.png (barrier against the spawn epoch)."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from robust_mc.report.plot import figure
from robust_mc.run.files import atomic_write_json, atomic_write_text
from robust_mc.store.spawn_points import SpawnPoint

COLUMNS = (("clean barrier", "unaligned", "clean_loss_barrier"),
           ("clean barrier aligned", "aligned", "clean_loss_barrier"),
           ("robust barrier", "unaligned", "robust_loss_barrier"),
           ("robust barrier aligned", "aligned", "robust_loss_barrier"),
           ("robust acc min aligned", "aligned", "robust_acc_min"))


def cells(point: SpawnPoint) -> list[str]:
    values = [getattr(getattr(point, which), key) for _, which, key in COLUMNS]
    layers = point.layers
    return [str(point.epoch), *(f"{v:.3f}" if "barrier" in k else f"{v:.1f}"
                                for v, (k, _, _) in zip(values, COLUMNS, strict=True)),
            f"{layers.measured_robust:.3f} / {layers.predicted_robust:.3f}",
            f"{layers.worst_group} ({layers.worst_group_robust_barrier:.3f})"]


HEADER = ["spawn epoch", *(c[0] for c in COLUMNS), "robust midpoint measured / predicted",
          "worst layer group (robust barrier)"]


def rich_table(points: list[SpawnPoint], title: str) -> Table:
    table = Table(title=title)
    for name in HEADER:
        table.add_column(name, justify="right" if name != HEADER[-1] else "left")
    for point in points:
        table.add_row(*cells(point))
    return table


def write_spawn_files(out: Path, points: list[SpawnPoint], title: str, config: dict,
                      record: dict) -> list[str]:
    lines = [f"# {title}", "", "Test split; loss barriers of the straight line between the two "
             "children of each spawn epoch; layers: the whole network's midpoint barrier, "
             "aligned.", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cells(p)) + " |" for p in points]
    atomic_write_text(out / "spawn.md", "\n".join(lines) + "\n")
    atomic_write_json(out / "spawn.json", {"points": [p.as_dict() for p in points],
                                           "config": config, "record": record})
    files = ["spawn.md", "spawn.json"]
    if plot(out, points, title) is not None:
        files.append("spawn.png")
    return files


def plot(out: Path, points: list[SpawnPoint], title: str) -> Path | None:
    path = out / "spawn.png"
    with figure(path, 1, 2, size=(10, 4)) as (fig, axes):
        if fig is None:
            return None
        epochs = [p.epoch for p in points]
        for ax, kind in zip(axes, ("clean", "robust"), strict=True):
            for which, style in (("unaligned", "--o"), ("aligned", "-o")):
                ax.plot(epochs, [getattr(getattr(p, which), f"{kind}_loss_barrier")
                                 for p in points], style, label=f"line, {which}")
            ax.set_xlabel("spawn epoch k")
            ax.set_ylabel(f"{kind} loss barrier (test)")
            ax.set_title(f"{kind}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(title)
    return path
