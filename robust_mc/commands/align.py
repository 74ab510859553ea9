"""`robust-mc align a.pt b.pt -o b_aligned.pt`: permute b's hidden units to match a's."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from rich.console import Console
from rich.table import Table

from robust_mc.commands import common
from robust_mc.config import AlignRunConfig, build_config, to_dict
from robust_mc.data import load_data
from robust_mc.pipelines.alignment import align_models
from robust_mc.pipelines.pair import load_pair
from robust_mc.run.files import check_writable_file
from robust_mc.run.progress import Reporter
from robust_mc.run.provenance import run_record
from robust_mc.run.runtime import start_runtime
from robust_mc.store.checkpoint import save_checkpoint
from robust_mc.store.meta import AlignmentRecord
from robust_mc.store.typed import read_record
from robust_mc.train.learned_maps import describe_learned

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
    model_a, model_b = (runtime.prepare(m) for m in pair.models())
    reporter.print(f"[bold]align[/] {args.b} to {args.a}: {cfg.align.method}, "
                   f"{cfg.align.inputs} inputs, {min(cfg.align.samples, len(data.train))} images")
    result = align_models(model_a, model_b, data.train, cfg.align, cfg.attack, runtime)
    summary = {**result.alignment.as_dict(), "function_error": result.function_error,
               "a": args.a, "b": args.b, "left_alone": result.spec.unsupported}
    if (note := result.spec.left_alone(model_a)) is not None:
        reporter.print(note)
    meta = replace(pair.b.meta, alignment=read_record(AlignmentRecord, {
        **summary, "config": to_dict(cfg), "record": run_record(args.argv),
        "permutation": {k: v.tolist() for k, v in result.alignment.perm.items()},
        "maps": result.maps.to_state() if result.maps else {}}))
    ckpt = pair.b.with_weights(result.model_b, meta)
    path = save_checkpoint(ckpt, out)
    if args.json:
        print(json.dumps({"checkpoint": str(path), **summary}, indent=2))
        return 0
    table = Table(title=f"{args.b} aligned to {args.a} ({cfg.align.method}, "
                        f"{cfg.align.inputs} inputs)")
    rotated = bool(result.maps)  # the map and its angle only where some space rotated
    for column in ("space", "units", *(("map", "angle") if rotated else ()), "corr before",
                   "corr after", "re-matched", "no signal"):
        table.add_column(column, justify="left" if column in ("space", "map") else "right")
    for s in result.alignment.spaces:
        table.add_row(s.name.removeprefix("net."), str(s.units),
                      *((s.map, "-" if s.angle is None else f"{s.angle:.0f}°") if rotated
                        else ()),
                      _corr(s.corr_before), _corr(s.corr_after), f"{100 * s.moved:.0f}%",
                      str(s.no_signal))
    table.add_row("[bold]mean", "", *(("", "") if rotated else ()),
                  f"{summary['mean_corr_before']:.3f}", f"{summary['mean_corr_after']:.3f}",
                  "", "")
    Console().print(table)
    kept = result.alignment.plan.refused
    if result.alignment.map_class != "permutations" and kept:
        reasons: dict[str, list[str]] = {}
        for space, why in kept.items():
            reasons.setdefault(why, []).append(space.removeprefix("net."))
        for why, spaces in reasons.items():
            reporter.print(f"permutations only for {len(spaces)} spaces ({spaces[0]}"
                           f"{', ...' if len(spaces) > 1 else ''}): {why}")
    if (learned := result.alignment.learned) is not None:
        reporter.print(f"{describe_learned(learned)}; the correlations are the solved maps'")
    reporter.print(f"function preserved: max |logit difference| {result.function_error:.2e}; "
                   f"wrote {path}")
    return 0


def _corr(value: float) -> str:
    """A correlation, or "-" for a space no activation shows (heads, matched by their units)."""
    return "-" if value != value else f"{value:.3f}"
