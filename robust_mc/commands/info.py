"""`robust-mc info`: what a checkpoint holds."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from robust_mc.commands import common
from robust_mc.store.checkpoint_files import load_checkpoint
from robust_mc.store.model_building import build_network
from robust_mc.store.typed import write_record

ORDER = 80
HELP = "print a checkpoint's architecture, size, normalization and recorded metrics"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a robust-mc checkpoint, or a state_dict with --arch "
                                      "(10 classes and 3 channels unless --model-kwargs says)")
    p.add_argument("--json", action="store_true", help="print JSON on stdout")
    common.add_model_file_flags(p)


def describe(path: str, args: argparse.Namespace) -> dict:
    ckpt = load_checkpoint(path, common.load_options(args), allow_ensemble=True)
    if "num_classes" not in ckpt.arch_kwargs:  # a plain state_dict: no dataset to say
        ckpt.arch_kwargs.update({"num_classes": 10, "in_channels": 3, **ckpt.arch_kwargs})
    model = build_network(ckpt)
    meta = ckpt.meta
    info = {
        "checkpoint": path,
        "arch": ckpt.arch,
        "arch_kwargs": ckpt.arch_kwargs,
        "parameters": sum(p.numel() for p in model.parameters()),
        "normalization": {"mean": list(ckpt.normalization.mean),
                          "std": list(ckpt.normalization.std)},
        "dataset": meta.dataset,
        "kind": meta.kind,
        "objective": write_record(meta.objective) if meta.objective else None,
        "recipe": write_record(recipe) if (recipe := meta.training_recipe()) else None,
        "metrics": write_record(meta.metrics) if meta.metrics else {},
    }
    if ckpt.members is not None:
        info.update(members=len(ckpt.members), combine=ckpt.combine,
                    members_t=meta.members_t)
    return info


def shown(value: object, spec: str) -> str:
    """A recorded figure as text: formatted when it is a number, else as it was written (the
    metadata of a file is not trusted to hold numbers)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    return repr(value)[:40]


def run(args: argparse.Namespace) -> int:
    info = describe(args.checkpoint, args)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    table = Table(title=f"robust-mc checkpoint {args.checkpoint}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("architecture", f"{info['arch']} {info['arch_kwargs']}")
    table.add_row("parameters", f"{info['parameters']:,}")
    norm = info["normalization"]
    table.add_row("normalization", "mean " + ", ".join(f"{v:.4f}" for v in norm["mean"])
                  + "; std " + ", ".join(f"{v:.4f}" for v in norm["std"]))
    table.add_row("dataset", str(info["dataset"]))
    table.add_row("kind", str(info["kind"]))
    if isinstance(info["objective"], dict):
        table.add_row("objective", ", ".join(f"{k} {v}" for k, v in info["objective"].items()))
    if isinstance(info["recipe"], dict):
        table.add_row("recipe", ", ".join(f"{k} {v}" for k, v in info["recipe"].items()))
    if "members" in info:
        members_t = info.get("members_t")
        table.add_row("members", f"{info['members']} ({info['combine']} averaged)"
                      + (f" at t = {', '.join(shown(t, '.2f') for t in members_t)}"
                         if isinstance(members_t, list) and members_t else ""))
    metrics = info["metrics"] if isinstance(info["metrics"], dict) else {}
    for split, values in metrics.items():
        if isinstance(values, dict):
            table.add_row(f"{split} clean / robust acc",
                          f"{shown(values.get('clean_acc'), '.2f')}% / "
                          f"{shown(values.get('robust_acc'), '.2f')}%")
        else:
            table.add_row(str(split), str(values)[:200])
    Console().print(table)
    return 0
