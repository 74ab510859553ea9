"""`robust-mc export ckpt.pt --format safetensors|state-dict|robustbench|huggingface -o FILE`:
a model for people without robust-mc."""

from __future__ import annotations

import argparse
from pathlib import Path

from robust_mc.commands import common
from robust_mc.errors import UserError
from robust_mc.run.files import check_writable_file
from robust_mc.store.checkpoint import plain
from robust_mc.store.checkpoint_files import load_checkpoint
from robust_mc.store.export import DIRECTORY_FORMATS, FORMATS, export_checkpoint
from robust_mc.store.typed import write_record

ORDER = 85
HELP = ("write a model checkpoint as safetensors (with its metadata), a plain state dict, "
        "RobustBench's format or a Hugging Face model directory")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a model checkpoint (train, align, connect's best.pt)")
    p.add_argument("--format", choices=list(FORMATS), required=True,
                   help="safetensors: weights and metadata in one safe file; state-dict: "
                        "torch.save of the weights, the metadata beside it in FILE.json; "
                        "robustbench: {'state_dict': ...} of a RobustBench architecture; "
                        "huggingface: a save_pretrained directory of a transformers model")
    common.add_model_file_flags(p)
    p.add_argument("--out", "-o", metavar="FILE", required=True,
                   help="the file to write (a new directory for --format huggingface)")


def run(args: argparse.Namespace) -> int:
    ckpt = load_checkpoint(args.checkpoint, common.load_options(args))
    if ckpt.members is not None:
        raise UserError(f"{args.checkpoint} is an ensemble; export takes a single network")
    missing = [k for k in ("num_classes", "in_channels") if k not in ckpt.arch_kwargs]
    if missing:
        raise UserError(f"{args.checkpoint} records no {missing[0]}; give its shape with "
                        "--model-kwargs '{num_classes: 10, in_channels: 3}'")
    out = Path(args.out)
    if args.format not in DIRECTORY_FORMATS:  # a directory's writer checks its folder first
        check_writable_file(out)
    written = export_checkpoint(ckpt, args.format, out)
    print(f"wrote {', '.join(str(p) for p in written)} ({ckpt.arch}, "
          f"{plain(write_record(ckpt.normalization))})")
    return 0
