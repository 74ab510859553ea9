"""Checkpoints: the native ``robust-mc/1`` format, and the foreign formats we can read.

Native format, a ``torch.save``d dict of plain values and tensors::

    {"format": "robust-mc/1",
     "arch": "resnet20",                       # zoo name, file.py:Class or module:Class
     "arch_kwargs": {"num_classes": 10, "in_channels": 3, "width": 1.0, "image_size": 32},
     "state_dict": {name: tensor},  # the architecture's own names, BN statistics included
     "normalization": {"mean": [...], "std": [...]},   # applied to [0, 1] inputs
     "meta": {...}}                            # plain values: dataset, metrics, config, ...

Also read, given ``--arch``: a bare state_dict, ``{"model_state": ...}`` (dnn-mode-connectivity,
NeuronAlignment), ``{"state_dict": ...}``, each possibly with ``module.`` prefixes (DataParallel).
Everything loads with ``weights_only=True``; full unpickling needs ``trust=True``.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import warnings
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robust_mc.errors import UserError
from robust_mc.io import atomic_torch_save
from robust_mc.models import Classifier, create_model
from robust_mc.models.ensemble import Ensemble

FORMAT = "robust-mc/1"
ENSEMBLE_FORMAT = "robust-mc-ensemble/1"  # the same, with "members" (state dicts) and "combine"
ARCH_STANDARD_KEYS = ("num_classes", "in_channels", "width", "image_size")


@dataclass
class Checkpoint:
    arch: str
    arch_kwargs: dict
    state_dict: dict[str, torch.Tensor]
    normalization: dict[str, list[float]]
    meta: dict = field(default_factory=dict)
    path: str | None = None
    members: list[dict[str, torch.Tensor]] | None = None  # an ensemble: one state dict each
    combine: str = "logits"

    @property
    def num_classes(self) -> int:
        return int(self.arch_kwargs["num_classes"])

    @property
    def dataset(self) -> str | None:
        return self.meta.get("dataset")

    def to_dict(self) -> dict[str, Any]:
        """Tensors and plain values only, so that ``weights_only`` loading reads it back."""
        out = {"format": FORMAT, "arch": self.arch, "arch_kwargs": plain(self.arch_kwargs),
               "state_dict": self.state_dict, "normalization": plain(self.normalization),
               "meta": plain(self.meta)}
        if self.members is not None:
            out.update(format=ENSEMBLE_FORMAT, members=self.members, combine=self.combine)
            del out["state_dict"]
        return out


def state_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """A SHA-256 of names and values: tells whether two files hold the same network."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def plain(value: Any) -> Any:
    """Strings, numbers, bools, None, lists and dicts (a JSON round trip; tensors become lists)."""
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist")
                                 else str(v)))


def build_model(ckpt: Checkpoint) -> Classifier:
    """Instantiate the architecture and load the weights strictly, with one-line errors."""
    kwargs = dict(ckpt.arch_kwargs)
    standard = {k: kwargs.pop(k) for k in ARCH_STANDARD_KEYS if k in kwargs}
    model = create_model(ckpt.arch, mean=ckpt.normalization["mean"],
                         std=ckpt.normalization["std"], kwargs=kwargs, **standard)
    load_weights(model, ckpt.state_dict, source=ckpt.path or "checkpoint")
    return model


def build_network(ckpt: Checkpoint) -> nn.Module:
    """The model a checkpoint holds: one network, or an :class:`Ensemble` of its members."""
    if ckpt.members is None:
        return build_model(ckpt)
    members = [build_model(replace(ckpt, state_dict=state, members=None))
               for state in ckpt.members]
    return Ensemble(members, "probs" if ckpt.combine == "probs" else "logits")


