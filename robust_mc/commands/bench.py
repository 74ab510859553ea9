"""`robust-mc bench --config configs/bench-digits.yaml`: robust barriers over a grid."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from robust_mc.commands import common
from robust_mc.config import BenchRunConfig, given_settings, to_dict
from robust_mc.errors import UserError
from robust_mc.pipelines.bench import Shard, load_bench_config, run_bench
from robust_mc.pipelines.bench_commands import missing_work
from robust_mc.report.bench import rich_table, table_state, write_bench_files
from robust_mc.run.interrupt import StopSignals
from robust_mc.run.progress import Reporter
from robust_mc.run.provenance import run_record
from robust_mc.run.runtime import start_runtime

ORDER = 60
HELP = ("benchmark robust barriers over endpoint pairs, methods (line/curve, +align, +pam) and "
        "curve seeds; cached per cell, resumable")


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_config_flag(p)
    common.add_data_flags(p, BenchRunConfig)
    common.add_settings(p.add_argument_group("grid"), BenchRunConfig, {
        "--methods": "bench.methods:M,M", "--seeds": "bench.seeds:S,S",
        "--verify": "bench.verify"})
    common.add_settings(p.add_argument_group("model files"), BenchRunConfig, {
        "--arch": "bench.arch:NAME|file.py:Class", "--trust-code": "bench.trust_code"})
    g = p.add_argument_group("resuming and faults (every cell and trained endpoint)")
    g.add_argument("--save-every", metavar="N",
                   help="epochs between saved states (default 1; also at the end and on Ctrl-C)")
    g.add_argument("--skip-nonfinite", metavar="N",
                   help="skip up to N batches whose loss is NaN or inf instead of stopping")
    g.add_argument("--deterministic", action="store_const", const=True,
                   help="torch's deterministic algorithms and every seed set")
    common.add_settings(p, BenchRunConfig, {"--device": "device:auto|cpu|cuda"})
    p.add_argument("--fresh", action="store_true",
                   help="recompute every cell and endpoint instead of reading them back")
    g = p.add_argument_group("many workers (one --out on a shared file system)")
    g.add_argument("--shard", metavar="I/N",
                   help="take every N-th cell from the I-th (0-based) and do not wait for the "
                        "others; without it, plain bench workers on one --out share all cells")
    g.add_argument("--print-commands", action="store_true",
                   help="print one robust-mc train/connect line per missing endpoint and cell "
                        "(for job arrays) instead of running them")
    common.add_output_flags(p, "bench directory (default runs/bench-<config name>)")


def run(args: argparse.Namespace) -> int:
    if args.config is None:
        raise UserError("bench needs --config FILE (e.g. --config bench-digits)")
    overrides = {**common.overrides(args), **section_flags(args)}
    cfg = load_bench_config(args.config, overrides)
    given = given_settings(args.config, overrides, section="connect.")
    out = Path(args.out or Path("runs") / f"bench-{Path(args.config).stem.removeprefix('bench-')}")
    if args.print_commands:
        if args.shard or args.fresh:
            raise UserError("--print-commands lists every missing endpoint and cell (it runs "
                            "nothing); drop --shard and --fresh")
        for line in missing_work(cfg, out, given):
            print(line)
        return 0
    shard = Shard.parse(args.shard) if args.shard else None
    reporter = Reporter(quiet=args.json)
    runtime = start_runtime(cfg.device, cfg.connect.speed)
    with StopSignals() as stop:
        result = run_bench(cfg, out, runtime, reporter, args.argv, args.fresh, stop, shard,
                           given)
    title = f"robust-mc bench: {Path(args.config).stem} ({cfg.data.dataset})"
    if not result.complete:
        if args.json:
            print(json.dumps({"out": str(out), "computed": result.computed,
                              "missing": [str(m) for m in result.missing]}, indent=2))
        else:
            reporter.print(f"{len(result.missing)} cells are not finished yet (other shards); "
                           "the table is written once every cell is: rerun bench then")
        return 0
    files = write_bench_files(out, result, title, to_dict(cfg), run_record(args.argv))
    if args.json:
        print(json.dumps({"out": str(out), "table": table_state(result),
                          "computed": result.computed}, indent=2))
        return 0
    Console().print(rich_table(result, title))
    reporter.print(f"wrote {out}/: {', '.join(files)}; cells in {out / 'cells'}")
    return 0


def section_flags(args: argparse.Namespace) -> dict[str, str | bool]:
    """Flags that apply to both the train and the connect section."""
    keys = {"save_every": "optim.save_every", "skip_nonfinite": "optim.skip_nonfinite",
            "deterministic": "speed.deterministic"}
    return {f"{section}.{key}": getattr(args, flag) for flag, key in keys.items()
            if getattr(args, flag) is not None for section in ("train", "connect")}
