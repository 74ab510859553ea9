"""`robust-mc eval RUN_DIR|curve.pt|model.pt`: re-evaluate a saved curve (e.g. with another
attack), or measure one model or ensemble checkpoint clean and robust on the test split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from robust_mc.commands import common
from robust_mc.config import ConnectRunConfig
from robust_mc.pipelines.connect import reopened_config
from robust_mc.pipelines.curve_eval import run_eval
from robust_mc.pipelines.model_eval import evaluate_model_file, model_config
from robust_mc.report.path import show_path_run
from robust_mc.run.progress import Reporter
from robust_mc.run.runtime import start_runtime
from robust_mc.store.checkpoint import Checkpoint
from robust_mc.store.records import open_model_file

ORDER = 40
DISTRIBUTED = True  # torchrun may launch it
HELP = ("re-evaluate a trained curve (other attack, more points) without retraining, or "
        "measure a model or ensemble checkpoint")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_path", metavar="RUN|MODEL",
                   help="a connect run directory or its curve.pt; or a model or ensemble "
                        "checkpoint")
    common.add_data_flags(p, ConnectRunConfig)
    p.add_argument("--eps", dest="attack.eps", metavar="EPS", help="radius (default: the run's)")
    common.add_path_flags(p)
    common.add_verify_flags(p)
    common.add_similarity_flags(p)
    common.add_speed_flags(p, ConnectRunConfig)
    common.add_model_file_flags(p)
    common.add_output_flags(p, "directory for the new results (default RUN/eval-<attack>)")


def run(args: argparse.Namespace) -> int:
    opened = open_model_file(args.run_path, common.load_options(args))
    if isinstance(opened, Checkpoint):
        return evaluate_checkpoint(opened, args)
    saved = opened
    curve_file = saved.path or Path(args.run_path)
    cfg = reopened_config(saved.config, common.overrides(args))
    common.check_switches(args, cfg)
    reporter = Reporter(quiet=args.json)
    runtime = start_runtime(cfg.device, cfg.speed)
    tag = cfg.path.attack.replace(":", "-").replace(",", "-").replace("/", "_").replace("=", "")
    out = Path(args.out or curve_file.parent / f"eval-{tag}-{cfg.path.points}pts")
    summary = run_eval(saved, curve_file, cfg, out, runtime, reporter, args.argv)
    show_path_run(out, summary, f"robust-mc eval: {curve_file} under {cfg.path.attack}",
                  args.json, reporter)
    return 0


def evaluate_checkpoint(ckpt: Checkpoint, args: argparse.Namespace) -> int:
    """One model (or ensemble, attacked as one model) on the test split."""
    cfg = model_config(ckpt, common.overrides(args))
    common.check_switches(args, cfg)
    result = evaluate_model_file(ckpt, cfg, Path(args.out) if args.out else None, args.argv)
    if args.json:
        print(json.dumps(result.to_state(), indent=2))
        return 0
    m = result.metrics
    kind = f"ensemble of {len(ckpt.members)}" if ckpt.members else ckpt.arch
    Console().print(f"{ckpt.path} ({kind}) on {result.data.name} test ({m.count} images): clean "
                    f"{m.clean_acc:.2f}%, robust {m.robust_acc:.2f}% under "
                    f"{cfg.path.attack}, eps {cfg.attack.eps * 255:.3g}/255")
    return 0
