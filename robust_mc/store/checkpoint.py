"""Checkpoints: the native ``robust-mc/1`` format, and the foreign formats we can read.

Native format, a ``torch.save``d dict of plain values and tensors::

    {"format": "robust-mc/1",
     "arch": "resnet20",                       # zoo name, file.py:Class or module:Class
     "arch_kwargs": {"num_classes": 10, "in_channels": 3, "width": 1.0, "image_size": 32},
     "model_kwargs": {...},                    # optional: the architecture's own arguments
     "state_dict": {name: tensor},  # the architecture's own names, BN statistics included
     "normalization": {"mean": [...], "std": [...]},   # applied to [0, 1] inputs
     "meta": {...}}                            # plain values: dataset, metrics, config, ...

Also read, given ``--arch``: a bare state_dict, ``{"model_state": ...}`` (dnn-mode-connectivity,
NeuronAlignment), ``{"state_dict": ...}``, each possibly with ``module.`` prefixes (DataParallel).

Safety: everything loads with ``weights_only=True`` (full unpickling needs
``LoadOptions(unpickle=True)``), and a recorded architecture that is an import spec rather than a
registered name is honoured only as :class:`~robust_mc.models.trust.CodeTrust` allows: a file never
chooses code to run. Every field of a native file is checked before use.
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

from robust_mc.core.repair import BIAS_READY
from robust_mc.data import NO_NORMALIZATION, Normalization
from robust_mc.errors import UserError
from robust_mc.limits import check_bounded, check_regular_file
from robust_mc.models import Classifier, create_model
from robust_mc.models._registry import is_registered
from robust_mc.models.ensemble import Ensemble
from robust_mc.models.trust import CodeTrust, canonical_spec
from robust_mc.run.files import atomic_torch_save
from robust_mc.store.meta import CheckpointMeta
from robust_mc.store.safetensors_format import is_safetensors, read_safetensors
from robust_mc.store.typed import read_record, write_record

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


def build_model(ckpt: Checkpoint) -> Classifier:
    """Instantiate the architecture and load the weights strictly, with one-line errors. The
    architecture is checked against ``ckpt.trust`` again, before anything is imported."""
    source = ckpt.path or "checkpoint"
    ckpt.trust.check(ckpt.arch, source)
    kwargs = dict(ckpt.arch_kwargs)
    standard = {k: kwargs.pop(k) for k in ARCH_STANDARD_KEYS if k in kwargs}
    kwargs.update(ckpt.model_kwargs)
    missing = [k for k in ("num_classes", "in_channels") if k not in standard]
    if missing:
        raise UserError(f"{source}: arch_kwargs lacks {missing[0]!r}; the file is incomplete")
    model = create_model(ckpt.arch, mean=ckpt.normalization.mean,
                         std=ckpt.normalization.std, kwargs=kwargs,
                         factory_ok=ckpt.trust.user_named(ckpt.arch), source=source, **standard)
    load_weights(model, ckpt.state_dict, source=source)
    return model


def build_network(ckpt: Checkpoint) -> nn.Module:
    """The model a checkpoint holds: one network, or an :class:`Ensemble` of its members."""
    if ckpt.members is None:
        return build_model(ckpt)
    members = [build_model(replace(ckpt, state_dict=state, members=None))
               for state in ckpt.members]
    return Ensemble(members, "probs" if ckpt.combine == "probs" else "logits")


def load_weights(model: Classifier, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Strictly load architecture-named weights into ``model.net``, naming the first bad key. A
    linear or convolution layer built without a bias takes one the file has: statistics repair
    gives such a layer a bias (:mod:`robust_mc.core.repair`)."""
    give_repair_biases(model.net, state_dict)
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


