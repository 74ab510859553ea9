"""`robust-mc train`: produce one PGD-trained endpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from robust_mc.commands import common
from robust_mc.config import TrainRunConfig, build_config
from robust_mc.errors import UserError
from robust_mc.pipelines.endpoint_training import state_path_for, train_endpoint
from robust_mc.run.files import check_writable_file, remove
from robust_mc.run.interrupt import StopSignals
from robust_mc.run.progress import Reporter
from robust_mc.run.runtime import start_runtime
from robust_mc.store.checkpoint import save_checkpoint
from robust_mc.store.typed import write_record

ORDER = 10
DISTRIBUTED = True  # torchrun may launch it
HELP = "PGD adversarial training of one endpoint (Madry et al.)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_config_flag(p)
    common.add_data_flags(p, TrainRunConfig)
    common.add_model_flags(p)
    common.add_objective_flags(p)
    common.add_attack_flags(p, TrainRunConfig)
    common.add_optim_flags(p, TrainRunConfig)
    common.add_eval_flags(p)
    common.add_speed_flags(p, TrainRunConfig, compiles=True)
    p.add_argument("--no-augment", dest="data.augment", action="store_const", const=False,
                   help="no random crops and flips")
    common.add_fault_flags(p, TrainRunConfig)
    common.add_output_flags(p, "checkpoint to write (default: endpoint.pt)")


def run(args: argparse.Namespace) -> int:
    cfg = build_config(TrainRunConfig, args.config, common.overrides(args))
    policy = common.resume_policy(args)
    out = Path(args.out or "endpoint.pt")
    if args.out and args.out.endswith("/") or out.is_dir():
        raise UserError(f"--out {args.out} is a directory; train writes one checkpoint file, "
                        "e.g. a.pt")
    check_writable_file(out)
    reporter = Reporter(quiet=args.json)
    runtime = start_runtime(cfg.device, cfg.speed, compiles=True)
    state = state_path_for(out)
    with StopSignals() as stop:
        ckpt = train_endpoint(cfg, runtime, reporter, argv=args.argv, state_path=state,
                              policy=policy, stop=stop)
        path = save_checkpoint(ckpt, out)
        remove(state)
    reporter.print(f"wrote {path}")
    if args.json:
        print(json.dumps({"checkpoint": str(path), **write_record(ckpt.meta.metrics),
                          "timings": write_record(ckpt.meta.timings)}, indent=2))
    return 0