def load_weights(model: Classifier, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Strictly load architecture-named weights into ``model.net``, naming the first bad key."""
    expected = model.net.state_dict()
    missing = [k for k in expected if k not in state_dict]
    if missing:
        raise UserError(f"{source}: missing key {missing[0]!r} ({len(missing)} missing); "
                        "is --arch/--width the architecture it was trained with?")
    unexpected = [k for k in state_dict if k not in expected]
    if unexpected:
        raise UserError(f"{source}: unexpected key {unexpected[0]!r} ({len(unexpected)} "
                        "unexpected); is --arch the architecture it was trained with?")
    for key, ref in expected.items():
        value = state_dict[key]
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{source}: {key!r} is not a tensor")
        if value.shape != ref.shape:
            raise UserError(f"{source}: shape mismatch at {key!r}: file {tuple(value.shape)}, "
                            f"model {tuple(ref.shape)}; check --arch and --width")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise UserError(f"{source}: non-finite values in {key!r}; the checkpoint is corrupt "
                            "or its training diverged")
    model.net.load_state_dict(state_dict, strict=True)


def checkpoint_from_model(model: Classifier, arch: str, arch_kwargs: dict,
                          meta: dict | None = None) -> Checkpoint:
    state = {k: v.detach().to("cpu", copy=True).contiguous(memory_format=torch.contiguous_format)
             for k, v in model.net.state_dict().items()}
    return Checkpoint(arch, dict(arch_kwargs), state, model.normalize.as_dict(), dict(meta or {}))


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> Path:
    """Write atomically (temp file + rename)."""
    return atomic_torch_save(ckpt.to_dict(), path)


def read_torch_file(path: Path, trust: bool = False) -> Any:
    """``torch.load`` with weights only (unless ``trust``), every failure a one-line UserError."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head.startswith(b"PK") and not zipfile.is_zipfile(path):
        raise UserError(f"{path} is truncated or corrupt (an incomplete zip archive); write it "
                        "again or use an intact copy")
    if not head.startswith((b"PK", b"\x80")):
        raise UserError(f"{path} is not a PyTorch checkpoint (torch.save writes a zip archive "
                        "or a pickle); give a .pt file saved by torch")
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols are not for users
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines()]
        reason = next((ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln), lines[0])
        raise UserError(f"{path} is not a readable checkpoint under safe loading ({reason[:160]}); "
                        "if it is a checkpoint from a source you trust, --trust-checkpoint allows "
                        "full unpickling, which can run code") from None
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise UserError(f"{path} is truncated or corrupt ({type(exc).__name__}); write it again "
                        "or use an intact copy") from None
    except Exception as exc:  # anything else a malformed file makes the unpickler raise
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{path} is not a readable checkpoint ({type(exc).__name__}: "
                        f"{first[:160]})") from None


def load_checkpoint(path: str | Path, *, arch: str | None = None, arch_kwargs: dict | None = None,
                    normalization: dict | None = None, trust: bool = False,
                    allow_ensemble: bool = False) -> Checkpoint:
    """Read a native or foreign checkpoint. Foreign ones need ``arch`` (and get ``arch_kwargs``
    and ``normalization`` from the caller, usually the dataset)."""
    path = Path(path)
    return checkpoint_from_object(read_checkpoint_file(path, trust), path, arch=arch,
                                  arch_kwargs=arch_kwargs, normalization=normalization,
                                  allow_ensemble=allow_ensemble)


def read_checkpoint_file(path: Path, trust: bool = False) -> Any:
    """What a checkpoint file holds (weights-only unless ``trust``), with one-line errors for a
    missing, empty or unreadable file."""
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found")
    if path.stat().st_size == 0:
        raise UserError(f"checkpoint {path} is empty")
    return read_torch_file(path, trust)


def checkpoint_from_object(obj: Any, path: Path, *, arch: str | None = None,
                           arch_kwargs: dict | None = None, normalization: dict | None = None,
                           allow_ensemble: bool = False) -> Checkpoint:
    """A checkpoint from what ``read_checkpoint_file`` returned (see ``load_checkpoint``)."""
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return _native(obj, path)
    if isinstance(obj, dict) and obj.get("format") == ENSEMBLE_FORMAT:
        if not allow_ensemble:
            raise UserError(f"{path} is an ensemble of {len(obj.get('members') or [])} "
                            "networks; give a single network here (eval and info take "
                            "ensembles)")
        return _ensemble(obj, path)
    state = _foreign_state_dict(obj, path)
    if arch is None:
        raise UserError(f"{path} is a plain state_dict without an architecture; pass --arch NAME")
    return Checkpoint(arch, dict(arch_kwargs or {}), state,
                      dict(normalization or {"mean": [0.0], "std": [1.0]}),
                      {"source_format": "foreign"}, str(path))


def _native(obj: dict, path: Path) -> Checkpoint:
    for key, kind in (("arch", str), ("arch_kwargs", dict), ("state_dict", dict),
                      ("normalization", dict), ("meta", dict)):
        if not isinstance(obj.get(key), kind):
            raise UserError(f"{path}: native checkpoint lacks a valid {key!r} entry")
    norm = obj["normalization"]
    if not all(isinstance(norm.get(k), list) for k in ("mean", "std")):
        raise UserError(f"{path}: normalization must hold 'mean' and 'std' lists")
    if any(not math.isfinite(s) or s <= 0 for s in norm["std"]):
        raise UserError(f"{path}: normalization std must be positive and finite")
    return Checkpoint(obj["arch"], obj["arch_kwargs"], obj["state_dict"], norm, obj["meta"],
                      str(path))


def _ensemble(obj: dict, path: Path) -> Checkpoint:
    members = obj.get("members")
    if not isinstance(members, list) or not members or not all(
            isinstance(m, dict) for m in members):
        raise UserError(f"{path}: ensemble checkpoint lacks a valid 'members' list")
    if obj.get("combine") not in ("logits", "probs"):
        raise UserError(f"{path}: ensemble 'combine' must be 'logits' or 'probs'")
    first = _native({**obj, "state_dict": members[0]}, path)
    return replace(first, members=members, combine=obj["combine"])


def _foreign_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("model_state", "state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise UserError(f"{path} holds no state_dict (expected a robust-mc checkpoint, a "
                        "state_dict, or a dict with 'model_state'/'state_dict')")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj
