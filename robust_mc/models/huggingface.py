"""Hugging Face ``transformers`` image classifiers as robust-mc architectures (the
``transformers`` extra).

A model directory written by ``save_pretrained`` (``config.json``, safetensors weights, and
perhaps ``preprocessor_config.json``) is read offline: the hub is never contacted. Its config
names the class; only the library's own image classifiers (``<Name>ForImageClassification``) are
built, so a file never chooses code to run, and the config is passed to that class as data
(``auto_map`` and remote code are never followed; the attention implementation is robust-mc's
choice, not the file's).

Spellings: ``hf:DIR`` names the directory (``--arch hf:DIR`` for a plain state dict with the
library's parameter names, or ``train --arch hf:DIR`` for a new network of that config); files
record ``transformers:<Class>`` with the config in their model arguments, so a run never
depends on where the directory was.

Example::

    arch, kwargs = expand("hf:runs/vit-tiny", {})   # ("transformers:ViTForImageClassification",
                                                     #  {"config": {...}})
    net = resolve_architecture(arch)(**kwargs, num_classes=10, in_channels=3)
    logits = net(torch.rand(2, 3, 32, 32))           # a tensor, not the library's output record
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from robust_mc.errors import UserError, home_of

DIR_PREFIX = "hf:"
CLASS_PREFIX = "transformers:"
INSTALL = "pip install 'robust-mc[transformers]'"
CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
MAX_CONFIG_BYTES = 1 << 20
_CLASS_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*ForImageClassification")
# never taken from a file: code to fetch (auto_map, hub kernels) or robust-mc's own choices
_IGNORED_KEYS = ("auto_map", "attn_implementation", "_attn_implementation",
                 "_attn_implementation_autoset", "transformers_version", "torch_dtype", "dtype",
                 "quantization_config")
_LOGIT_CLASSES: dict[Any, Any] = {}  # a library class -> its logits-returning subclass


def is_huggingface(arch: str) -> bool:
    """A ``hf:DIR`` or ``transformers:<Class>`` spelling."""
    return arch.startswith((DIR_PREFIX, CLASS_PREFIX))


def is_image_classifier_name(arch: str) -> bool:
    """``transformers:<Name>ForImageClassification``: a spelling a file may record (whether the
    installed library has that class is checked when it is built)."""
    return (arch.startswith(CLASS_PREFIX)
            and _CLASS_NAME.fullmatch(arch[len(CLASS_PREFIX):]) is not None)


def is_model_dir(path: str | Path) -> bool:
    """A directory ``save_pretrained`` wrote (it holds ``config.json``)."""
    path = Path(path)
    return path.is_dir() and (path / CONFIG_FILE).is_file()


def read_config(folder: str | Path) -> dict[str, Any]:
    """``folder``'s ``config.json``: a JSON mapping that names one image classifier class."""
    folder = Path(home_of(str(folder)))
    path = folder / CONFIG_FILE
    if not folder.is_dir():
        raise UserError(f"hf:{folder}: no such directory; give a folder written by "
                        "save_pretrained (config.json and model.safetensors)")
    if not path.is_file():
        raise UserError(f"hf:{folder}: no {CONFIG_FILE} in it; give a folder written by "
                        "save_pretrained")
    config = _read_json(path)
    class_name(config, path)
    return config


def read_normalization(folder: str | Path) -> tuple[list[float], list[float]] | None:
    """The mean and std of ``preprocessor_config.json`` (None without that file, or where it
    does not normalize)."""
    path = Path(folder) / PREPROCESSOR_FILE
    if not path.is_file():
        return None
    values = _read_json(path)
    if not values.get("do_normalize", True):
        return None
    mean: Any = values.get("image_mean")
    std: Any = values.get("image_std")
    if mean is None and std is None:
        return None
    if not (_numbers(mean) and _numbers(std) and len(mean) == len(std)
            and all(s > 0 for s in std)):
        raise UserError(f"{path}: image_mean and image_std must be lists of numbers of one "
                        "length, std positive")
    return [float(m) for m in mean], [float(s) for s in std]


def expand(arch: str, kwargs: dict) -> tuple[str, dict]:
    """``hf:DIR`` as files record it: ``transformers:<Class>`` with the directory's config in
    the model arguments; anything else as it is."""
    if not arch.startswith(DIR_PREFIX):
        return arch, kwargs
    config = read_config(arch[len(DIR_PREFIX):])
    return CLASS_PREFIX + class_name(config, arch), {**kwargs, "config": config}


