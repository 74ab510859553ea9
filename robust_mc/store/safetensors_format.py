"""Checkpoints as safetensors files: the weights as tensors, and the rest of a native checkpoint
(architecture, its arguments, normalization, meta) as JSON in the file's metadata under
``robust-mc``. Safe by construction: reading one never runs code (and the architecture it
records is still subject to the same trust rules as a ``.pt`` file's)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from robust_mc.errors import UserError
from robust_mc.limits import check_bounded

METADATA_KEY = "robust-mc"
SUFFIX = ".safetensors"


def is_safetensors(path: Path) -> bool:
    """A safetensors file: an 8-byte little-endian header length, then a JSON header."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1


def read_safetensors(path: Path) -> Any:
    """What the file holds, as ``torch.load`` of a native checkpoint would give it (a dict with
    ``format``, ``arch``, ...) when robust-mc wrote it, else the plain state dict."""
    try:
        from safetensors import safe_open
        from safetensors.torch import load_file
    except ImportError:
        raise UserError(f"{path} is a safetensors file; install the safetensors package to "
                        "read it (pip install safetensors)") from None
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:  # the library raises its own error types for a damaged file
        first = (str(exc).splitlines() or [""])[0]
        raise UserError(f"{path} is not a readable safetensors file ({type(exc).__name__}: "
                        f"{first[:160]})") from None
    if METADATA_KEY not in metadata:
        return tensors
    try:
        native = json.loads(metadata[METADATA_KEY])
    except (ValueError, RecursionError):
        raise UserError(f"{path}: its '{METADATA_KEY}' metadata is not JSON") from None
    if not isinstance(native, dict):
        raise UserError(f"{path}: its '{METADATA_KEY}' metadata is not a mapping")
    return {**check_bounded(native, path), "state_dict": tensors}


def safetensors_bytes(state: dict[str, torch.Tensor], record: dict[str, Any]) -> bytes:
    """``state`` as tensors and ``record`` (plain values) as the ``robust-mc`` metadata."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    return save(tensors, metadata={METADATA_KEY: json.dumps(record)})
