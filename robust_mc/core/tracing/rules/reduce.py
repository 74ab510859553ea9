"""Reductions: a sum, mean, maximum or variance over a whole axis is unchanged by any permutation
of the units on it (a LayerNorm written by hand as ``x - x.mean(1, keepdim=True)``); over
spatial axes and tokens it is pooling. Summing over heads while keeping the units within each
head adds unit c of every head: it is followed where every head takes one order of its units
(the space is *shared*); other reductions over heads that keep units are not."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch.fx import Node

from robust_mc.core.tracing.layout import Dim, Free, Split, Traced
from robust_mc.core.tracing.rulebook import for_functions, for_methods
from robust_mc.core.tracing.rules.elementwise import arithmetic

REDUCTIONS = (torch.mean, torch.sum, torch.amax, torch.amin, torch.var, torch.std,
              torch.logsumexp, torch.prod, torch.max, torch.min, torch.norm, torch.all,
              torch.any, torch.argmax, torch.argmin, torch.var_mean, torch.std_mean,
              torch.nansum, torch.nanmean, torch.linalg.vector_norm, torch.linalg.norm)
REDUCTION_METHODS = ("mean", "sum", "amax", "amin", "var", "std", "logsumexp", "prod", "max",
                     "min", "norm", "all", "any", "argmax", "argmin", "nansum", "nanmean")

if TYPE_CHECKING:
    from robust_mc.core.tracing.trace import Trace


@for_functions(*REDUCTIONS)
@for_methods(*REDUCTION_METHODS)
def reduction(trace: Trace, node: Node) -> Traced:
    if isinstance(trace.operand(trace.arg(node, 1, "other")), tuple):
        return arithmetic(trace, node)  # torch.max(a, b): entry by entry
    layout = trace.tensor(node)
    name = getattr(node.target, "__name__", str(node.target))
    dim_at = 2 if name in ("norm", "linalg_vector_norm", "linalg_norm") else 1  # after p, ord
    dims = trace.arg(node, dim_at, "dim")
    shape = trace.shape(node) or (trace.shapes(node) or [()])[0]
    keepdim = len(shape) == len(layout)  # read from the result: argument orders differ
    if dims is None:  # every axis: a scalar
        axes = set(range(len(layout)))
    else:
        axes = {int(d) % len(layout) for d in ((dims,) if isinstance(dims, int) else dims)}
    kept_inner = any(isinstance(d, Split) and d.role == "inner" for k, d in enumerate(layout)
                     if k not in axes)
    out: list[Dim] = []
    for k, dim in enumerate(layout):
        if k not in axes:
            out.append(dim)
            continue
        if isinstance(dim, Split) and (dim.role == "part" or kept_inner):
            if not _sums_heads(layout, axes, dim, name):
                raise trace.fail(node, "reduction over heads that keeps units within heads:")
            for part in dim.parts:  # every head's units in one order: the sum's units
                trace.spaces.entry(part).shared = True
        if keepdim:
            out.append(Free(1))
    result = tuple(out)
    if trace.shapes(node) and trace.shape(node) is None:  # (values, indices)
        return tuple(result for _ in trace.shapes(node))
    return result


def _sums_heads(layout: tuple[Dim, ...], axes: set[int], dim: Split, name: str) -> bool:
    """Whether a reduction ``name`` over ``axes`` adds heads up unit by unit (ResNeSt's split
    attention sums its radix branches): a sum or mean over the head axis alone, the units
    within the heads kept. Under one order of the units shared by every head the sum's units
    follow that order, and a permutation of the heads leaves it as it is."""
    kept = [d for k, d in enumerate(layout) if k not in axes and isinstance(d, Split)]
    return (name in ("sum", "mean") and dim.role == "block"
            and sum(isinstance(layout[k], Split) for k in axes) == 1
            and len(kept) == 1 and kept[0].role == "inner" and dim.same_group(kept[0]))


@for_functions(F.normalize)
def normalize(trace: Trace, node: Node) -> Traced:
    """Each vector divided by its norm: unit-wise along the axis."""
    return trace.tensor(node)
