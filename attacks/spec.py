"""Attack spec strings: ``name`` or ``name:key=value,...``, e.g. ``pgd:steps=20,alpha=2/255``."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from robust_mc.errors import UserError
from robust_mc.registry import Registry
from robust_mc.settings import parse_pixel_value


class Attack(Protocol):
    """``attack(model, x, y) -> x_adv``: x (B, C, H, W) in [0, 1]; x_adv in the eps-ball and [0, 1].
    The attack runs the model in eval mode and restores its mode afterwards."""

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class Param:
    kind: str  # "int", "float", "pixel" or a "|"-joined choice list
    default: Any
    help: str = ""


EVAL_ATTACKS = Registry[Callable[..., Attack]]("attack")
list_attacks = EVAL_ATTACKS.names


def register_attack(name: str, doc: str, **params: Param) -> Callable:
    """Register ``build(eps, norm, num_classes, **params) -> Attack`` under ``name``, with a
    one-line ``doc`` and the options its spec string may set."""
    return EVAL_ATTACKS.register(name, doc=doc, params=params)


def describe_attacks() -> dict[str, str]:
    return {entry.name: entry.meta["doc"] for entry in EVAL_ATTACKS.entries()}


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
    params: dict[str, Param] = EVAL_ATTACKS.entry(name).meta["params"]
    values: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq:
            raise UserError(f"attack spec {spec!r}: {item!r} is not key=value "
                            f"(e.g. {name}:steps=20)")
        if key not in params:
            close = difflib.get_close_matches(key, params, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            known = ", ".join(params) or "none"
            raise UserError(f"attack {name} has no option {key!r}; {hint}options: {known}")
        values[key] = _convert(name, key, raw.strip(), params[key])
    return name, values


def build_spec_attack(spec: str, *, eps: float, norm: str = "linf", num_classes: int = 10
                      ) -> Attack:
    """The evaluation attack ``spec`` describes at radius ``eps`` ([0, 1] pixel units); callers
    use :func:`robust_mc.attacks.build.build_attack`."""
    name, values = parse_attack_spec(spec)
    entry = EVAL_ATTACKS.entry(name)
    kwargs = {key: param.default for key, param in entry.meta["params"].items()}
    kwargs.update(values)
    override = kwargs.pop("eps", None)
    eps = eps if override is None else override
    return entry.item(eps=eps, norm=norm, num_classes=num_classes, **kwargs)
