"""The rule registry: rules looked up by module class, function or method name."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch.fx

    from robust_mc.core.tracing.trace import Trace


Rule = Callable[["Trace", "torch.fx.Node"], Any]

MODULE_RULES: dict[type, Rule] = {}
FUNCTION_RULES: dict[Any, Rule] = {}
METHOD_RULES: dict[str, Rule] = {}


def for_modules(*types: type) -> Callable[[Rule], Rule]:
    def register(rule: Rule) -> Rule:
        for t in types:
            MODULE_RULES[t] = rule
        return rule
    return register


def for_functions(*functions: Any) -> Callable[[Rule], Rule]:
    def register(rule: Rule) -> Rule:
        for f in functions:
            FUNCTION_RULES[f] = rule
        return rule
    return register


def for_methods(*names: str) -> Callable[[Rule], Rule]:
    def register(rule: Rule) -> Rule:
        for name in names:
            METHOD_RULES[name] = rule
        return rule
    return register


def module_rule(module: Any) -> Rule | None:
    for cls in type(module).__mro__:
        if cls in MODULE_RULES:
            return MODULE_RULES[cls]
    return None
