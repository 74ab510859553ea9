"""`robust-mc align a.pt b.pt -o b_aligned.pt`: permute b's hidden units to match a's."""

from __future__ import annotations

import argparse
import json

from rich.console import Console

from robust_mc.commands import common
from robust_mc.config import AlignRunConfig, build_config
from robust_mc.data import as_float, load_data
from robust_mc.pipelines.alignment import align_models, aligned_checkpoint
from robust_mc.pipelines.pair import load_pair
from robust_mc.report.alignment import alignment_notes, alignment_table
from robust_mc.run.files import check_writable_file
from robust_mc.run.progress import Reporter
from robust_mc.run.runtime import start_runtime
from robust_mc.store.checkpoint import save_checkpoint

ORDER = 20
HELP = "align b's neurons to a's (activation correlation or weight matching)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="reference endpoint")
    p.add_argument("b", help="endpoint to permute")
    common.add_config_flag(p)
    common.add_data_flags(p, AlignRunConfig)
    common.add_align_flags(p, AlignRunConfig)
    common.add_attack_flags(p, AlignRunConfig, "alignment")
    common.add_speed_flags(p, AlignRunConfig)
    common.add_model_file_flags(p)
    common.add_output_flags(p, "where to write b aligned (default: <b>_aligned.pt)")


def run(args: argparse.Namespace) -> int:
    pair = load_pair(args.a, args.b, common.load_options(args))
    cfg = build_config(AlignRunConfig, args.config, common.overrides(args),
                       base=pair.config_base())
    cfg.align.map_class()  # a rotation class with a method that reads no activations: refused
    out = args.out or (args.b[:-3] if args.b.endswith(".pt") else args.b) + "_aligned.pt"
    check_writable_file(out)
    reporter = Reporter(quiet=args.json)
    runtime = start_runtime(cfg.device, cfg.speed)
    data = load_data(cfg.data)
    pair.check_data(data)
    for line in pair.describe():
        reporter.print(line)
    model_a, model_b = pair.models()
    runtime.settle(model_a, as_float(data.train.images[:1]))
    runtime.prepare(model_b)
    reporter.print(f"[bold]align[/] {args.b} to {args.a}: {cfg.align.method}, "
                   f"{cfg.align.inputs} inputs, {min(cfg.align.samples, len(data.train))} images; "
                   f"{runtime.summary()}")
    result = align_models(model_a, model_b, data.train, cfg.align, cfg.attack, runtime)
    if (note := result.spec.left_alone(model_a)) is not None:
        reporter.print(note)
    ckpt, summary = aligned_checkpoint(pair.b, result, cfg, (args.a, args.b), args.argv)
    path = save_checkpoint(ckpt, out)
    if args.json:
        print(json.dumps({"checkpoint": str(path), **summary}, indent=2))
        return 0
    Console().print(alignment_table(result.alignment, f"{args.b} aligned to {args.a} "
                                    f"({cfg.align.method}, {cfg.align.inputs} inputs)"))
    for note in alignment_notes(result.alignment):
        reporter.print(note)
    reporter.print(f"function preserved: max |logit difference| {result.function_error:.2e}; "
                   f"wrote {path}")
    return 0
