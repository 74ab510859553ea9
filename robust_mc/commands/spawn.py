"""`robust-mc spawn --config spawn-digits`: the training-trajectory view of robust barriers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from robust_mc.commands import common
from robust_mc.config import SpawnRunConfig, build_config, to_dict
from robust_mc.errors import UserError
from robust_mc.pipelines.spawn import run_spawn
from robust_mc.report.spawn import rich_table, write_spawn_files
from robust_mc.run.interrupt import StopSignals
from robust_mc.run.progress import Reporter
from robust_mc.run.provenance import run_record
from robust_mc.run.runtime import start_runtime

ORDER = 65
HELP = ("fork two children from one robust parent at several epochs and measure the barrier "
        "between them: where on the trajectory runs part")


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_config_flag(p)
    common.add_data_flags(p, SpawnRunConfig)
    common.add_settings(p.add_argument_group("spawn"), SpawnRunConfig, {
        "--spawn-epochs": "spawn.epochs:K,K", "--child-seeds": "spawn.child_seeds:S,S",
        "--seed": "train.optim.seed", "--epochs": "train.optim.epochs"})
    common.add_settings(p, SpawnRunConfig, {"--device": "device:auto|cpu|cuda"})
    common.add_output_flags(p, "spawn directory (default runs/spawn-<config name>)")


def run(args: argparse.Namespace) -> int:
    if args.config is None:
        raise UserError("spawn needs --config FILE (e.g. --config spawn-digits)")
    cfg = build_config(SpawnRunConfig, args.config, common.overrides(args))
    out = Path(args.out or Path("runs") / f"spawn-{Path(args.config).stem}")
    reporter = Reporter(quiet=args.json)
    runtime = start_runtime(cfg.device, cfg.connect.speed)
    with StopSignals() as stop:
        points = run_spawn(cfg, out, runtime, reporter, args.argv, stop)
    title = f"robust-mc spawn: {Path(args.config).stem} ({cfg.data.dataset})"
    files = write_spawn_files(out, points, title, to_dict(cfg), run_record(args.argv))
    if args.json:
        print(json.dumps({"out": str(out), "points": [p.as_dict() for p in points]}, indent=2))
        return 0
    Console().print(rich_table(points, title))
    reporter.print(f"wrote {out}/: {', '.join(files)}")
    return 0
