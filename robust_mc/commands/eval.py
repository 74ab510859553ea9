"""`robust-mc eval RUN_DIR|curve.pt|model.pt`: re-evaluate a saved curve (e.g. with another
attack), or measure one model or ensemble checkpoint clean and robust on the test split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from robust_mc.commands import common
from robust_mc.config import ConnectRunConfig, build_config
from robust_mc.data import load_data
from robust_mc.errors import UserError
from robust_mc.evaluation.path import path_attack
from robust_mc.evaluation.robustness import evaluate_seeded
from robust_mc.pipelines.connect import config_from_run, preflight
from robust_mc.pipelines.curve_eval import run_eval
from robust_mc.pipelines.pair import check_fits_data
from robust_mc.report.path import show_path_run
from robust_mc.run.files import atomic_write_json, ensure_out_dir
from robust_mc.run.progress import Reporter
from robust_mc.run.provenance import run_record
from robust_mc.run.runtime import start_runtime
from robust_mc.store.checkpoint import (
    Checkpoint,
    build_network,
    checkpoint_from_object,
    load_checkpoint,
    read_checkpoint_file,
)
from robust_mc.store.records import CurveRun, is_curve_state

ORDER = 40
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
    source = Path(args.run_path)
    curve_file = source / "curve.pt" if source.is_dir() else source
    options = common.load_options(args)
    if args.run_path.startswith("robustbench:"):  # a zoo entry, its weights in --model-dir
        return evaluate_checkpoint(load_checkpoint(args.run_path, options), args)
    if source.is_file():  # a curve.pt, or a model or ensemble checkpoint: read once
        obj = read_checkpoint_file(source, options.unpickle)
        if not is_curve_state(obj):
            ckpt = checkpoint_from_object(obj, source, options, allow_ensemble=True)
            return evaluate_checkpoint(ckpt, args)
        saved = CurveRun.from_state(obj, curve_file, options)
    else:
        saved = CurveRun.read(curve_file, options)
    cfg = config_from_run(saved, common.overrides(args))
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
    path = ckpt.path
    base: dict = {"data": {"dataset": ckpt.dataset}} if ckpt.dataset else {}
    eps = (ckpt.meta.get("metrics") or {}).get("eps")
    if isinstance(eps, float):
        base["attack"] = {"eps": eps}
    cfg = build_config(ConnectRunConfig, None, common.overrides(args), base=base)
    preflight(cfg, re_evaluation=True)
    if cfg.verify.enabled or cfg.path.similarity:
        raise UserError("--verify and --similarity measure points of a path; give a connect "
                        "run directory (robust-mc verify RUN_DIR), not one model")
    common.check_switches(args, cfg)
    runtime = start_runtime(cfg.device, cfg.speed)
    data = load_data(cfg.data)
    check_fits_data(ckpt, data)
    out = ensure_out_dir(args.out) if args.out else None
    model = runtime.prepare(build_network(ckpt))
    attack = path_attack(cfg.path, cfg.attack, data.info.num_classes)
    test = data.test.take(cfg.path.test_limit).to(runtime.device)
    metrics = evaluate_seeded(model, test, attack, runtime, cfg.path.batch_size, cfg.path.seed)
    result = {"checkpoint": str(path), "members": len(ckpt.members or [None]),
              "test": metrics.as_dict(), "eval_attack": cfg.path.attack, "eps": cfg.attack.eps}
    if out is not None:
        atomic_write_json(out / "eval.json", {**result, "record": run_record(args.argv)})
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    kind = f"ensemble of {result['members']}" if ckpt.members else ckpt.arch
    Console().print(f"{path} ({kind}) on {data.info.name} test ({metrics.count} images): clean "
                    f"{metrics.clean_acc:.2f}%, robust {metrics.robust_acc:.2f}% under "
                    f"{cfg.path.attack}, eps {cfg.attack.eps * 255:.3g}/255")
    return 0
