"""`robust-mc demo`: the whole story on the embedded 8x8 digits, on a CPU, in minutes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from robust_mc.checkpoint import save_checkpoint
from robust_mc.commands import common
from robust_mc.config import TrainRunConfig, build_config
from robust_mc.data import load_data
from robust_mc.endpoint import train_endpoint
from robust_mc.io import ensure_out_dir
from robust_mc.progress import Reporter
from robust_mc.runtime import Runtime

HELP = "train two PGD endpoints on the embedded digits data and report their robustness"
SEEDS = (0, 1)


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_config_flag(p)
    common.add_speed_flags(p)
    common.add_output_flags(p, "directory for the demo's files (default runs/demo)")


def run(args: argparse.Namespace) -> int:
    out = ensure_out_dir(args.out or "runs/demo")
    reporter = Reporter(quiet=args.json)
    base = common.overrides(args)
    cfg0 = build_config(TrainRunConfig, args.config or "digits-demo", base)
    runtime = Runtime.create(cfg0.device, cfg0.speed)
    data = load_data(cfg0.data)
    rows = []
    for seed in SEEDS:
        cfg = build_config(TrainRunConfig, args.config or "digits-demo",
                           {**base, "optim.seed": seed})
        ckpt = train_endpoint(cfg, runtime, reporter, argv=args.argv, data=data)
        path = save_checkpoint(ckpt, Path(out) / f"endpoint-seed{seed}.pt")
        test = ckpt.meta["metrics"]["test"]
        rows.append({"checkpoint": str(path), "seed": seed, "clean_acc": test["clean_acc"],
                     "robust_acc": test["robust_acc"],
                     "train_s": ckpt.meta["timings"]["train_s"]})
    if args.json:
        print(json.dumps({"endpoints": rows}, indent=2))
        return 0
    table = Table(title=f"PGD endpoints on digits (eps {cfg0.attack.eps:.3g}, "
                        f"{cfg0.eval.attack})")
    for column in ("checkpoint", "seed", "clean acc", "robust acc", "train s"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["checkpoint"], str(r["seed"]), f"{r['clean_acc']:.2f}%",
                      f"{r['robust_acc']:.2f}%", f"{r['train_s']:.1f}")
    Console().print(table)
    return 0
