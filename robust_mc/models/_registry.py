"""The architecture registry: ``@register_model`` adds a factory; lookups by name or by path."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from robust_mc.errors import UserError, home_of
from robust_mc.models.arguments import check_arguments
from robust_mc.models.huggingface import (
    DIR_PREFIX,
    huggingface_factory,
    is_huggingface,
    is_image_classifier_name,
)
from robust_mc.registry import Registry

MODELS = Registry[Callable[..., nn.Module]]("architecture")
list_models = MODELS.names


def register_model(fn: Callable[..., nn.Module] | None = None, *, min_image_size: int = 1,
                   bounds: dict[str, tuple[float, float]] | None = None,
                   choices: dict[str, tuple[str, ...]] | None = None) -> Any:
    """Register ``fn(num_classes, in_channels, width, ...) -> nn.Module`` under its name:
    ``@register_model``, or with what it needs stated: ``min_image_size`` (the smallest input
    side it takes), ``bounds`` (the range of a numeric argument of its own; the standard
    arguments' are :data:`~robust_mc.models.arguments.STANDARD_BOUNDS`) and ``choices`` (the
    values a string argument takes). Every argument is named with a typed default."""
    register = MODELS.register(min_image_size=min_image_size, bounds=dict(bounds or {}),
                               choices=dict(choices or {}))
    return register(fn) if fn is not None else register


def smallest_image_size(arch: str) -> int:
    """The smallest input side a zoo architecture takes (1 where it records none, or for an
    architecture outside the zoo)."""
    return int(MODELS.entry(arch).meta.get("min_image_size", 1)) if arch in MODELS else 1


def is_registered(arch: str) -> bool:
    """A zoo name (its code ships with robust-mc), an entry of RobustBench's zoo table, or one
    of transformers' image classifiers (a model directory's, ``hf:DIR``)."""
    return (arch in MODELS or arch.startswith(("robustbench:", DIR_PREFIX))
            or is_image_classifier_name(arch))


def resolve_architecture(arch: str, *, factory_ok: bool = True) -> Callable[..., nn.Module]:
    """A zoo name, ``path/to/file.py:ClassName`` or ``package.module:ClassName``.

    What an import spec names must be an ``nn.Module`` subclass or, with ``factory_ok`` (the user
    named the spec), a Python function that builds one; anything else is refused before it is
    called. Whether a spec may be imported at all is :class:`~robust_mc.models.trust.CodeTrust`'s
    decision, taken before this is called.
    """
    if arch in MODELS:
        return MODELS.get(arch)
    if arch.startswith("robustbench:"):
        from robust_mc.models.robustbench import robustbench_factory

        return robustbench_factory(arch)
    if is_huggingface(arch):
        return huggingface_factory(arch)
    if ":" not in arch:
        raise UserError(f"unknown architecture {arch[:80]!r}; choose one of "
                        f"{', '.join(list_models())} or give path/to/file.py:ClassName")
    location, _, name = arch.rpartition(":")
    _check_spec(arch, location, name)
    module = _import_file(arch, location) if location.endswith(".py") else _import(arch, location)
    target = getattr(module, name, None)
    if target is None and location == "timm" and name in module.list_models():
        target = _timm_factory(module, name)
    if target is None:
        raise UserError(f"architecture {arch}: {location} defines no {name!r}")
    _check_builds_module(arch, target, factory_ok)
    return target


def _timm_factory(timm: Any, name: str) -> Callable[..., nn.Module]:
    """``timm:<name>``: timm's registered model ``name`` (random weights: timm downloads only
    when asked for pretrained ones), built with the arguments it accepts."""

    def build(**kwargs: Any) -> nn.Module:
        return timm.create_model(name, pretrained=False, **kwargs)

    build.__qualname__ = f"timm.create_model({name!r})"
    return build


def _check_spec(arch: str, location: str, name: str) -> None:
    """``location`` is a ``.py`` file or a dotted module path, ``name`` a Python name."""
    dotted = all(part.isidentifier() for part in location.split("."))
    if name.isidentifier() and location and (location.endswith(".py") or dotted):
        return
    raise UserError(f"architecture {arch[:80]!r} is not an import spec; write "
                    "path/to/file.py:ClassName or package.module:ClassName")


def _import_file(arch: str, location: str) -> Any:
    path = Path(home_of(location))
    if not path.is_file():
        raise UserError(f"architecture {arch}: file {path} not found")
    module_name = f"robust_mc_user_{abs(hash(str(path.resolve())))}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise UserError(f"architecture {arch}: running {path} failed "
                            f"({type(exc).__name__}: {exc})") from None
    return module


def _import(arch: str, location: str) -> Any:
    if location.split(".")[0] == "robustbench":  # RobustBench needs its imports resolved first
        from robust_mc.models.robustbench import import_robustbench

        return import_robustbench(location)
    try:
        return importlib.import_module(location)
    except ImportError as exc:
        raise UserError(f"architecture {arch}: cannot import {location} ({exc})") from None


def _check_builds_module(arch: str, target: Any, factory_ok: bool) -> None:
    """``target`` is an nn.Module class, or (``factory_ok``) a Python function not declared to
    return anything else."""
    if inspect.isclass(target):
        if issubclass(target, nn.Module):
            return
        raise UserError(f"architecture {arch}: {target.__qualname__} is a class but not an "
                        "nn.Module; name the network's class")
    if inspect.isfunction(target):
        returns = _declared_return(target)
        if inspect.isclass(returns) and not issubclass(returns, nn.Module):
            raise UserError(f"architecture {arch}: {target.__qualname__} returns "
                            f"{returns.__qualname__}, not an nn.Module")
        if factory_ok:
            return
        raise UserError(f"architecture {arch}: {target.__qualname__} is a function, not an "
                        "nn.Module class; a factory function runs only when you name it "
                        f"yourself: pass --arch {arch}")
    raise UserError(f"architecture {arch}: {type(target).__name__} {target!r:.60} is not an "
                    "nn.Module class or a Python function that builds one")


def _declared_return(fn: Callable[..., Any]) -> Any:
    try:
        return typing.get_type_hints(fn).get("return")
    except Exception:  # unresolvable annotations say nothing either way
        return None


def standard_arguments(factory: Callable[..., nn.Module], standard: dict, kwargs: dict) -> dict:
    """Which of robust-mc's standard arguments a user architecture gets: ``num_classes`` where
    its signature names it or forwards ``**kwargs`` (the convention of torchvision and timm
    classifiers), ``in_channels`` only where it names it, and never robust-mc's ``width``
    multiplier or ``image_size`` (a user class's own ``width`` is its own); the user's
    ``kwargs`` always win."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    named = {n for n, p in params.items()
             if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    forwards = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    offered = {}
    if "num_classes" in standard and ("num_classes" in named or forwards):
        offered["num_classes"] = standard["num_classes"]
    if "in_channels" in standard and "in_channels" in named:
        offered["in_channels"] = standard["in_channels"]
    return {k: v for k, v in offered.items() if k not in kwargs}


def build_architecture(arch: str, standard: dict, kwargs: dict, *, factory_ok: bool = True,
                       source: str | None = None) -> nn.Module:
    """Build the bare network from the ``standard`` arguments (num_classes, in_channels, width,
    image_size) and the user's ``kwargs``. A registered architecture gets every standard
    argument; a user architecture those :func:`standard_arguments` gives it. The arguments are
    bound to the signature before anything is called, so a mismatch is a one-line error naming
    ``source``."""
    factory = resolve_architecture(arch, factory_ok=factory_ok)
    source = source or f"architecture {arch}"
    recorded = kwargs.get("num_classes")
    if "num_classes" in standard and recorded is not None and recorded != standard["num_classes"]:
        raise UserError(f"{source}: model argument num_classes {recorded!r} contradicts the "
                        f"{standard['num_classes']} classes of the data; drop it")
    if arch in MODELS:
        entry = MODELS.entry(arch)
        named = inspect.signature(factory).parameters
        offered = {k: v for k, v in standard.items() if k in named}
        offered.update(kwargs)
        check_arguments(arch, factory, offered, entry.meta["bounds"], entry.meta["choices"],
                        source)
    else:
        if standard.get("width", 1.0) != 1.0:
            raise UserError(f"{source}: width {standard['width']} scales robust-mc's zoo "
                            f"architectures; {arch} takes its own arguments: pass them with "
                            "--model-kwargs (model.kwargs)")
        offered = standard_arguments(factory, standard, kwargs)
    offered.update(kwargs)
    try:
        signature: inspect.Signature | None = inspect.signature(factory)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        try:
            signature.bind(**offered)
        except TypeError as exc:
            raise UserError(f"{source}: cannot build {arch} with arguments "
                            f"{sorted(offered)}: {exc}") from None
    try:
        module = factory(**offered)
    except Exception as exc:  # the user's code, or arguments it refuses in its own way
        raise UserError(f"{source}: cannot build {arch} with {sorted(offered)} "
                        f"({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(module, nn.Module):
        raise UserError(f"{source}: {arch} did not return an nn.Module")
    return module
