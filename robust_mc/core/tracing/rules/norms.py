"""Normalisation layers, as modules and as the functions models call on their own parameters
(timm's fused ``BatchNormAct2d`` calls ``F.batch_norm``; ``LayerNorm2d`` calls ``F.layer_norm`` on
channels-last data). Statistics over all the units of an axis do not change when they are
permuted, so the per-unit parameters simply follow the units; GroupNorm's groups are permuted as
wholes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import nn
from torch.fx import Node

from robust_mc.core.tracing.layout import Layout, Traced, Units
from robust_mc.core.tracing.rulebook import for_functions, for_modules

if TYPE_CHECKING:
    from robust_mc.core.tracing.trace import Trace


def _params(trace: Trace, node: Node, names: tuple[str, ...]) -> list[Layout]:
    if node.op == "call_module":
        found = [trace.module_parameter(node, name) for name in names]
    else:
        found = [trace.operand(trace.arg(node, index, name)) for index, name in names_at(node)]
    return [p for p in found if isinstance(p, tuple) and p]


def names_at(node: Node) -> list[tuple[int, str]]:
    """Positions of the parameter arguments of a functional norm."""
    if node.target is F.batch_norm:
        return [(1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias")]
    if node.target is F.layer_norm:
        return [(2, "weight"), (3, "bias")]
    if node.target is F.group_norm:
        return [(2, "weight"), (3, "bias")]
    return []


@for_modules(nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
@for_functions(F.batch_norm, F.instance_norm)
def batch_norm(trace: Trace, node: Node) -> Traced:
    """Per-channel statistics and parameters on axis 1."""
    x = trace.tensor(node)
    params = _params(trace, node, ("weight", "bias", "running_mean", "running_var"))
    trace.meet([x[1], *(p[0] for p in params)], f"'{node.name}'")
    trace.producer(node)
    return x


@for_modules(nn.LayerNorm)
@for_functions(F.layer_norm)
def layer_norm(trace: Trace, node: Node) -> Traced:
    """Statistics over the trailing axes; the parameters follow each of them."""
    x = trace.tensor(node)
    for param in _params(trace, node, ("weight", "bias")):
        for k, dim in enumerate(param):
            trace.meet([x[len(x) - len(param) + k], dim], f"'{node.name}'")
    return x


@for_modules(nn.GroupNorm)
@for_functions(F.group_norm)
def group_norm(trace: Trace, node: Node) -> Traced:
    x = trace.tensor(node)
    groups = (trace.module(node).num_groups if node.op == "call_module"
              else int(trace.arg(node, 1, "num_groups")))
    channels = trace.resolve(x[1])
    if groups not in (1, channels.size):  # statistics per group of channels: groups stay whole
        if not (isinstance(channels, Units) and len(channels.segs) == 1
                and trace.spaces.block(channels.segs[0].space, groups, node.name) is not None):
            trace.fix([channels], f"'{node.name}': GroupNorm over units that cannot be grouped")
    for param in _params(trace, node, ("weight", "bias")):
        trace.meet([trace.resolve(x[1]), param[0]], f"'{node.name}'")
    return x
