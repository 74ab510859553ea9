"""What ``info`` shows of a checkpoint: its architecture, size, normalization, provenance and
recorded figures, as a mapping (``--json``) and as a table. The file's metadata is not trusted to
hold what robust-mc writes: values are shown as they are."""

from __future__ import annotations

from rich.table import Table
from torch import nn

from robust_mc.store.checkpoint import Checkpoint
from robust_mc.store.typed import write_record


def checkpoint_info(path: str, ckpt: Checkpoint, model: nn.Module) -> dict:
    """The checkpoint at ``path`` and the network built from it, as a plain mapping."""
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


def checkpoint_table(info: dict) -> Table:
    """:func:`checkpoint_info` as a two-column table."""
    table = Table(title=f"robust-mc checkpoint {info['checkpoint']}", show_header=False)
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
    return table
