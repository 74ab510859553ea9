"""`robust-mc verify RUN_DIR`: AutoAttack and gradient-masking checks at the endpoints, the best
t and the worst t of a finished connect (or eval) run, written into its summary.json."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from robust_mc.commands import common
from robust_mc.config import ConnectRunConfig
from robust_mc.errors import UserError
from robust_mc.pipelines.connect import reopened_config
from robust_mc.pipelines.verification import verify_finished_run
from robust_mc.report.verification import print_verification
from robust_mc.run.progress import Reporter
from robust_mc.run.runtime import start_runtime
from robust_mc.store.path_summary import PathSummary

ORDER = 45
HELP = ("verify a finished run's endpoints, best and worst t with AutoAttack and "
        "gradient-masking checks")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished connect (or eval) run")
    common.add_verify_flags(p, switch=False)
    # the checks run in float32 whatever the run used; the networks at t are rebuilt with the
    # run's own precision and layout, so only where and on how many threads may change
    common.add_settings(p.add_argument_group("speed"), ConnectRunConfig,
                        {"--device": "device:auto|cpu|cuda", "--threads": "speed.threads"})
    common.add_model_file_flags(p, foreign=False)
    p.add_argument("--json", action="store_true",
                   help="print the verification section as JSON on stdout")


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    summary = PathSummary.read(run_dir / "summary.json")
    if summary is None:
        raise UserError(f"{run_dir} holds no finished run (no readable summary.json); finish "
                        "it by rerunning its connect command, then verify it")
    overrides = {**common.overrides(args), "verify.enabled": True}
    cfg = reopened_config(summary.config, overrides)
    reporter = Reporter(quiet=args.json)
    runtime = start_runtime(cfg.device, cfg.speed)
    summary = verify_finished_run(run_dir, summary, cfg, runtime, reporter,
                                  common.load_options(args))
    assert summary.verification is not None
    if args.json:
        print(json.dumps(summary.verification.to_state(), indent=2))
    else:
        print_verification(summary.verification)
        reporter.print(f"wrote the verification into {run_dir / 'summary.json'}")
    return 0
