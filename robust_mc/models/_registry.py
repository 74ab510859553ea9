"""The architecture registry: ``@register_model`` adds a factory; lookups by name or by path."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path

from torch import nn

from robust_mc.errors import UserError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn(num_classes, in_channels, width, **kw) -> nn.Module`` under its name."""
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def resolve_architecture(arch: str) -> Callable[..., nn.Module]:
    """A zoo name, ``path/to/file.py:ClassName`` or ``package.module:ClassName``."""
    if arch in _MODELS:
        return _MODELS[arch]
    if ":" not in arch:
        raise UserError(f"unknown architecture {arch!r}; choose one of {', '.join(list_models())} "
                        "or give path/to/file.py:ClassName")
    location, _, name = arch.rpartition(":")
    if location.endswith(".py"):
        path = Path(location).expanduser()
        if not path.is_file():
            raise UserError(f"--arch {arch}: file {path} not found")
        module_name = f"robust_mc_user_{abs(hash(str(path.resolve())))}"
        module = sys.modules.get(module_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(module_name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(location)
        except ImportError as exc:
            raise UserError(f"--arch {arch}: cannot import {location} ({exc})") from None
    cls = getattr(module, name, None)
    if cls is None or not callable(cls):
        raise UserError(f"--arch {arch}: {location} defines no class {name!r}")
    return cls


def build_architecture(arch: str, standard: dict, kwargs: dict) -> nn.Module:
    """Build the bare network from the ``standard`` arguments (num_classes, in_channels, width,
    image_size) and the user's ``kwargs``; a user class gets only the standard arguments that its
    signature accepts, and every one of the user's."""
    factory = resolve_architecture(arch)
    offered = dict(standard)
    if arch not in _MODELS:
        try:
            params = dict(inspect.signature(factory).parameters)
        except (TypeError, ValueError):
            params = {}
        takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        offered = {k: v for k, v in offered.items() if takes_all or k in params}
    offered.update(kwargs)
    try:
        module = factory(**offered)
    except TypeError as exc:
        raise UserError(f"--arch {arch}: cannot build it with {sorted(offered)}: {exc}") from None
    if not isinstance(module, nn.Module):
        raise UserError(f"--arch {arch}: {factory!r} did not return an nn.Module")
    return module
