"""The graph the tracer walks: ``torch.fx`` symbolic tracing, with robust-mc's input
normalisation kept whole."""

from __future__ import annotations

from typing import Any

import torch.fx
from torch import nn

from robust_mc.core.tracing.spaces import DOCS
from robust_mc.errors import UserError
from robust_mc.models.normalize import Normalize


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, Normalize) or super().is_leaf_module(m, qualname)


def trace_graph(model: nn.Module) -> torch.fx.GraphModule:
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # fx raises many types for untraceable code
        raise UserError(f"cannot trace {type(model).__name__} with torch.fx ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200]}); {DOCS}") from None
    return torch.fx.GraphModule(model, graph)


def node_args(obj: Any) -> list[torch.fx.Node]:
    """The graph nodes among ``obj``'s (nested) arguments."""
    out: list[torch.fx.Node] = []

    def collect(node: torch.fx.Node) -> torch.fx.Node:
        out.append(node)
        return node

    torch.fx.node.map_arg(obj, collect)
    return out
