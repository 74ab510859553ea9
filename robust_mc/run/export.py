"""A checkpoint in formats other tools read: safetensors (weights, and the architecture, its
arguments, normalization and meta as JSON metadata) and a plain state dict (``torch.save`` of
the architecture's own weights, the rest in a JSON file beside it)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from robust_mc.run.checkpoint import FORMAT, Checkpoint, plain
from robust_mc.run.files import atomic_torch_save, atomic_write_bytes, atomic_write_json
from robust_mc.run.safetensors_format import safetensors_bytes


def _record(ckpt: Checkpoint) -> dict:
    return {"format": FORMAT, "arch": ckpt.arch, "arch_kwargs": plain(ckpt.arch_kwargs),
            "model_kwargs": plain(ckpt.model_kwargs), "normalization": plain(ckpt.normalization),
            "meta": plain(ckpt.meta)}


def _safetensors(ckpt: Checkpoint, out: Path) -> list[Path]:
    return [atomic_write_bytes(out, safetensors_bytes(ckpt.state_dict, _record(ckpt)))]


def _state_dict(ckpt: Checkpoint, out: Path) -> list[Path]:
    sidecar = out.with_name(out.name + ".json")
    return [atomic_torch_save(dict(ckpt.state_dict), out), atomic_write_json(sidecar, {
        **_record(ckpt), "note": "the weights of the architecture 'arch' (built with "
                                 "arch_kwargs and model_kwargs), which expects inputs "
                                 "normalized as 'normalization' says from [0, 1] images"})]


FORMATS: dict[str, Callable[[Checkpoint, Path], list[Path]]] = {
    "safetensors": _safetensors, "state-dict": _state_dict}


def export_checkpoint(ckpt: Checkpoint, fmt: str, out: Path) -> list[Path]:
    """Write ``ckpt`` as ``fmt``; the files written (each atomically)."""
    return FORMATS[fmt](ckpt, out)
