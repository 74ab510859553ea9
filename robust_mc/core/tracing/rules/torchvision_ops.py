"""torchvision's Swin Transformer hides three functions from ``torch.fx`` (``torch.fx.wrap``): the
window attention, its relative position bias and the patch merging's padding. Each gets the rule
of what it computes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch.fx import Node
from torchvision.models import swin_transformer as swin

from robust_mc.core.tracing.layout import Free, Traced, Units, units
from robust_mc.core.tracing.rulebook import for_functions
from robust_mc.core.tracing.rules.attention import packed_projection

if TYPE_CHECKING:
    from robust_mc.core.tracing.trace import Trace


@for_functions(swin.shifted_window_attention)
def shifted_window_attention(trace: Trace, node: Node) -> Traced:
    """Window attention on (B, H, W, C): a packed projection in heads, a relative position bias
    per head (and Swin V2's per-head logit scale)."""
    x = trace.tensor(node)
    layout = [trace.tensor(node, i, name) for i, name in enumerate(
        ("input", "qkv_weight", "proj_weight", "relative_position_bias"))]
    heads = int(trace.arg(node, 5, "num_heads"))
    qkv_bias, proj_bias, logit_scale = (trace.operand(trace.arg(node, i, name)) for i, name in (
        (9, "qkv_bias"), (10, "proj_bias"), (11, "logit_scale")))
    name = node.name
    out, head_space = packed_projection(trace, node, x[-1], layout[1], qkv_bias, layout[2],
                                        proj_bias, heads, (f"{name}.qkv", f"{name}.proj"))
    per_head = [layout[3][1]] + ([logit_scale[0]] if isinstance(logit_scale, tuple) else [])
    if head_space is not None:
        trace.meet([units(head_space, heads), *per_head], f"'{node.name}'")
    else:
        trace.fix(per_head, None)
    return (*x[:-1], out)


@for_functions(swin._get_relative_position_bias)
def relative_position_bias(trace: Trace, node: Node) -> Traced:
    """(1, heads, N, N) gathered from a (positions, heads) table: one bias per head."""
    table = trace.tensor(node)
    shape = trace.shape(node)
    assert shape is not None
    trace.meet([table[0], Free(table[0].size)], f"'{node.name}'")  # positions are not units
    return (Free(1), table[1], *(Free(s) for s in shape[2:]))


@for_functions(swin._patch_merging_pad)
def patch_merging_pad(trace: Trace, node: Node) -> Traced:
    """(..., H, W, C) -> (..., H/2, W/2, 4C): four neighbours' units side by side."""
    x = trace.tensor(node)
    shape = trace.shape(node)
    assert shape is not None
    channels = trace.resolve(x[-1])
    if not isinstance(channels, Units):
        raise trace.fail(node, "patch merging of an axis that is not hidden units:")
    return (*x[:-3], Free(shape[-3]), Free(shape[-2]), Units(channels.segs * 4))
