"""Products of tensors and attention.

``matmul``, ``@``, ``bmm`` and two-operand ``einsum`` are one rule: an index summed over ties the
units of both operands on it (the query and key units within a head, for ``q @ k^T``); an index
kept in the output and shared by both (the heads) ties their spaces too, so heads are permuted as
wholes, the same for query, key and value. ``scaled_dot_product_attention`` and
``nn.MultiheadAttention`` (a packed query/key/value projection) are written in those terms."""

from __future__ import annotations

import operator
import string
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Node

from robust_mc.core.tracing.layout import Dim, Free, Layout, Traced, Units, units
from robust_mc.core.tracing.rulebook import for_functions, for_methods, for_modules
from robust_mc.core.tracing.rules.layers import open_space

if TYPE_CHECKING:
    from robust_mc.core.tracing.trace import Trace


def contract(trace: Trace, node: Node, operands: list[Layout], subscripts: list[str],
             output: str) -> Layout:
    """The layout of ``einsum(f"{','.join(subscripts)}->{output}", *operands)``."""
    where = f"'{node.name}'"
    out: list[Dim] = []
    for letter in dict.fromkeys("".join(subscripts)):
        dims = [layout[sub.index(letter)] for layout, sub in zip(operands, subscripts,
                                                                  strict=True)
                if letter in sub]
        # the last operand first: its grouping of heads and units names the output's
        met = trace.meet(list(reversed(dims)), where)
        if letter in output:
            out.append(met)
            if len(dims) == 1 and isinstance(met, Units):  # x @ W: W's columns are new units
                for seg in met.segs:
                    trace.spaces.produce(seg.space, node.name)
    order = [letter for letter in dict.fromkeys("".join(subscripts)) if letter in output]
    return tuple(out[order.index(letter)] for letter in output)


def _matmul_subscripts(rank_a: int, rank_b: int) -> tuple[str, str, str]:
    batch = string.ascii_uppercase[:max(rank_a, rank_b) - 2]
    return (batch[len(batch) - (rank_a - 2):] + "nk", batch[len(batch) - (rank_b - 2):] + "km",
            batch + "nm")


@for_functions(torch.matmul, operator.matmul, torch.bmm)
@for_methods("matmul", "bmm", "__matmul__")
def matmul(trace: Trace, node: Node) -> Traced:
    a, b = trace.tensor(node, 0), trace.tensor(node, 1, "other")
    if len(a) < 2 or len(b) < 2:
        raise trace.fail(node, "product with a vector:")
    sa, sb, out = _matmul_subscripts(len(a), len(b))
    return contract(trace, node, [a, b], [sa, sb], out)


@for_functions(torch.einsum)
def einsum(trace: Trace, node: Node) -> Traced:
    equation = str(node.args[0]).replace(" ", "")
    operands = node.args[1:]
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    found = [trace.operand(o) for o in operands]
    layouts = [x for x in found if x is not None]
    if "->" not in equation or len(layouts) < len(found):
        raise trace.fail(node, "einsum without an explicit output:")
    inputs, output = equation.split("->")
    subscripts = inputs.split(",")
    spare = iter(c for c in string.ascii_uppercase if c not in equation)
    if "..." in equation:
        width = max(len(x) - len(s.replace("...", "")) for x, s in zip(layouts, subscripts,
                                                                        strict=True))
        ellipsis = "".join(next(spare) for _ in range(width))
        subscripts = [s.replace("...", ellipsis[width - (len(x) - len(s) + 3):])
                      for x, s in zip(layouts, subscripts, strict=True)]
        output = output.replace("...", ellipsis)
    return contract(trace, node, layouts, subscripts, output)


def attention_layout(trace: Trace, node: Node, q: Layout, k: Layout, v: Layout,
                     mask: Layout | None) -> Layout:
    """softmax(q @ k^T + mask) @ v, on (..., tokens, units) tensors."""
    batch = string.ascii_uppercase[:len(q) - 2]
    scores = contract(trace, node, [q, k], [batch + "le", batch + "se"], batch + "ls")
    if mask is not None:
        scores = trace.broadcast([scores, mask], len(scores), f"'{node.name}'")
    return contract(trace, node, [scores, v], [batch + "ls", batch + "sv"], batch + "lv")


@for_functions(F.scaled_dot_product_attention)
def sdpa(trace: Trace, node: Node) -> Traced:
    q, k, v = (trace.tensor(node, i, name) for i, name in enumerate(("query", "key", "value")))
    mask = trace.operand(trace.arg(node, 3, "attn_mask"))
    return attention_layout(trace, node, q, k, v, mask if isinstance(mask, tuple) else None)


def packed_projection(trace: Trace, node: Node, x: Dim, qkv_weight: Layout, qkv_bias: Layout | None,
                      proj_weight: Layout, proj_bias: Layout | None, heads: int,
                      names: tuple[str, str]) -> tuple[Units | Free, int | None]:
    """A packed query/key/value projection of ``x``'s units, ``heads`` heads, and the output
    projection: the query and key rows share one space (q . k within a head is unchanged when
    both are permuted alike), value rows and the output projection's inputs another, and the
    heads of both are permuted as wholes. The output units and the head space."""
    where = f"'{node.name}'"
    trace.meet([x, qkv_weight[1]], where)
    qkv = open_space(trace, node, qkv_weight, qkv_bias, names[0])
    if not isinstance(qkv, Units):
        raise trace.fail(node, "attention of one unit:")
    space = qkv.segs[0].space
    size = trace.spaces.size(space)
    trace.spaces.cut(space, [size // 3, 2 * size // 3])
    query, key, value = trace.spaces.leaves(space)
    trace.spaces.union(query, key, where)
    heads_qk = trace.spaces.block(query, heads, names[0])
    heads_v = trace.spaces.block(value, heads, names[0])
    if heads_qk is not None and heads_v is not None:
        trace.spaces.union(heads_qk, heads_v, where)
    trace.meet([units(value, size // 3), proj_weight[1]], where)
    return open_space(trace, node, proj_weight, proj_bias, names[1]), heads_qk


@for_modules(nn.MultiheadAttention)
def multihead_attention(trace: Trace, node: Node) -> Traced:
    """``nn.MultiheadAttention`` (self-attention: query, key and value from the same units)."""
    attention = trace.module(node)
    if not attention._qkv_same_embed_dim:
        raise trace.fail(node, "attention with separate key and value sizes:")
    inputs = [trace.tensor(node, i, name) for i, name in enumerate(("query", "key", "value"))]
    feature = -1
    x = trace.meet([layout[feature] for layout in inputs], f"'{node.name}'")
    name = str(node.target)
    weight = trace.module_parameter(node, "in_proj_weight")
    proj = trace.parameter(f"{name}.out_proj.weight", tuple(attention.out_proj.weight.shape))
    bias = trace.module_parameter(node, "in_proj_bias")
    proj_bias = (trace.parameter(f"{name}.out_proj.bias", tuple(attention.out_proj.bias.shape))
                 if attention.out_proj.bias is not None else None)
    assert weight is not None
    out, _ = packed_projection(trace, node, x, weight, bias, proj, proj_bias,
                               attention.num_heads, (f"{name}.in_proj", f"{name}.out_proj"))
    return ((*inputs[0][:-1], out), None)  # (output, attention weights: not asked for)
