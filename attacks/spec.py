"""Attack spec strings: ``name`` or ``name:key=value,...``, e.g. ``pgd:steps=20,alpha=2/255``."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from robust_mc.config import parse_pixel_value
from robust_mc.errors import UserError


class Attack(Protocol):
    """``attack(model, x, y) -> x_adv``: x (B, C, H, W) in [0, 1]; x_adv in the eps-ball and [0, 1].
    The attack runs the model in eval mode and restores its mode afterwards."""

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class Param:
    kind: str  # "int", "float", "pixel" or a "|"-joined choice list
    default: Any
    help: str = ""


@dataclass(frozen=True)
class AttackEntry:
    name: str
    build: Callable[..., Attack]
    params: dict[str, Param]
    doc: str


_ATTACKS: dict[str, AttackEntry] = {}


def register_attack(name: str, doc: str, **params: Param) -> Callable:
    """Register ``build(eps, norm, num_classes, **params) -> Attack`` under ``name``."""

    def wrap(build: Callable[..., Attack]) -> Callable[..., Attack]:
        _ATTACKS[name] = AttackEntry(name, build, params, doc)
        return build

    return wrap


def list_attacks() -> list[str]:
    return sorted(_ATTACKS)


def describe_attacks() -> dict[str, str]:
    return {name: entry.doc for name, entry in sorted(_ATTACKS.items())}


def _convert(name: str, key: str, raw: str, param: Param) -> Any:
    where = f"attack {name}: {key}"
    if param.kind == "pixel":
        return parse_pixel_value(raw, where)
    if param.kind == "int":
        try:
            value = int(raw)
        except ValueError:
            raise UserError(f"{where} must be an integer, got {raw!r}") from None
        if value < 0:
            raise UserError(f"{where} must be non-negative, got {value}")
        return value
    if param.kind == "float":
        try:
            return float(raw)
        except ValueError:
            raise UserError(f"{where} must be a number, got {raw!r}") from None
    choices = param.kind.split("|")
    if raw not in choices:
        raise UserError(f"{where} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def parse_attack_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split and validate a spec; unknown names and keys are errors with a suggestion."""
    name, _, rest = spec.strip().partition(":")
    name = name.strip().lower()
    if name not in _ATTACKS:
        close = difflib.get_close_matches(name, _ATTACKS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        known = ", ".join(list_attacks())
        raise UserError(f"unknown attack {name!r}; {hint}known attacks: {known}")
    entry = _ATTACKS[name]
    values: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq:
            raise UserError(f"attack spec {spec!r}: {item!r} is not key=value "
                            f"(e.g. {name}:steps=20)")
        if key not in entry.params:
            close = difflib.get_close_matches(key, entry.params, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            known = ", ".join(entry.params) or "none"
            raise UserError(f"attack {name} has no option {key!r}; {hint}options: {known}")
        values[key] = _convert(name, key, raw.strip(), entry.params[key])
    return name, values


def build_attack(spec: str, *, eps: float, norm: str = "linf", num_classes: int = 10) -> Attack:
    """Build the evaluation attack described by ``spec`` at radius ``eps`` ([0, 1] pixel units)."""
    name, values = parse_attack_spec(spec)
    entry = _ATTACKS[name]
    kwargs = {key: param.default for key, param in entry.params.items()}
    kwargs.update(values)
    override = kwargs.pop("eps", None)
    eps = eps if override is None else override
    return entry.build(eps=eps, norm=norm, num_classes=num_classes, **kwargs)
