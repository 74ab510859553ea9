"""Pooling, padding and resizing: they act on the spatial axes after the channel axis, which must
hold no hidden units; the batch and channel axes pass through."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Node

from robust_mc.core.tracing.layout import Free, Seg, Traced, Units, spaces_of
from robust_mc.core.tracing.rulebook import for_functions, for_modules

POOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d,
                nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample,
                nn.LPPool2d)
PAD_MODULES = tuple(getattr(nn, name) for name in (
    "ZeroPad1d", "ZeroPad2d", "ZeroPad3d", "ConstantPad1d", "ConstantPad2d", "ConstantPad3d",
    "ReflectionPad1d", "ReflectionPad2d", "ReflectionPad3d", "ReplicationPad1d",
    "ReplicationPad2d", "ReplicationPad3d", "CircularPad2d") if hasattr(nn, name))
POOL_FUNCTIONS = (F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d,
                  F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
                  F.adaptive_avg_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
                  F.interpolate, F.upsample, F.lp_pool2d)

if TYPE_CHECKING:
    from robust_mc.core.tracing.trace import Trace


@for_modules(*POOL_MODULES, *PAD_MODULES)
@for_functions(*POOL_FUNCTIONS)
def spatial(trace: Trace, node: Node) -> Traced:
    x = trace.tensor(node)
    shape = trace.shape(node)
    assert shape is not None
    moving = [space for d in x[2:] for space in spaces_of(d)]
    if any(not trace.spaces.entry(space).wild for space in moving):
        raise trace.fail(node, "pooling over a hidden axis:")
    for space in moving:  # a table's axes no units met yet (a position embedding resized as
        trace.spaces.fix(space)  # an image, PVT, BEiT): positions, which stay as they are
    return (*x[:2], *(Free(s) for s in shape[2:]))


# F.pad as written, as an exported graph records it (torch._C._nn.pad), and its constant form
PAD_FUNCTIONS = (F.pad, torch._C._nn.pad, torch.constant_pad_nd)


@for_functions(*PAD_FUNCTIONS)
def pad(trace: Trace, node: Node) -> Traced:
    """Padding of the last ``len(pad) / 2`` axes: those padded must hold no hidden units."""
    x = trace.tensor(node)
    widths = trace.arg(node, 1, "pad", ())
    shape = trace.shape(node)
    assert shape is not None
    out = list(x)
    for i in range(len(widths) // 2):  # pairs from the last axis backwards
        k = len(x) - 1 - i
        if tuple(widths[2 * i:2 * i + 2]) == (0, 0):
            continue
        if not isinstance(x[k], Free):
            raise trace.fail(node, "padding of a hidden axis:")
        out[k] = Free(shape[k])
    return tuple(out)


@for_modules(nn.Unfold)
@for_functions(F.unfold)
def unfold(trace: Trace, node: Node) -> Traced:
    """Sliding patches (``nn.Unfold``, a patch embedding or a token's neighbourhood): (B, C, H,
    W) -> (B, C x kernel positions, patches), each channel repeated over its kernel positions,
    channel-major, as a flatten of C x kh x kw repeats it; the spatial axes become patches."""
    x = trace.tensor(node)
    shape, source = trace.shape(node), trace.shape(node.args[0])
    assert shape is not None and source is not None
    if len(x) != 4 or any(not isinstance(d, Free) for d in x[2:]):
        raise trace.fail(node, "unfolding of a hidden axis:")
    channels = trace.resolve(x[1])
    if isinstance(channels, Free):
        return (x[0], Free(shape[1]), Free(shape[2]))
    if not isinstance(channels, Units):
        raise trace.fail(node, "unfolding of heads:")
    positions = shape[1] // source[1]
    return (x[0], Units(tuple(Seg(s.space, s.size, s.repeat * positions) for s in channels.segs)),
            Free(shape[2]))


@for_modules(nn.Fold)
@for_functions(F.fold)
def fold(trace: Trace, node: Node) -> Traced:
    """Patches summed back into an image (``nn.Fold``, unfold's inverse; MobileViT-V2): (B, C x
    kernel positions, patches) -> (B, C, H, W), each channel's kernel positions becoming
    spatial entries of that channel."""
    x = trace.tensor(node)
    shape = trace.shape(node)
    assert shape is not None
    if len(x) != 3 or not isinstance(x[2], Free):
        raise trace.fail(node, "folding of a hidden axis:")
    channels = trace.resolve(x[1])
    spatial_axes = tuple(Free(s) for s in shape[2:])
    if isinstance(channels, Free):
        return (x[0], Free(shape[1]), *spatial_axes)
    positions = channels.size // shape[1]
    if not isinstance(channels, Units) or any(s.repeat % positions for s in channels.segs):
        raise trace.fail(node, "folding of units that are not repeated over the kernel:")
    return (x[0], Units(tuple(Seg(s.space, s.size, s.repeat // positions)
                              for s in channels.segs)), *spatial_axes)