def give_repair_biases(net: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Give each bias-less linear or convolution layer of ``net`` a (zero) bias where
    ``state_dict`` has one for it; its shape is checked like any other weight's."""
    for name, module in net.named_modules():
        if (isinstance(module, BIAS_READY) and module.bias is None
                and f"{name}.bias" in state_dict):
            module.bias = nn.Parameter(module.weight.new_zeros(module.weight.shape[0]))


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


def read_torch_file(path: Path, trust: bool = False) -> Any:
    """``torch.load`` with weights only (unless ``trust``), every failure a one-line UserError;
    a safetensors file is read as such (safe by construction)."""
    check_regular_file(path)
    if is_safetensors(path):
        return read_safetensors(path)
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
            obj = torch.load(path, map_location="cpu", weights_only=not trust)
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
    return check_bounded(obj, path)


def load_checkpoint(path: str | Path, options: LoadOptions | None = None, *,
                    allow_ensemble: bool = False) -> Checkpoint:
    """Read a native or foreign checkpoint, checked field by field.

    Args:
        path: a ``.pt`` file: robust-mc's own format, or a foreign state dict.
        options: what the user said (``--arch``, ``--trust-code``, ...); foreign files need
            ``options.arch`` and get ``arch_kwargs`` and ``normalization`` from it.
        allow_ensemble: accept an ensemble checkpoint (for commands that evaluate one).

    Returns:
        The checkpoint, whose ``trust`` lets :func:`build_model` build it.

    Example::

        ckpt = load_checkpoint("a.pt")
        model = build_model(ckpt)  # a Classifier: [0, 1] images -> logits
    """
    options = options or LoadOptions()
    if str(path).startswith("robustbench:"):  # a zoo entry whose weights are in --model-dir
        path, options = _zoo_entry(str(path), options)
    path = Path(path)
    return checkpoint_from_object(read_checkpoint_file(path, options.unpickle), path, options,
                                  allow_ensemble=allow_ensemble)


def _zoo_entry(spec: str, options: LoadOptions) -> tuple[Path, LoadOptions]:
    from robust_mc.models.robustbench import checkpoint_file, parse_spec

    parse_spec(spec)
    if options.model_dir is None:
        raise UserError(f"{spec}: give --model-dir DIR, where RobustBench keeps its weights "
                        "as DIR/<dataset>/<threat>/<ModelName>.pt")
    if options.arch is not None and options.arch != spec:
        raise UserError(f"{spec} is its own architecture; drop --arch {options.arch}")
    return checkpoint_file(spec, options.model_dir), replace(options, arch=spec)


def read_checkpoint_file(path: Path, trust: bool = False) -> Any:
    """What a checkpoint file holds (weights-only unless ``trust``), with one-line errors for a
    missing, empty or unreadable file."""
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found")
    if path.stat().st_size == 0:
        raise UserError(f"checkpoint {path} is empty")
    return read_torch_file(path, trust)


def checkpoint_from_object(obj: Any, path: Path, options: LoadOptions | None = None, *,
                           allow_ensemble: bool = False) -> Checkpoint:
    """A checkpoint from what ``read_checkpoint_file`` returned (see ``load_checkpoint``)."""
    options = options or LoadOptions()
    kind = obj.get("format") if isinstance(obj, dict) else None
    if kind == FORMAT:
        return _native(obj, path, options)
    if kind == ENSEMBLE_FORMAT:
        if not allow_ensemble:
            members = obj.get("members")
            count = len(members) if isinstance(members, list) else "several"
            raise UserError(f"{path} is an ensemble of {count} networks; give a single network "
                            "here (eval and info take ensembles)")
        return _ensemble(obj, path, options)
    if isinstance(kind, str) and kind.startswith("robust-mc"):
        raise UserError(f"{path} is a {kind} file, not a model checkpoint; give a checkpoint "
                        "written by train, align or connect (best.pt)")
    state = _foreign_state_dict(obj, path)
    if options.arch is None:
        raise UserError(f"{path} is a plain state_dict without an architecture; pass --arch NAME")
    options.code.check(options.arch, str(path))
    meta = CheckpointMeta(source_format="foreign", normalization_from=(
        "as given" if options.normalization is not None else
        "none (the file records none; --normalization sets it)"))
    # robust-mc's standard arguments (the shape) apart from the architecture's own: a zoo
    # architecture's width is robust-mc's multiplier, a user class's is its own argument
    standard = ARCH_STANDARD_KEYS if is_registered(options.arch) else SHAPE_KEYS
    given = dict(options.arch_kwargs or {})
    shape = {k: given.pop(k) for k in standard if k in given}
    return Checkpoint(options.arch, shape, state,
                      options.normalization or NO_NORMALIZATION,
                      meta, str(path), model_kwargs=given, trust=options.code)


def malformed(source: str | Path, problem: str) -> UserError:
    """The one-line error for a robust-mc file whose fields are wrong."""
    return UserError(f"{source}: malformed file: {problem}; write it again with robust-mc or "
                     "use an intact copy")


def recorded_architecture(obj: dict, source: str | Path, options: LoadOptions
                          ) -> tuple[str, dict, Normalization]:
    """``arch``, ``arch_kwargs`` and ``normalization`` of a native file (checkpoint, ensemble or
    curve run), each checked; an ``arch`` that is an import spec only as ``options`` allow.
    A native file records its own arguments and normalization: ``options`` may not replace
    them."""
    if options.arch_kwargs or options.normalization is not None:
        raise UserError(f"{source} is a robust-mc file: it records its architecture's "
                        "arguments and normalization; drop --width, --model-kwargs and "
                        "--normalization")
    arch = obj.get("arch")
    if not isinstance(arch, str) or not arch.strip():
        raise malformed(source, "'arch' must name the architecture (a string)")
    if options.arch and canonical_spec(options.arch) != canonical_spec(arch):
        raise UserError(f"{source} records architecture {arch!r}, not --arch {options.arch}; "
                        "drop --arch, or pass the architecture it records")
    options.code.check(arch, str(source))
    kwargs = obj.get("arch_kwargs")
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise malformed(source, "'arch_kwargs' must be a mapping of argument names to values")
    for key, most in ARCH_KWARG_BOUNDS.items():
        if key not in kwargs and key != "image_size":
            raise malformed(source, f"arch_kwargs lacks {key!r} (a positive integer)")
        if key in kwargs and not (_positive_int(kwargs[key]) and kwargs[key] <= most):
            raise malformed(source, f"arch_kwargs {key!r} must be an integer from 1 to {most}, "
                                    f"not {kwargs[key]!r}")
    width = kwargs.get("width", 1.0)
    if not (_number(width) and 0 < width <= MAX_WIDTH):
        raise malformed(source, f"arch_kwargs 'width' must be a number in (0, {MAX_WIDTH}], not "
                                f"{width!r}")
    norm = obj.get("normalization")
    if not isinstance(norm, dict):
        raise malformed(source, "'normalization' must hold 'mean' and 'std' lists")
    stats = {k: norm.get(k) for k in ("mean", "std")}
    for key, values in stats.items():
        if not isinstance(values, list) or not values or not all(
                _number(v) and math.isfinite(v) for v in values):
            raise malformed(source, f"normalization {key!r} must be a non-empty list of finite "
                                    "numbers")
    if any(s <= 0 for s in norm["std"]):
        raise malformed(source, "normalization 'std' must be positive")
    if len(norm["mean"]) != len(norm["std"]) or len(norm["mean"]) not in (
            1, kwargs["in_channels"]):
        raise malformed(source, "normalization 'mean' and 'std' need one value per input channel")
    return arch, kwargs, Normalization.of(norm["mean"], norm["std"])


def checked_state_dict(value: Any, source: str | Path, key: str) -> dict[str, torch.Tensor]:
    """A non-empty mapping of parameter names to tensors, or a one-line error naming ``key``
    (their values are checked when a network is built from them)."""
    if not isinstance(value, dict) or not value or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()):
        raise malformed(source, f"{key!r} must map parameter names to tensors")
    return value


