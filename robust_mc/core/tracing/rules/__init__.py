"""Tracing rules: how each operation moves hidden units between its inputs and its output.

One operation family per module. A rule takes the :class:`~robust_mc.core.tracing.trace.Trace`
and the ``torch.fx`` node and returns the output's layout; it raises ``trace.fail(...)`` for an
input it cannot follow. Register a rule for a module class, a function or a tensor method with
the decorators of :mod:`robust_mc.core.tracing.rulebook`; adding an operation is one function in
one of these files.
"""

from robust_mc.core.tracing.rulebook import (
    FUNCTION_RULES,
    METHOD_RULES,
    module_rule,
)
from robust_mc.core.tracing.rules import (  # noqa: F401  (each registers its rules)
    attention,
    elementwise,
    layers,
    norms,
    reduce,
    select,
    shape,
    spatial,
    torchvision_ops,
)

__all__ = ["FUNCTION_RULES", "METHOD_RULES", "module_rule"]