def huggingface_factory(arch: str) -> Callable[..., nn.Module]:
    """The builder of ``transformers:<Class>``: ``build(config, num_classes, in_channels)``, a
    network of random weights returning logits."""
    if arch.startswith(DIR_PREFIX):
        raise UserError(f"architecture {arch}: a model directory is read where models are "
                        "given (robust-mc reads its config); here name its class")
    if not is_image_classifier_name(arch):
        raise UserError(f"architecture {arch[:80]!r}: only transformers' image classifiers "
                        "(transformers:<Name>ForImageClassification) are built")
    cls = _library_class(arch[len(CLASS_PREFIX):], arch)

    def build(config: dict | None = None, num_classes: int | None = None,
              in_channels: int | None = None) -> nn.Module:
        return logits_class(cls)(library_config(arch, cls, config, num_classes, in_channels))

    build.__qualname__ = f"{cls.__name__}.from_config"
    return build


def library_config(arch: str, cls: Any, config: Any, num_classes: int | None = None,
                   in_channels: int | None = None) -> Any:
    """``cls``'s config object from ``config`` (a ``config.json`` mapping, data only), with
    robust-mc's number of classes and channels where given and its attention choice."""
    if not isinstance(config, dict):
        raise UserError(f"architecture {arch}: its model argument 'config' (the model "
                        "directory's config.json) is missing or not a mapping")
    settings = {k: v for k, v in config.items() if k not in _IGNORED_KEYS}
    model_type = cls.config_class.model_type
    if settings.get("model_type", model_type) != model_type:
        raise UserError(f"architecture {arch}: its config is for model type "
                        f"{settings.get('model_type')!r}, not {model_type!r}")
    if num_classes is not None and settings.get("num_labels") != num_classes:
        settings.pop("id2label", None)
        settings.pop("label2id", None)
        settings["num_labels"] = num_classes
    if in_channels is not None:
        settings["num_channels"] = in_channels
    try:
        hf_config = cls.config_class.from_dict(settings)
    except Exception as exc:  # the library's own checks of its fields
        raise UserError(f"architecture {arch}: its config is not valid "
                        f"({type(exc).__name__}: {str(exc)[:160]})") from None
    hf_config._attn_implementation = "sdpa" if cls._supports_sdpa else "eager"
    return hf_config


def pretrained_network(folder: Path, config: dict[str, Any]) -> nn.Module:
    """The network ``folder`` holds (``config``: its ``config.json``, as :func:`read_config`
    gave it), its weights read by the library itself (which renames parameters it has renamed
    since they were saved): offline, with robust-mc's checked config, from safetensors only."""
    name = class_name(config, folder)
    arch = CLASS_PREFIX + name
    cls = _library_class(name, arch)
    try:
        net = logits_class(cls).from_pretrained(
            folder, config=library_config(arch, cls, config), local_files_only=True,
            use_safetensors=True, trust_remote_code=False)
    except Exception as exc:  # the library's errors for a damaged or mismatched directory
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{folder}: transformers cannot read its weights "
                        f"({type(exc).__name__}: {first[:200]})") from None
    return net


def logits_class(cls: Any) -> Any:
    """``cls`` whose ``forward(x)`` takes images and returns the logits tensor; parameter names,
    ``save_pretrained`` and everything else are ``cls``'s own."""
    if cls not in _LOGIT_CLASSES:
        def forward(self: Any, x: Any) -> Any:
            return cls.forward(self, pixel_values=x).logits

        _LOGIT_CLASSES[cls] = type(cls.__name__, (cls,), {
            "forward": forward, "__module__": __name__,
            "__doc__": f"{cls.__name__} returning its logits."})
    return _LOGIT_CLASSES[cls]


def import_transformers() -> Any:
    """The library, quiet: no progress bars or notes of its own on robust-mc's output."""
    try:
        transformers = importlib.import_module("transformers")
    except ImportError as exc:
        raise UserError(f"Hugging Face models need the transformers package ({exc}); install "
                        f"it with {INSTALL}") from None
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    return transformers


def _library_class(name: str, arch: str) -> Any:
    transformers = import_transformers()
    cls = getattr(transformers, name, None)
    base = getattr(transformers, "PreTrainedModel", None)
    if not (isinstance(cls, type) and base is not None and issubclass(cls, base)):
        raise UserError(f"architecture {arch}: the installed transformers "
                        f"({transformers.__version__}) has no image classifier {name!r}")
    return cls


def class_name(config: dict, source: Any) -> str:
    """The image classifier class a ``config.json`` names (one line where it names none or
    another kind)."""
    names = config.get("architectures")
    if not (isinstance(names, list) and names and isinstance(names[0], str)):
        raise UserError(f"{source}: config.json names no class ('architectures'); save the "
                        "model with save_pretrained")
    if _CLASS_NAME.fullmatch(names[0]) is None:
        raise UserError(f"{source}: config.json names {names[0][:80]!r}; robust-mc builds "
                        "transformers' image classifiers (<Name>ForImageClassification)")
    return names[0]


def _read_json(path: Path) -> dict[str, Any]:
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise UserError(f"{path} is over {MAX_CONFIG_BYTES >> 20} MiB; not a model config")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise UserError(f"{path} is not JSON ({type(exc).__name__}); write it again with "
                        "save_pretrained") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} is not a JSON mapping")
    return value


def _numbers(value: Any) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))
