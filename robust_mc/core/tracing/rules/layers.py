"""Linear and convolution layers: each opens a new space of hidden units (its outputs) and moves its
input axis with the units it reads. A linear layer acts on the last axis of a tensor of any rank
(tokens x features); on an axis that is never permuted (MLP-Mixer's token mixing) its input axis
stays, and its outputs are still a hidden space. A grouped convolution groups its input and output
units alike: groups are permuted as wholes, units within each group freely."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import nn
from torch.fx import Node

from robust_mc.core.tracing.layout import Dim, Free, Layout, Traced, Units
from robust_mc.core.tracing.rulebook import for_functions, for_modules

if TYPE_CHECKING:
    from robust_mc.core.tracing.trace import Trace


def open_space(trace: Trace, node: Node, weight: Layout, bias: Layout | None,
               name: str | None = None) -> Units | Free:
    """The layer's outputs: the weight's first axis becomes a new hidden space, named after
    the layer (one output is no space: a score, CoaT's aggregation of its class tokens)."""
    out = trace.resolve(weight[0])
    if isinstance(out, Free) and out.size == 1:
        return out
    if not isinstance(out, Units):
        raise trace.fail(node, "layer with a weight that is not a parameter:")
    if name is None:
        name = str(node.target) if node.op == "call_module" else node.name
    for seg in out.segs:
        trace.spaces.produce(seg.space, name)
    if bias is not None:
        trace.meet([out, bias[0]], f"'{node.name}'")
    trace.producer(node)
    return out


def _linear(trace: Trace, node: Node, x: Layout, weight: Layout, bias: Layout | None) -> Layout:
    if len(weight) != 2:
        raise trace.fail(node, "linear layer with a weight of this shape:")
    trace.meet([x[-1], weight[1]], f"'{node.name}'")
    return (*x[:-1], open_space(trace, node, weight, bias))


@for_modules(nn.Linear)
def linear_module(trace: Trace, node: Node) -> Traced:
    weight = trace.module_parameter(node, "weight")
    assert weight is not None
    return _linear(trace, node, trace.tensor(node), weight, trace.module_parameter(node, "bias"))


@for_functions(F.linear)
def linear_function(trace: Trace, node: Node) -> Traced:
    weight = trace.tensor(node, 1, "weight")
    bias = trace.operand(trace.arg(node, 2, "bias"))
    return _linear(trace, node, trace.tensor(node), weight, bias)


def _spatial(trace: Trace, node: Node, x: Layout, channels, pointwise: tuple[bool, ...] = ()
             ) -> Layout:
    """The convolution's output: ``channels``, then its spatial axes, free; an axis of hidden
    units may be one only where the kernel reads each entry alone (``pointwise``: size 1,
    stride 1, no padding), which keeps it as it is."""
    shape = trace.shape(node)
    assert shape is not None
    out: list = [x[0], channels]
    for k, (dim, size) in enumerate(zip(x[2:], shape[2:], strict=True)):
        if isinstance(dim, Free):
            out.append(Free(size))
        elif k < len(pointwise) and pointwise[k]:
            out.append(dim)
        else:
            raise trace.fail(node, "convolution over a hidden axis:")
    return tuple(out)


def _pointwise(conv: nn.Conv1d | nn.Conv2d | nn.Conv3d) -> tuple[bool, ...]:
    """Per spatial axis: whether the kernel reads each entry alone (size 1, stride 1, unpadded)."""
    padding = conv.padding if isinstance(conv.padding, tuple) else (0,) * len(conv.kernel_size)
    return tuple(k == 1 and s == 1 and p == 0
                 for k, s, p in zip(conv.kernel_size, conv.stride, padding, strict=True))


@for_modules(nn.Conv1d, nn.Conv2d, nn.Conv3d)
def conv_module(trace: Trace, node: Node) -> Traced:
    conv = trace.module(node)
    x = trace.tensor(node)
    if conv.groups == 1:
        weight = trace.module_parameter(node, "weight")
        assert weight is not None
        trace.meet([x[1], weight[1]], f"'{node.name}'")
        out = open_space(trace, node, weight, trace.module_parameter(node, "bias"))
        return _spatial(trace, node, x, out, _pointwise(conv))
    bias = f"{node.target}.bias" if conv.bias is not None else None
    return _spatial(trace, node, x, _grouped(trace, node, x[1], conv.groups, conv.out_channels,
                                             f"{node.target}.weight", bias), _pointwise(conv))


def _grouped(trace: Trace, node: Node, channels, groups: int, out_channels: int, weight: str,
             bias: str | None) -> Units | Free:
    """Input units in ``groups`` blocks, each read by its own block of output units; the
    parameters are ``weight`` (out, in / groups, ...) and ``bias``."""
    name = weight.removesuffix(".weight")
    channels = trace.resolve(channels)
    depthwise = out_channels == channels.size == groups
    if depthwise and isinstance(channels, Units):  # each output follows its input channel,
        _record_filters(trace, node, channels, weight, bias)  # whatever spaces they are of
        return channels
    if isinstance(channels, Free) and depthwise:  # channels left in place: so are the filters
        return channels
    made = trace.new_units(out_channels, name)
    grouped = _tie_groups(trace, node, channels, made, groups, name)
    out = trace.resolve(made)
    if channels.size // groups > 1 and grouped:
        trace.record(channels, weight, 1, groups=groups)
    assert isinstance(out, Units)
    _record_filters(trace, node, out, weight, bias)
    return out


def _tie_groups(trace: Trace, node: Node, channels, out: Units, groups: int, name: str
                ) -> bool:
    """The input units and layer ``name``'s units ``out`` in ``groups`` blocks, the blocks
    permuted alike; False (the input and the blocks left in place) where either cannot be
    grouped: the weight's input axis is then recorded nowhere, so its input may not move."""
    in_groups = trace.spaces.block(channels.segs[0].space, groups, name) \
        if isinstance(channels, Units) and len(channels.segs) == 1 \
        and channels.segs[0].repeat == 1 else None
    out_groups = trace.spaces.block(out.segs[0].space, groups, name) \
        if len(out.segs) == 1 else None
    if in_groups is None or out_groups is None:
        trace.fix([channels], f"{name}: grouped convolution over units that cannot be grouped")
        if out_groups is not None:
            trace.spaces.fix(out_groups)
        return False
    trace.spaces.union(out_groups, in_groups, f"'{node.name}'")
    return True


def _record_filters(trace: Trace, node: Node, out: Units, weight: str, bias: str | None
                    ) -> None:
    """The filters (and biases) of ``out``'s units move with them."""
    trace.record(out, weight, 0)
    if bias is not None:
        trace.record(out, bias, 0)
    trace.producer(node)


@for_functions(F.conv1d, F.conv2d, F.conv3d)
def conv_function(trace: Trace, node: Node) -> Traced:
    x = trace.tensor(node)
    weight = trace.operand(trace.arg(node, 1, "weight"))
    bias = trace.operand(trace.arg(node, 2, "bias"))
    groups = trace.arg(node, 6, "groups", 1)
    if not isinstance(weight, tuple) or not isinstance(weight[0], Units):
        raise trace.fail(node, "convolution with a weight that is not a parameter:")
    if groups == 1:
        trace.meet([x[1], weight[1]], f"'{node.name}'")
        return _spatial(trace, node, x, open_space(trace, node, weight, bias))
    names = [trace.arg(node, 1, "weight"), trace.arg(node, 2, "bias")]
    if getattr(names[0], "op", None) != "get_attr":
        return _spatial(trace, node, x, _grouped_computed(trace, node, x[1], groups, weight, bias))
    for layout in (weight, bias):  # recorded below, on the units themselves
        trace.fix(layout, None)
    bias_name = str(names[1].target) if getattr(names[1], "op", None) == "get_attr" else None
    return _spatial(trace, node, x, _grouped(trace, node, x[1], groups, weight[0].size,
                                             str(names[0].target), bias_name))


def _grouped_computed(trace: Trace, node: Node, channels, groups: int, weight: Layout,
                      bias: Layout | None) -> Dim:
    """A grouped convolution whose weight is computed in ``forward`` (NFNet's standardised
    weights): the computed weight's first axis becomes the layer's units, in groups that follow
    the input's; the parameters behind its second axis are moved within each group, as the
    group of the row they belong to orders it."""
    inner = trace.resolve(weight[1])
    wild = inner.segs[0].space if isinstance(inner, Units) and len(inner.segs) == 1 \
        and inner.segs[0].repeat == 1 and trace.spaces.entry(inner.segs[0].space).wild else None
    if wild is None and inner.size > 1:
        raise trace.fail(node, "grouped convolution with a weight computed across its inputs:")
    out = open_space(trace, node, weight, bias)
    channels = trace.resolve(channels)
    if not isinstance(out, Units):
        raise trace.fail(node, "grouped convolution with one output:")
    if out.size == channels.size == groups:  # depthwise: each filter follows its channel
        return trace.meet([channels, out], f"'{node.name}'")
    if _tie_groups(trace, node, channels, out, groups, str(node.name)):
        if wild is not None:
            trace.dissolve_grouped(wild, channels.segs[0].space, groups)
    elif wild is not None:
        trace.spaces.fix(wild)
    return trace.resolve(out)
