"""`robust-mc demo`: the whole story on the embedded 8x8 digits, on a CPU, in minutes.

Two PGD-trained endpoints; the straight line between them, unaligned and aligned; a robust Bezier
curve between the aligned endpoints; a table and a plot that show the robust barrier falling.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from rich.console import Console

from robust_mc.commands import common
from robust_mc.config import TrainRunConfig
from robust_mc.pipelines.demo import run_demo, train_settings
from robust_mc.report.demo import endpoint_table, robust_barriers
from robust_mc.report.path import print_summary
from robust_mc.run.files import ensure_out_dir
from robust_mc.run.progress import Reporter
from robust_mc.run.runtime import start_runtime

ORDER = 90
HELP = "the whole story on embedded digits data: endpoints, alignment, robust curve, barriers"


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_speed_flags(p, TrainRunConfig)
    p.add_argument("--epochs", dest="optim.epochs", metavar="N",
                   help="epochs of endpoint and curve training (default: the presets')")
    common.add_output_flags(p, "directory for the demo's files (default runs/demo)")


def run(args: argparse.Namespace) -> int:
    out = ensure_out_dir(args.out or "runs/demo")
    reporter = Reporter(quiet=args.json)
    overrides = common.overrides(args)
    runtime = start_runtime(overrides.get("device", "auto"), train_settings(overrides).speed)
    result = run_demo(out, overrides, runtime, reporter, args.argv)
    summary = result.summary
    rows = [{**asdict(e), "checkpoint": str(e.checkpoint)} for e in result.endpoints]
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
