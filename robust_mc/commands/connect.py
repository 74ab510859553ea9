"""`robust-mc connect a.pt b.pt --eps 8/255`: align, train a robust curve, report barriers."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from robust_mc.commands import common
from robust_mc.config import ConnectRunConfig, build_config, given_settings
from robust_mc.core.curves import has_bends
from robust_mc.pipelines.connect import preflight, run_connect
from robust_mc.pipelines.curve_optim import follow_endpoints
from robust_mc.pipelines.pair import load_pair
from robust_mc.report.path import show_path_run
from robust_mc.run.interrupt import StopSignals
from robust_mc.run.progress import Reporter
from robust_mc.run.runtime import start_runtime

ORDER = 30
DISTRIBUTED = True  # torchrun may launch it
HELP = "align two endpoints, train a robust curve between them and report its barriers"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="first endpoint (t = 0)")
    p.add_argument("b", help="second endpoint (t = 1), aligned to a unless --no-align")
    common.add_config_flag(p)
    common.add_data_flags(p, ConnectRunConfig)
    common.add_attack_flags(p, ConnectRunConfig)
    common.add_optim_flags(p, ConnectRunConfig)
    common.add_curve_flags(p)
    common.add_align_flags(p, ConnectRunConfig)
    common.add_pam_flags(p)
    common.add_path_flags(p)
    common.add_verify_flags(p)
    common.add_speed_flags(p, ConnectRunConfig)
    common.add_fault_flags(p, ConnectRunConfig)
    common.add_model_file_flags(p)
    common.add_output_flags(p, "run directory (default runs/<timestamp>-<a>-<b>)")


def default_out(a: str, b: str) -> Path:
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{Path(a).stem}-{Path(b).stem}"


def run(args: argparse.Namespace) -> int:
    policy = common.resume_policy(args)
    pair = load_pair(args.a, args.b, common.load_options(args))
    overrides = common.overrides(args)
    cfg = build_config(ConnectRunConfig, args.config, overrides,
                       base=pair.config_base(keep_attack=("eps", "norm")))
    curve_optim = follow_endpoints(cfg.optim, given_settings(args.config, overrides),
                                   pair.a, pair.b)
    cfg = replace(cfg, optim=curve_optim.optim)
    preflight(cfg)
    common.check_switches(args, cfg)
    reporter = Reporter(quiet=args.json)
    runtime = start_runtime(cfg.device, cfg.speed)
    out = Path(args.out) if args.out else default_out(args.a, args.b)
    with StopSignals() as stop:
        summary = run_connect(pair, cfg, out, runtime, reporter, args.argv, policy, stop,
                              notes=(curve_optim.describe(),)
                              if has_bends(cfg.curve.kind) else ())
    show_path_run(out, summary, f"robust-mc connect: {Path(args.a).name} -> "
                                f"{Path(args.b).name}", args.json, reporter)
    return 0
