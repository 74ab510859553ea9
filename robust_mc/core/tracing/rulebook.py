"""The rule book: tracing rules looked up by module class, function or method name.

The rules themselves live in :mod:`robust_mc.core.tracing.rules`, which fills this book when
imported; the walk (:mod:`robust_mc.core.tracing.trace`) reads it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.fx

from robust_mc.core.tracing.layout import Traced

# (the walk: a robust_mc.core.tracing.trace.Trace, which reads this book, so it is not named
# here; the node) -> what the node computes: its output's layout, or its outputs'
Rule = Callable[[Any, torch.fx.Node], Traced]

MODULE_RULES: dict[type, Rule] = {}
FUNCTION_RULES: dict[Any, Rule] = {}
METHOD_RULES: dict[str, Rule] = {}


def _register(table: dict, keys: tuple) -> Callable[[Rule], Rule]:
    def register(rule: Rule) -> Rule:
        for key in keys:
            table[key] = rule
        return rule
    return register


def for_modules(*types: type) -> Callable[[Rule], Rule]:
    """The rule of these module classes (and their subclasses)."""
    return _register(MODULE_RULES, types)


def for_functions(*functions: Any) -> Callable[[Rule], Rule]:
    """The rule of these functions (``torch.*``, ``F.*``, operators)."""
    return _register(FUNCTION_RULES, functions)


def for_methods(*names: str) -> Callable[[Rule], Rule]:
    """The rule of these tensor methods."""
    return _register(METHOD_RULES, names)


def module_rule(module: Any) -> Rule | None:
    for cls in type(module).__mro__:
        if cls in MODULE_RULES:
            return MODULE_RULES[cls]
    return None
