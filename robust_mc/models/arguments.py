"""The arguments a zoo architecture takes, checked before anything is built.

A zoo factory names every argument it takes (no ``**kwargs`` that swallow a typo), with a typed
default; :func:`check_arguments` refuses an unknown name, a value of the wrong type, a number
that is not finite or lies outside the bounds (the standard arguments' below, the factory's own
from its registration) and a choice it does not offer, each in one line naming the argument.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

from robust_mc.errors import UserError

# The standard arguments every zoo architecture takes (image_size where its shape needs it):
# no dataset robust-mc reads has more classes or channels, and width is the settings' range.
STANDARD_BOUNDS: dict[str, tuple[float, float]] = {
    "num_classes": (2, 100_000), "in_channels": (1, 1024), "width": (1 / 64, 64),
    "image_size": (1, 4096)}


def check_arguments(arch: str, factory: Callable[..., Any], arguments: Mapping[str, Any],
                    bounds: Mapping[str, tuple[float, float]],
                    choices: Mapping[str, tuple[str, ...]], source: str) -> None:
    """Refuse what ``factory`` (a zoo architecture) cannot build from ``arguments``."""
    parameters = inspect.signature(factory).parameters
    for name, value in arguments.items():
        if name not in parameters:
            takes = ", ".join(parameters)
            raise UserError(f"{source}: {arch} takes no argument {name!r}; it takes {takes}")
        default = parameters[name].default
        owner = "" if arch in source else f" {arch}"
        where = f"{source}:{owner} argument {name}"
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise UserError(f"{where}: {_shown(value)} is not true or false")
        elif isinstance(default, int):
            _check_number(where, value, integer=True, bounds=_bounds_of(name, bounds))
        elif isinstance(default, float):
            _check_number(where, value, integer=False, bounds=_bounds_of(name, bounds))
        elif isinstance(default, str):
            allowed = choices.get(name)
            if not isinstance(value, str) or (allowed is not None and value not in allowed):
                offer = f"choose {', '.join(allowed)}" if allowed else "give a string"
                raise UserError(f"{where}: {_shown(value)} is not allowed; {offer}")


def _bounds_of(name: str, bounds: Mapping[str, tuple[float, float]]) -> tuple[float, float]:
    return bounds.get(name) or STANDARD_BOUNDS.get(name) or (-math.inf, math.inf)


def _check_number(where: str, value: Any, *, integer: bool,
                  bounds: tuple[float, float]) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(f"{where}: {_shown(value)} is not a number")
    if integer and not isinstance(value, int):
        raise UserError(f"{where}: {_shown(value)} is not a whole number")
    if not math.isfinite(value):
        raise UserError(f"{where}: {_shown(value)} is not a finite number")
    low, high = bounds
    if not low <= value <= high:
        raise UserError(f"{where}: {_shown(value)} is outside [{low:g}, {high:g}]")


def _shown(value: Any) -> str:
    """A value as the message shows it: short, even for an integer of thousands of digits."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return "an integer of more than 19 digits"
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."
