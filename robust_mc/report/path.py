"""What a path run leaves: path.json, path.csv, summary.json, path.png and a summary table."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from robust_mc.evaluation.path import PointResult
from robust_mc.evaluation.robustness import Metrics
from robust_mc.report.plot import figure
from robust_mc.report.verification import print_verification
from robust_mc.run.files import as_written, atomic_write_json, atomic_write_text, read_json
from robust_mc.run.progress import Reporter
from robust_mc.store.path_summary import PathSummary
from robust_mc.store.records import PathLabel

COLUMNS = ("t", "split", "clean_loss", "clean_acc", "robust_loss", "robust_acc", "count")


def path_rows(points: list[PointResult], label: PathLabel) -> list[dict]:
    return [{"path": str(label), **p.row(split)} for p in points for split in ("val", "test")]


def write_path_files(out: Path, paths: dict[PathLabel, list[PointResult]],
                     extra: dict | None = None) -> None:
    """path.json (rows and seconds per t of the first path, and ``extra`` sections) and
    path.csv: one row per path, t and split."""
    rows = [row for label, points in paths.items() for row in path_rows(points, label)]
    atomic_write_json(out / "path.json", {"rows": rows,
                                          "seconds_per_t": [p.seconds for p in
                                                            next(iter(paths.values()))],
                                          **(extra or {})})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=("path", *COLUMNS))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "path.csv", buffer.getvalue())


def robust_accuracy_along_t(out: Path) -> list[tuple[float, float]]:
    """(t, test robust accuracy) of the first path in ``out/path.json``."""
    points = path_points(out)
    first = next(iter(points.values()), [])
    return [(p.t, p.test.robust_acc) for p in first]


def path_points(out: Path) -> dict[str, list[PointResult]]:
    """The points of each path in ``out/path.json`` (without their timings), by path label, in
    the order the file lists the paths; a file robust-mc did not write is refused in one
    line."""
    path = out / "path.json"
    state = read_json(path) or {}
    by_t: dict[str, dict[float, dict[str, Metrics]]] = {}
    with as_written(path, "evaluate the run again (robust-mc eval RUN --out DIR)"):
        if not isinstance(state, dict) or not isinstance(state.get("rows", []), list):
            raise ValueError("path.json holds its rows as a list")
        for row in state.get("rows", []):
            metrics = Metrics.from_state({k: row[k] for k in COLUMNS[2:]})
            t, split = row["t"], row["split"]
            if not (isinstance(t, (int, float)) and 0 <= t <= 1 and split in ("val", "test")):
                raise ValueError("each row holds t in [0, 1] and the split, val or test")
            by_t.setdefault(str(row["path"]), {}).setdefault(float(t), {})[split] = metrics
        return {label: [PointResult(t, splits["val"], splits["test"]) for t, splits in
                        sorted(points.items())] for label, points in by_t.items()}


def plot_paths(out: Path, paths: dict[PathLabel, list[PointResult]], title: str
               ) -> Path | None:
    """path.png: clean and robust accuracy and loss along t (test split); None without
    matplotlib (the ``plot`` extra)."""
    path = out / "path.png"
    with figure(path, 2, 2, size=(10, 7)) as (fig, axes):
        if fig is None:
            return None
        panels = (("clean_acc", "clean accuracy (%)"), ("robust_acc", "robust accuracy (%)"),
                  ("clean_loss", "clean loss"), ("robust_loss", "robust loss"))
        for ax, (key, name) in zip(axes.flat, panels, strict=True):
            for label, points in paths.items():
                ax.plot([p.t for p in points], [getattr(p.test, key) for p in points],
                        "--" if label.is_line else "-o", label=str(label), markersize=3)
            ax.set_title(name)
            ax.grid(alpha=0.3)
        for ax in axes[1]:
            ax.set_xlabel("t")
        axes[0][0].legend(fontsize=8)
        fig.suptitle(title)
    return path


def summary_table(summary: PathSummary, title: str) -> Table:
    """Barriers clean vs robust and min/mean accuracy per path, best t, endpoint check."""
    table = Table(title=title)
    table.add_column("path (test split)", no_wrap=True)
    for column in ("clean loss barrier", "robust loss barrier", "clean err barrier",
                   "robust err barrier", "clean acc min/mean", "robust acc min/mean"):
        table.add_column(column, justify="right")
    rows = {summary.label: summary.barriers["test"]}
    for label, splits in summary.lines.items():
        rows[label] = splits["test"]
    for label, b in rows.items():
        table.add_row(str(label), f"{b.clean_loss_barrier:.3f}", f"{b.robust_loss_barrier:.3f}",
                      f"{b.clean_error_barrier:.2f}", f"{b.robust_error_barrier:.2f}",
                      f"{b.clean_acc_min:.1f} / {b.clean_acc_mean:.1f}",
                      f"{b.robust_acc_min:.1f} / {b.robust_acc_mean:.1f}")
    return table


def summary_json(out: Path, summary: PathSummary) -> str:
    """What ``--json`` prints for a path run: where it wrote, barriers, best, checks, timings."""
    state = summary.to_state()
    keys = ("barriers", "best", "endpoints", "timings")
    return json.dumps({"out": str(out), **{k: state[k] for k in keys if k in state}}, indent=2)


def show_path_run(out: Path, summary: PathSummary, title: str, as_json: bool,
                  reporter: Reporter) -> None:
    """What connect and eval end with: the JSON summary, or the table and where files went."""
    if as_json:
        print(summary_json(out, summary))
        return
    print_summary(summary, title)
    files = summary.files
    reporter.print(f"wrote {out}/" + (f": {', '.join(files)}" if files else ""))


def print_summary(summary: PathSummary, title: str, console: Console | None = None) -> None:
    console = console or Console()
    console.print(summary_table(summary, title))
    for name, check in summary.endpoints.items():
        own, on_path = check.own, check.on_path
        mark = "[green]reproduced[/]" if check.reproduced else "[bold red]NOT reproduced[/]"
        console.print(f"endpoint {name}: own clean/robust {own.clean_acc:.2f}/"
                      f"{own.robust_acc:.2f}%, on path {on_path.clean_acc:.2f}/"
                      f"{on_path.robust_acc:.2f}% {mark}")
    best = summary.best
    if best is not None:
        console.print(f"best on-path robust model (chosen on validation): t={best.t:.2f}, "
                      f"test clean {best.test.clean_acc:.2f}% robust "
                      f"{best.test.robust_acc:.2f}%")
    per_t = summary.per_t
    repair = f", repair {per_t.repair:.2f}" if per_t.repair else ""
    console.print(f"seconds per evaluated t: {per_t.total:.2f} (BN {per_t.bn:.2f}{repair}, "
                  f"clean {per_t.clean:.2f}, attack {per_t.attack:.2f})")
    if summary.verification is not None:
        print_verification(summary.verification, console)
