"""What a bench leaves: the table in the paper's form (rich, Markdown, CSV, JSON) and one plot of
robust accuracy along t per method."""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import asdict
from pathlib import Path

from rich.table import Table

from robust_mc.report.plot import figure
from robust_mc.run.files import atomic_write_json, atomic_write_text
from robust_mc.store.bench_table import METRICS, BenchResult, MetricStats

# (column title, metric, decimals): accuracies in percent, barriers of loss
COLUMNS = (("clean acc min", "clean_acc_min", 1), ("clean acc mean", "clean_acc_mean", 1),
           ("robust acc min", "robust_acc_min", 1), ("robust acc mean", "robust_acc_mean", 1),
           ("clean loss barrier", "clean_loss_barrier", 3),
           ("robust loss barrier", "robust_loss_barrier", 3))
VERIFY_COLUMNS = (("AutoAttack acc min", "autoattack_acc_min", 1),
                  ("max gap path-AA", "gap_max", 1), ("flagged points", "flagged_points", 1))


def columns(result: BenchResult) -> tuple[tuple[str, str, int], ...]:
    """The table's columns: AutoAttack's beside the path's own where cells were verified."""
    return COLUMNS + (VERIFY_COLUMNS if result.verified else ())


def format_value(stat: MetricStats, digits: int) -> str:
    if math.isnan(stat.mean):
        return "-"
    return f"{stat.mean:.{digits}f} ± {stat.std:.{digits}f}"


def rich_table(result: BenchResult, title: str) -> Table:
    table = Table(title=title)
    table.add_column("method (test split)", no_wrap=True)
    table.add_column("n", justify="right")
    for name, _, _ in columns(result):
        table.add_column(name, justify="right")
    for method, stats in result.table.items():
        table.add_row(method, str(stats[METRICS[0]].n),
                      *(format_value(stats[metric], digits)
                        for _, metric, digits in columns(result)))
    return table


def markdown(result: BenchResult, title: str) -> str:
    head = ["method", "n", *(name for name, _, _ in columns(result))]
    lines = [f"# {title}", "", "Test split; mean ± std over endpoint pairs and curve seeds; "
             "accuracies in %, barriers of the loss.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, stats in result.table.items():
        cells = [method, str(stats[METRICS[0]].n),
                 *(format_value(stats[metric], digits) for _, metric, digits in columns(result))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_text(result: BenchResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    metrics = list(next(iter(result.table.values()), {}))
    writer.writerow(["method", "n", *(f"{m}_{k}" for m in metrics for k in ("mean", "std"))])
    for method, stats in result.table.items():
        writer.writerow([method, stats[METRICS[0]].n,
                         *(v for m in metrics for v in (stats[m].mean, stats[m].std))])
    return buffer.getvalue()


def table_state(result: BenchResult) -> dict[str, dict[str, dict[str, float]]]:
    """The table as plain values: method -> metric -> mean, std, n."""
    return {method: {metric: asdict(stat) for metric, stat in stats.items()}
            for method, stats in result.table.items()}


def write_bench_files(out: Path, result: BenchResult, title: str, config: dict,
                      record: dict) -> list[str]:
    files = ["bench.csv", "bench.md", "bench.json"]
    atomic_write_text(out / "bench.csv", csv_text(result))
    atomic_write_text(out / "bench.md", markdown(result, title))
    if plot(out, result, title) is not None:
        files.append("bench.png")
    cells = [{"pair": c.pair, "method": c.method, "seed": c.seed, "out": str(c.out),
              "cached": c.cached, "test": c.barriers.to_state(),
              **({"verification": c.verification.to_state()} if c.verification else {})}
             for c in result.cells]
    atomic_write_json(out / "bench.json", {"table": table_state(result), "cells": cells,
                                           "config": config, "record": record})
    return files


def plot(out: Path, result: BenchResult, title: str) -> Path | None:
    """bench.png: test robust accuracy along t, mean over cells with a ±std band, per method."""
    path = out / "bench.png"
    with figure(path, size=(7, 4.5)) as (fig, ax):
        if fig is None:
            return None
        for method in result.methods:
            curves = [c.robust_acc_along_t for c in result.cells
                      if c.method == method.name and c.robust_acc_along_t]
            if not curves or len({len(c) for c in curves}) != 1:
                continue
            ts = [t for t, _ in curves[0]]
            columns = list(zip(*[[acc for _, acc in c] for c in curves], strict=True))
            mean = [statistics.fmean(col) for col in columns]
            std = [statistics.stdev(col) if len(col) > 1 else 0.0 for col in columns]
            ax.plot(ts, mean, "-o" if method.curve else "--", label=method.name, markersize=3)
            ax.fill_between(ts, [m - s for m, s in zip(mean, std, strict=True)],
                            [m + s for m, s in zip(mean, std, strict=True)], alpha=0.15)
        ax.set_xlabel("t")
        ax.set_ylabel("robust accuracy (%, test)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return path