def checked_meta(value: Any, source: str | Path) -> CheckpointMeta:
    """A native file's ``meta``, every field robust-mc reads checked (fields added since a
    file was written take their defaults; fields it does not know are kept)."""
    try:
        return read_record(CheckpointMeta, value, "meta")
    except ValueError as exc:
        raise malformed(source, str(exc)) from None


# the largest standard architecture arguments a file may record: beyond them a network does not
# fit a machine (a zoo network at width 1000 asks for a 73 GB convolution)
ARCH_KWARG_BOUNDS = {"num_classes": 100_000, "in_channels": 64, "image_size": 4096}
MAX_WIDTH = 64


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _native(obj: dict, path: Path, options: LoadOptions) -> Checkpoint:
    arch, kwargs, norm = recorded_architecture(obj, path, options)
    state = checked_state_dict(obj.get("state_dict"), path, "state_dict")
    return Checkpoint(arch, kwargs, state, norm, checked_meta(obj.get("meta"), path), str(path),
                      model_kwargs=checked_model_kwargs(obj, path), trust=options.code)


def checked_model_kwargs(obj: dict, source: str | Path) -> dict:
    """The architecture's own arguments a native file records (none in older files)."""
    value = obj.get("model_kwargs", {})
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise malformed(source, "'model_kwargs' must be a mapping of argument names to values")
    return value


def _ensemble(obj: dict, path: Path, options: LoadOptions) -> Checkpoint:
    members = obj.get("members")
    if not isinstance(members, list) or not members:
        raise malformed(path, "an ensemble's 'members' must be a non-empty list of state dicts")
    for i, member in enumerate(members):
        checked_state_dict(member, path, f"members[{i}]")
    if obj.get("combine") not in ("logits", "probs"):
        raise malformed(path, "ensemble 'combine' must be 'logits' or 'probs'")
    first = _native({**obj, "state_dict": members[0]}, path, options)
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
    for prefix in ("module.", "model."):  # DataParallel/DDP, and wrappers RobustBench strips
        if all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj
