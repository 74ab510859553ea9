"""`robust-mc merge a.pt b.pt c.pt ... -o merged.pt`: several robust endpoints as one network."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from robust_mc.commands import common
from robust_mc.config import MergeRunConfig, build_config
from robust_mc.data import load_data
from robust_mc.errors import UserError
from robust_mc.pipelines.merge import load_members, merge_weights, run_merge
from robust_mc.pipelines.pair import recorded_defaults
from robust_mc.report.merge import plot_merge, show_merge
from robust_mc.run.files import check_writable_file, remove
from robust_mc.run.interrupt import StopSignals
from robust_mc.run.progress import Reporter
from robust_mc.run.runtime import start_runtime
from robust_mc.store.checkpoint import save_checkpoint

ORDER = 55
DISTRIBUTED = True  # torchrun may launch it
FRAME_SETTINGS = ("merge.frame", "merge.reference", "merge.rounds")
HELP = "merge several robust endpoints into one network (aligned, averaged, repaired)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("members", nargs="+", metavar="MODEL", help="two or more endpoints of one "
                                                               "architecture")
    common.add_config_flag(p)
    common.add_settings(p.add_argument_group("merge"), MergeRunConfig, {
        "--merge-frame": "merge.frame", "--merge-reference": "merge.reference",
        "--merge-rounds": "merge.rounds", "--merge-weights": "merge.weights:W1,W2,...",
        "--merge-select": "merge.select", "--barrier-points": "merge.barrier_points",
        "--finetune-epochs": "merge.finetune_epochs:K", "--finetune-lr": "merge.finetune_lr:LR"})
    common.add_data_flags(p, MergeRunConfig)
    common.add_align_flags(p, MergeRunConfig)
    common.add_attack_flags(p, MergeRunConfig, "training (alignment and repair inputs)")
    common.add_settings(p.add_argument_group("statistics and evaluation"), MergeRunConfig, {
        **common.REPAIR_FLAGS, "--bn-data": "path.bn_data", "--bn-images": "path.bn_images",
        "--eval-attack": "path.attack:SPEC", "--eval-batch-size": "path.batch_size",
        "--val-limit": "path.val_limit", "--eval-test-limit": "path.test_limit"})
    common.add_verify_flags(p)
    common.add_speed_flags(p, MergeRunConfig)
    common.add_model_file_flags(p)
    common.add_output_flags(p, "where to write the merged model (default: merged.pt)")


def run(args: argparse.Namespace) -> int:
    members = load_members(args.members, common.load_options(args))
    typed = common.overrides(args)
    cfg = build_config(MergeRunConfig, args.config, typed, base=recorded_defaults(members[0]))
    ignored = [k for k in typed if k.startswith("align.") or k in FRAME_SETTINGS]
    details = [flag for flag, key in common.VERIFY_DETAILS.items() if key in typed]
    if details and not cfg.verify.enabled:
        raise UserError(f"{details[0]} sets how --verify measures; add --verify")
    if not cfg.aligned and ignored:
        raise UserError(f"--no-align averages the members as given, so {ignored[0]} would "
                        "be ignored; drop it, or align")
    cfg.align.map_class()  # a rotation class with a method that reads no activations: refused
    merge_weights(cfg, len(members))  # checked before any work
    out = args.out or "merged.pt"
    check_writable_file(out)
    reporter = Reporter(quiet=args.json)
    runtime = start_runtime(cfg.device, cfg.speed)
    data = load_data(cfg.data)
    for member in members:
        reporter.print(member.describe())
    with StopSignals() as stop:
        result = run_merge(members, cfg, data, runtime, reporter, args.argv, Path(out), stop)
        path = save_checkpoint(result.checkpoint, out)
        if result.state_path is not None:
            remove(result.state_path)
    frame = f"{cfg.merge.frame} frame" if cfg.aligned else "not aligned"
    picture = plot_merge(result.contenders, Path(out).with_suffix(".png"),
                         f"{len(members)} members merged ({frame}), test split")
    if args.json:
        print(json.dumps({"checkpoint": str(path), "figure": picture and str(picture),
                          "weights": result.weights, "frame": frame,
                          "rounds": [vars(r) for r in result.framed.rounds],
                          "function_error": result.framed.function_error,
                          "contenders": [c.as_dict() for c in result.contenders]}, indent=2))
        return 0
    show_merge(result.contenders, cfg, len(members))
    reporter.print(f"wrote {path} (robust-mc eval/info read it)"
                   + (f" and {picture}" if picture is not None else ""))
    return 0
