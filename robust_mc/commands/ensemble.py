"""`robust-mc ensemble RUN_DIR -k K`: a robust ensemble of points on a trained path."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from robust_mc.commands import common
from robust_mc.config import ConnectRunConfig, EnsembleRunConfig, build_config
from robust_mc.errors import UserError
from robust_mc.pipelines.connect import reopened_config
from robust_mc.pipelines.ensemble import run_ensemble
from robust_mc.run.progress import Reporter
from robust_mc.run.runtime import start_runtime
from robust_mc.store.records import CurveRun

ORDER = 50
DISTRIBUTED = True  # torchrun may launch it
HELP = "choose K points on a trained path that together are most robust (greedy, validation)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_path", metavar="RUN", help="a connect run directory, or its curve.pt")
    common.add_settings(p, EnsembleRunConfig, {"-k": "ensemble.k:K",
                                               "--combine": "ensemble.combine"})
    common.add_data_flags(p, ConnectRunConfig)
    common.add_path_flags(p)
    common.add_speed_flags(p, ConnectRunConfig)
    common.add_model_file_flags(p, foreign=False)  # a run records its networks
    common.add_output_flags(p, "directory for ensemble.pt and ensemble.json "
                               "(default RUN/ensemble-k<K>-<combine>)")


def run(args: argparse.Namespace) -> int:
    source = Path(args.run_path)
    curve_file = source / "curve.pt" if source.is_dir() else source
    saved = CurveRun.read(curve_file, common.load_options(args))
    typed = common.overrides(args)
    choice = build_config(EnsembleRunConfig, None, {k: v for k, v in typed.items()
                                                    if k.startswith("ensemble.")}).ensemble
    cfg = reopened_config(saved.config, {k: v for k, v in typed.items()
                                         if not k.startswith("ensemble.")})
    if not 1 <= choice.k <= cfg.path.points:
        raise UserError(f"-k {choice.k}: choose between 1 and the {cfg.path.points} points on "
                        "the path (--points sets how many)")
    out = Path(args.out) if args.out else (curve_file.parent /
                                           f"ensemble-k{choice.k}-{choice.combine}")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory path")
    reporter = Reporter(quiet=args.json)
    runtime = start_runtime(cfg.device, cfg.speed)
    result = run_ensemble(saved, curve_file, cfg, choice, out, runtime, reporter, args.argv)
    if args.json:
        print(json.dumps({"out": str(out), **result.summary()}, indent=2))
        return 0
    table = Table(title=f"robust-mc ensemble: {choice.k} points of {curve_file} "
                        f"(test, {cfg.path.attack}, eps {cfg.attack.eps * 255:.3g}/255)")
    for column in ("model", "members", "clean acc", "robust acc", "robust loss"):
        table.add_column(column, justify="left" if column in ("model", "members") else "right")
    described = {"ensemble": ", ".join(f"t={t:.2f}" for t in result.members_t),
                 "endpoint a": "t=0", "endpoint b": "t=1", "a + b": "t=0, t=1"}
    for name, metrics in result.test.items():
        table.add_row(name, described[name], f"{metrics.clean_acc:.2f}%",
                      f"{metrics.robust_acc:.2f}%", f"{metrics.robust_loss:.3f}")
    Console().print(table)
    reporter.print(f"wrote {out}/: ensemble.pt (robust-mc eval/info read it), ensemble.json")
    return 0
