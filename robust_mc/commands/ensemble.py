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
from robust_mc.pipelines.ensemble_files import ensemble_template, run_file_ensemble
from robust_mc.pipelines.model_eval import model_config
from robust_mc.run.progress import Reporter
from robust_mc.run.runtime import start_runtime
from robust_mc.store.checkpoint import Checkpoint
from robust_mc.store.records import CurveRun, open_model_file

ORDER = 50
DISTRIBUTED = True  # torchrun may launch it
HELP = ("choose K points on a trained path, or K of several model files, that together are "
        "most robust (greedy, validation)")
# what a path's networks take and model files do not have
PATH_ONLY = ("path.points", "path.bn_data", "path.bn_images", "path.repair",
             "path.repair_inputs", "path.repair_images", "path.compare_line")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sources", nargs="+", metavar="RUN|MODEL",
                   help="a connect run directory (or its curve.pt); or several model files "
                        "and runs, of one architecture (a run gives its path's --points)")
    common.add_settings(p, EnsembleRunConfig, {"-k": "ensemble.k:K",
                                               "--combine": "ensemble.combine"})
    common.add_data_flags(p, ConnectRunConfig)
    common.add_path_flags(p)
    common.add_speed_flags(p, ConnectRunConfig)
    common.add_model_file_flags(p, foreign=False)  # a run records its networks
    common.add_output_flags(p, "directory for ensemble.pt and ensemble.json "
                               "(default RUN/ensemble-k<K>-<combine>)")


def run(args: argparse.Namespace) -> int:
    if len(args.sources) > 1:
        return ensemble_of_files(args)
    source = Path(args.sources[0])
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


def ensemble_of_files(args: argparse.Namespace) -> int:
    """The ensemble of several model files and runs' path points."""
    options = common.load_options(args)
    sources = [open_model_file(source, options) for source in args.sources]
    if any(isinstance(s, Checkpoint) and s.members for s in sources):
        raise UserError("give endpoint files and connect runs (not ensemble checkpoints)")
    typed = common.overrides(args)
    runs = [s for s in sources if isinstance(s, CurveRun)]
    if not runs and (path_only := [k for k in typed if k in PATH_ONLY]):
        raise UserError(f"{path_only[0]} sets how a path's networks are built; model files "
                        "have none: drop it")
    choice = build_config(EnsembleRunConfig, None, {k: v for k, v in typed.items()
                                                    if k.startswith("ensemble.")}).ensemble
    rest = {k: v for k, v in typed.items() if not k.startswith("ensemble.")}
    cfg = (reopened_config(runs[0].config, rest) if runs else
           model_config(next(s for s in sources if isinstance(s, Checkpoint)), rest))
    ensemble_template(sources, choice.k, cfg.path.points)
    out = Path(args.out or f"ensemble-k{choice.k}-{choice.combine}")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory path")
    reporter = Reporter(quiet=args.json)
    runtime = start_runtime(cfg.device, cfg.speed)
    result = run_file_ensemble(sources, cfg, choice, out, runtime, reporter, args.argv)
    if args.json:
        print(json.dumps({"out": str(out), **result.summary()}, indent=2))
        return 0
    table = Table(title=f"robust-mc ensemble: {choice.k} of {len(args.sources)} sources' networks "
                        f"(test, {cfg.path.attack}, eps {cfg.attack.eps * 255:.3g}/255)")
    for column in ("model", "clean acc", "robust acc", "robust loss"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, metrics in result.test.items():
        label = f"ensemble ({', '.join(result.members)})" if name == "ensemble" else name
        table.add_row(label, f"{metrics.clean_acc:.2f}%", f"{metrics.robust_acc:.2f}%",
                      f"{metrics.robust_loss:.3f}")
    Console().print(table)
    reporter.print(f"wrote {out}/: ensemble.pt (robust-mc eval/info read it), ensemble.json")
    return 0
