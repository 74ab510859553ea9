"""Checkpoints: the native ``robust-mc/1`` format, and the foreign formats we can read.

Native format, a ``torch.save``d dict of plain values and tensors::

    {"format": "robust-mc/1",
     "arch": "resnet20",                       # zoo name, file.py:Class or module:Class
     "arch_kwargs": {"num_classes": 10, "in_channels": 3, "width": 1.0, "image_size": 32},
     "model_kwargs": {...},                    # optional: the architecture's own arguments
     "state_dict": {name: tensor},  # the architecture's own names, BN statistics included
     "normalization": {"mean": [...], "std": [...]},   # applied to [0, 1] inputs
     "meta": {...}}                            # plain values: dataset, metrics, config, ...

Reading a file (untrusted: checked field by field, weights only unless the user allows more;
foreign state dicts given ``--arch``): :mod:`robust_mc.store.checkpoint_files`. Building its
network: :mod:`robust_mc.store.model_building`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from robust_mc.data import Normalization
from robust_mc.models import Classifier
from robust_mc.models.trust import CodeTrust, canonical_spec
from robust_mc.run.files import atomic_torch_save
from robust_mc.store.meta import CheckpointMeta
from robust_mc.store.typed import write_record

FORMAT = "robust-mc/1"
ENSEMBLE_FORMAT = "robust-mc-ensemble/1"  # the same, with "members" (state dicts) and "combine"
ARCH_STANDARD_KEYS = ("num_classes", "in_channels", "width", "image_size")
SHAPE_KEYS = ("num_classes", "in_channels", "image_size")  # what robust-mc checks against data


@dataclass
class Checkpoint:
    arch: str
    arch_kwargs: dict
    state_dict: dict[str, torch.Tensor]
    normalization: Normalization
    meta: CheckpointMeta = field(default_factory=CheckpointMeta)
    path: str | None = None
    members: list[dict[str, torch.Tensor]] | None = None  # an ensemble: one state dict each
    combine: str = "logits"
    # the architecture's own arguments beside robust-mc's standard ones in arch_kwargs (a user
    # class's own ``width`` lives here, never confused with robust-mc's multiplier)
    model_kwargs: dict = field(default_factory=dict)
    # the import specs its arch may be (a registered name needs none); never written to the file
    trust: CodeTrust = field(default_factory=CodeTrust, compare=False)

    @property
    def num_classes(self) -> int:
        return int(self.arch_kwargs["num_classes"])

    @property
    def dataset(self) -> str | None:
        return self.meta.dataset

    def describe(self) -> str:
        """One line: what was loaded, from where, with which normalization and how many
        weights (shown before long work starts)."""
        foreign = self.meta.source_format == "foreign"
        weights = sum(v.numel() for k, v in self.state_dict.items()
                      if v.is_floating_point() and "running_" not in k)
        norm = self.meta.normalization_from or "recorded in the file"
        return (f"{self.path}: {self.arch} ({'a plain state_dict' if foreign else 'robust-mc'}"
                f"), normalization {norm}, {weights:,} weights")

    def to_dict(self) -> dict[str, Any]:
        """Tensors and plain values only, so that ``weights_only`` loading reads it back."""
        out = {"format": FORMAT, "arch": self.arch, "arch_kwargs": plain(self.arch_kwargs),
               "state_dict": self.state_dict, "normalization": write_record(self.normalization),
               "meta": plain(write_record(self.meta))}
        if self.model_kwargs:
            out["model_kwargs"] = plain(self.model_kwargs)
        if self.members is not None:
            out.update(format=ENSEMBLE_FORMAT, members=self.members, combine=self.combine)
            del out["state_dict"]
        return out

    def with_weights(self, model: Classifier, meta: CheckpointMeta | None = None
                     ) -> Checkpoint:
        """This checkpoint's architecture, arguments and normalization with ``model``'s weights
        (the architecture's own names) and ``meta``: how every network robust-mc derives from an
        endpoint (aligned, on the path, in an ensemble) is written."""
        return replace(self, state_dict=weights_of(model), meta=meta or CheckpointMeta(),
                       path=None,
                       members=None)


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


@dataclass(frozen=True)
class LoadOptions:
    """What the user said about the model files they give (``--arch``, ``--trust-code``,
    ``--trust-checkpoint``), and the shape of a foreign file that records none.

    ``arch`` is the architecture of a foreign state dict and, for a file that records an import
    spec, the user's consent to run that code; ``named`` are more specs the user named (in a
    config they passed); ``trust_code`` allows any spec; ``unpickle`` allows full unpickling.
    """

    arch: str | None = None
    trust_code: bool = False
    unpickle: bool = False
    named: tuple[str, ...] = ()
    model_dir: str | None = None  # where robustbench:<dataset>/<threat>/<Name> endpoints live
    arch_kwargs: dict | None = None  # a foreign file's; native files record their own
    normalization: Normalization | None = None

    @property
    def code(self) -> CodeTrust:
        return CodeTrust.from_user(self.arch, self.trust_code, self.named)


def weights_of(model: Classifier) -> dict[str, torch.Tensor]:
    """``model.net``'s state on the CPU, in the architecture's own names, contiguous."""
    return {k: v.detach().to("cpu", copy=True).contiguous(memory_format=torch.contiguous_format)
            for k, v in model.net.state_dict().items()}


def checkpoint_from_model(model: Classifier, arch: str, arch_kwargs: dict,
                          meta: CheckpointMeta | None = None,
                          model_kwargs: dict | None = None
                          ) -> Checkpoint:
    # this process built ``model`` from ``arch``, so the code it names is already running
    return Checkpoint(arch, dict(arch_kwargs), weights_of(model),
                      Normalization.of(**model.normalize.as_dict()),
                      meta or CheckpointMeta(), model_kwargs=dict(model_kwargs or {}),
                      trust=CodeTrust((canonical_spec(arch),)))


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> Path:
    """Write atomically (temp file + rename)."""
    return atomic_torch_save(ckpt.to_dict(), path)
