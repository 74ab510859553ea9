"""Reading checkpoint files, which are untrusted: safe loading (weights only unless the user
allows unpickling), the native format checked field by field (bounded architecture arguments,
normalization, state dicts, meta), ensembles, foreign state dicts and RobustBench zoo entries.
A recorded import spec is honoured only as the user's :class:`~robust_mc.models.trust.CodeTrust`
allows: a file never chooses code to run."""

from __future__ import annotations

import math
import pickle
import warnings
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from robust_mc.data import NO_NORMALIZATION, Normalization
from robust_mc.errors import UserError
from robust_mc.limits import check_bounded, check_regular_file
from robust_mc.models._registry import is_registered
from robust_mc.models.huggingface import DIR_PREFIX, is_model_dir, read_config
from robust_mc.models.trust import canonical_spec
from robust_mc.store.checkpoint import (
    ARCH_STANDARD_KEYS,
    ENSEMBLE_FORMAT,
    FORMAT,
    SHAPE_KEYS,
    Checkpoint,
    LoadOptions,
)
from robust_mc.store.meta import CheckpointMeta
from robust_mc.store.safetensors_format import is_safetensors, read_safetensors
from robust_mc.store.typed import read_record


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
    if is_model_dir(path):
        from robust_mc.store.huggingface_dir import load_model_dir

        return load_model_dir(path, options)
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
    if options.arch.startswith(DIR_PREFIX):  # the library's names, its config in that folder
        from robust_mc.store.huggingface_dir import checkpoint_of

        folder = Path(options.arch[len(DIR_PREFIX):])
        return checkpoint_of(folder, read_config(folder), state, options, str(path))
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
