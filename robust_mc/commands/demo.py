"""`robust-mc demo`: the whole story on the embedded 8x8 digits, on a CPU, in minutes.

Two PGD-trained endpoints; the straight line between them, unaligned and aligned; a robust Bezier
curve between the aligned endpoints; a table and a plot that show the robust barrier falling.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from robust_mc.commands import common
from robust_mc.config import ConnectRunConfig, TrainRunConfig, build_config
from robust_mc.data import load_data
from robust_mc.pipelines.connect import run_connect
from robust_mc.pipelines.endpoint_training import trained_endpoint
from robust_mc.pipelines.pair import load_pair
from robust_mc.report.path import print_summary
from robust_mc.run.files import ensure_out_dir
from robust_mc.run.progress import Reporter
from robust_mc.run.runtime import Runtime, start_runtime
from robust_mc.store.path_summary import PathSummary
from robust_mc.store.records import PathLabel

ORDER = 90
HELP = "the whole story on embedded digits data: endpoints, alignment, robust curve, barriers"
SEEDS = (0, 1)
TRAIN_PRESET = "digits-demo"
CONNECT_PRESET = "digits-connect"


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_speed_flags(p, TrainRunConfig)
    p.add_argument("--epochs", dest="optim.epochs", metavar="N",
                   help="epochs of endpoint and curve training (default: the presets')")
    common.add_output_flags(p, "directory for the demo's files (default runs/demo)")


def train_endpoints(out: Path, overrides: dict, runtime: Runtime, reporter: Reporter,
                    argv: list[str]) -> list[dict]:
    base = build_config(TrainRunConfig, TRAIN_PRESET, overrides)
    data = load_data(base.data)
    rows = []
    for seed in SEEDS:
        cfg = build_config(TrainRunConfig, TRAIN_PRESET, {**overrides, "optim.seed": seed})
        path = out / f"endpoint-seed{seed}.pt"
        ckpt = trained_endpoint(cfg, path, runtime, reporter, data=data, argv=argv)
        meta = ckpt.meta
        assert meta.metrics is not None and meta.metrics.test is not None  # trained here
        assert meta.timings is not None
        rows.append({"checkpoint": str(path), "seed": seed,
                     "clean_acc": meta.metrics.test.clean_acc,
                     "robust_acc": meta.metrics.test.robust_acc,
                     "train_s": meta.timings.train_s})
    return rows


def endpoint_table(rows: list[dict]) -> Table:
    table = Table(title="PGD-trained endpoints (digits test split)")
    for column in ("checkpoint", "seed", "clean acc", "robust acc", "train s"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["checkpoint"], str(r["seed"]), f"{r['clean_acc']:.2f}%",
                      f"{r['robust_acc']:.2f}%", f"{r['train_s']:.1f}")
    return table


def run(args: argparse.Namespace) -> int:
    out = ensure_out_dir(args.out or "runs/demo")
    reporter = Reporter(quiet=args.json)
    overrides = common.overrides(args)
    runtime = start_runtime(overrides.get("device", "auto"),
                             build_config(TrainRunConfig, TRAIN_PRESET, overrides).speed)
    rows = train_endpoints(out, overrides, runtime, reporter, args.argv)
    pair = load_pair(rows[0]["checkpoint"], rows[1]["checkpoint"])
    cfg = build_config(ConnectRunConfig, CONNECT_PRESET, {**overrides, "path.compare_line": True})
    summary = run_connect(pair, cfg, Path(out) / "connect", runtime, reporter, args.argv)
    story = robust_barriers(summary)
    if args.json:
        state = summary.to_state()
        print(json.dumps({"endpoints": rows, "robust_loss_barrier": story,
                          "barriers": state["barriers"], "lines": state.get("lines"),
                          "best": state.get("best")}, indent=2))
        return 0
    console = Console()
    console.print(endpoint_table(rows))
    print_summary(summary, "robust mode connectivity between the two endpoints", console)
    console.print("[bold]robust loss barrier[/] (test): " + " -> ".join(
        f"{label} {value:.3f}" for label, value in story.items()))
    console.print(f"files in {out}/: endpoint-seed0.pt, endpoint-seed1.pt, connect/ "
                  f"({', '.join(summary.files)})")
    return 0


def robust_barriers(summary: PathSummary) -> dict[str, float]:
    """The story the demo tells: the robust loss barrier (test) of the straight line between
    the endpoints as given, of the line after alignment, and of the trained curve."""
    story = {str(label): summary.lines[label]["test"].robust_loss_barrier
             for label in (PathLabel("line", False), PathLabel("line", True))
             if label in summary.lines}
    story["curve (aligned)"] = summary.barriers["test"].robust_loss_barrier
    return story
