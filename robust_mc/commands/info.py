"""`robust-mc info`: what a checkpoint holds."""

from __future__ import annotations

import argparse
import json

from rich.console import Console

from robust_mc.commands import common
from robust_mc.report.checkpoint import checkpoint_info, checkpoint_table
from robust_mc.store.checkpoint_files import load_checkpoint
from robust_mc.store.model_building import build_network

ORDER = 80
HELP = "print a checkpoint's architecture, size, normalization and recorded metrics"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a robust-mc checkpoint, or a state_dict with --arch "
                                      "(10 classes and 3 channels unless --model-kwargs says)")
    p.add_argument("--json", action="store_true", help="print JSON on stdout")
    common.add_model_file_flags(p)


def describe(path: str, args: argparse.Namespace) -> dict:
    """The checkpoint at ``path``, loaded as ``args`` allow, as ``info`` shows it."""
    ckpt = load_checkpoint(path, common.load_options(args), allow_ensemble=True)
    if "num_classes" not in ckpt.arch_kwargs:  # a plain state_dict: no dataset to say
        ckpt.arch_kwargs.update({"num_classes": 10, "in_channels": 3, **ckpt.arch_kwargs})
    return checkpoint_info(path, ckpt, build_network(ckpt))


def run(args: argparse.Namespace) -> int:
    info = describe(args.checkpoint, args)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    Console().print(checkpoint_table(info))
    return 0
