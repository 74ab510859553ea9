"""Axis rearrangements: ``permute``/``transpose`` move axes with what they hold; ``reshape``,
``view``, ``flatten`` and ``unflatten`` merge and split axes. Spatial axes merge freely (patches
into tokens); a feature axis flattened with spatial axes after it repeats each unit; a feature
axis split in two is grouped (heads x units per head), split in three into parts of groups (the
query, key and value of a packed projection, each in heads); and the axes of a split merge back
into the feature axis they came from, in that order only (a channel shuffle's other order is left
as it is, noted in ``spec.fixed``)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.fx import Node

from robust_mc.core.tracing.layout import Dim, Free, Layout, Seg, Split, Traced, Units, is_dim
from robust_mc.core.tracing.rulebook import for_functions, for_methods, for_modules

ROLES = ("part", "block", "inner")

if TYPE_CHECKING:
    from robust_mc.core.tracing.trace import Trace


def _axes(node, first: int) -> list:
    """Axis arguments given as separate values or one sequence."""
    args = list(node.args[first:])
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        return list(args[0])
    return args or list(node.kwargs.get("dims", node.kwargs.get("dim", ())))


@for_functions(torch.permute)
@for_methods("permute")
def permute(trace: Trace, node: Node) -> Traced:
    layout = trace.tensor(node)
    order = [int(a) % len(layout) for a in _axes(node, 1)]
    return tuple(layout[a] for a in order)


@for_functions(torch.transpose, torch.swapaxes, torch.swapdims)
@for_methods("transpose", "swapaxes", "swapdims")
def transpose(trace: Trace, node: Node) -> Traced:
    layout = list(trace.tensor(node))
    a = int(trace.arg(node, 1, "dim0")) % len(layout)
    b = int(trace.arg(node, 2, "dim1")) % len(layout)
    layout[a], layout[b] = layout[b], layout[a]
    return tuple(layout)


@for_functions(torch.t)
@for_methods("t")
def t(trace: Trace, node: Node) -> Traced:
    return tuple(reversed(trace.tensor(node)))


@for_functions(torch.movedim, torch.moveaxis)
@for_methods("movedim", "moveaxis")
def movedim(trace: Trace, node: Node) -> Traced:
    layout = trace.tensor(node)
    source, dest = trace.arg(node, 1, "source"), trace.arg(node, 2, "destination")
    source = [source] if isinstance(source, int) else list(source)
    dest = [dest] if isinstance(dest, int) else list(dest)
    order = list(range(len(layout)))
    moved = [s % len(layout) for s in source]
    rest = [a for a in order if a not in moved]
    out: list[int | None] = [None] * len(layout)
    for s, d in zip(moved, dest, strict=True):
        out[d % len(layout)] = s
    it = iter(rest)
    return tuple(layout[o if o is not None else next(it)] for o in out)


@for_functions(getattr)
def attribute(trace: Trace, node: Node) -> Traced:
    source = trace.layout(node.args[0])
    if node.args[1] in ("values", "indices") and isinstance(source, tuple) and source \
            and not is_dim(source[0]):  # a reduction's (values, indices), by name
        return source[0 if node.args[1] == "values" else 1]  # type: ignore[return-value]
    layout = trace.tensor(node)
    if node.args[1] == "T":
        return tuple(reversed(layout))
    if node.args[1] == "mT":
        return (*layout[:-2], layout[-1], layout[-2])
    raise trace.fail(node, f"tensor attribute {node.args[1]!r}:")


@for_functions(torch.reshape, torch.flatten, torch.unflatten, torch.squeeze, torch.unsqueeze,
               torch.atleast_2d)
@for_methods("reshape", "view", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as",
             "reshape_as")
@for_modules(nn.Flatten, nn.Unflatten)
def reshape(trace: Trace, node: Node) -> Traced:
    arg = node.args[0]
    layout, in_shape, out_shape = trace.tensor(node), trace.shape(arg), trace.shape(node)
    assert in_shape is not None and out_shape is not None
    return reshaped(trace, node, layout, in_shape, out_shape)


def reshaped(trace: Trace, node: Node, layout: Layout, in_shape, out_shape) -> Layout:
    """The layout after viewing a tensor of ``in_shape`` as ``out_shape`` (same entries, same
    order): axes are matched in runs of equal size, each run merged, split or copied."""
    ins = [(d, s) for d, s in zip(layout, in_shape, strict=True) if s != 1]
    outs = [i for i, s in enumerate(out_shape) if s != 1]
    result: list[Dim] = [Free(1)] * len(out_shape)
    i = j = 0
    while i < len(ins) or j < len(outs):
        run_in, run_out = [ins[i]], [outs[j]]
        i, j = i + 1, j + 1
        while math.prod(s for _, s in run_in) != math.prod(out_shape[o] for o in run_out):
            if math.prod(s for _, s in run_in) < math.prod(out_shape[o] for o in run_out):
                run_in.append(ins[i])
                i += 1
            else:
                run_out.append(outs[j])
                j += 1
        if len(run_in) == 1 and isinstance(run_in[0][0], Units) and len(run_out) == 2 \
                and run_out[1] - run_out[0] == 2:  # (parts, 1 head, units): a head axis of one
            run_out.insert(1, run_out[0] + 1)
        dims = _run(trace, node, [d for d, _ in run_in], [out_shape[o] for o in run_out])
        for o, dim in zip(run_out, dims, strict=True):
            result[o] = dim
    return tuple(result)


def _run(trace: Trace, node: Node, dims: list[Dim], sizes: list[int]) -> list[Dim]:
    if len(dims) == 1 and len(sizes) == 1:
        return dims
    if all(isinstance(d, Free) for d in dims):
        return [Free(s) for s in sizes]
    if len(sizes) == 1:
        return [_merge(trace, node, dims)]
    if len(dims) == 1:
        return _split(trace, node, trace.resolve(dims[0]), sizes)
    return _regroup(trace, node, dims, sizes)


def _atoms(trace: Trace, dim: Dim) -> list[Dim]:
    """``dim`` taken apart: units merged with positions before them (``tiles``) and after them
    (``repeat``) become those positions and the units themselves."""
    dim = trace.resolve(dim)
    if not isinstance(dim, Units) or len({s.repeat for s in dim.segs}) != 1:
        return [dim]
    segs = dim.segs
    period = next(k for k in range(1, len(segs) + 1)
                  if len(segs) % k == 0 and segs == segs[:k] * (len(segs) // k))
    repeat, tiles = segs[0].repeat, len(segs) // period
    units = Units(tuple(Seg(s.space, s.size) for s in segs[:period]))
    return [*([Free(tiles)] if tiles > 1 else []), units, *([Free(repeat)] if repeat > 1 else [])]


def _regroup(trace: Trace, node: Node, dims: list[Dim], sizes: list[int]) -> list[Dim]:
    """A reshape that merges some axes and splits others (MobileViT's patches: channels moved
    into the batch axis and back): the axes taken apart into units and positions, then
    regrouped in order; positions may be split, units only kept whole."""
    atoms = [a for d in dims for a in _atoms(trace, d)]
    out: list[Dim] = []
    for size in sizes:
        group: list[Dim] = []
        have = 1
        while have < size and atoms:
            atom = atoms.pop(0)
            if have * atom.size > size:  # a position axis split across this axis and the next
                if not isinstance(atom, Free) or size % have or atom.size % (size // have):
                    raise trace.fail(node, "reshape that both merges and splits hidden axes:")
                atoms.insert(0, Free(atom.size // (size // have)))
                atom = Free(size // have)
            group.append(atom)
            have *= atom.size
        if have != size:
            raise trace.fail(node, "reshape that both merges and splits hidden axes:")
        out.extend(_run(trace, node, group, [size]))
    return out


def _heads_of_another_part(trace: Trace, inner: list[Dim]) -> bool:
    """Heads of one part merged with the units within heads of another (attention computed
    over units, as cross-covariance attention does): whole when both parts' heads are one
    space, grouped alike."""
    if len(inner) != 2 or not all(isinstance(d, Split) and len(d.parts) == 1 for d in inner):
        return False
    heads, units = inner
    assert isinstance(heads, Split) and isinstance(units, Split)
    if (heads.role, units.role) != ("block", "inner") or (heads.blocks, heads.block_size) != (
            units.blocks, units.block_size):
        return False
    a, b = trace.block_space(heads.parts[0]), trace.block_space(units.parts[0])
    return a is not None and b is not None and trace.spaces.find(a) == trace.spaces.find(b)


def _units_moved_by_heads(trace: Trace, node: Node, heads: Split, within: int) -> Seg:
    """A new space for heads merged with ``within`` entries each that are no hidden units
    (the parts of a head's units split apart, kept in their order): blocked by the heads'
    space, fixed within."""
    units = trace.new_units(heads.blocks * within, node.name).segs[0]
    space = trace.block_space(heads.parts[0])
    blocks = trace.spaces.block(units.space, heads.blocks, node.name)
    if space is None or blocks is None:
        trace.fix([Units((units,))], f"'{node.name}': heads merged with units of no head")
    else:
        trace.spaces.union(blocks, space, f"'{node.name}'")
        trace.spaces.fix_within(units.space, f"'{node.name}': units kept in their heads' order")
    return units


def _wild(trace: Trace, dim: Dim) -> bool:
    """Axes of a parameter that have met no hidden units yet (a kernel's positions)."""
    return isinstance(dim, Units) and all(
        trace.spaces.entry(seg.space).wild for seg in trace.resolve(dim).segs)  # type: ignore[union-attr]


def _merge(trace: Trace, node: Node, dims: list[Dim]) -> Dim:
    moving = [k for k, d in enumerate(dims) if not isinstance(d, Free)]
    if len(moving) > 1 and all(_wild(trace, dims[k]) for k in moving[1:]):
        # a parameter reshaped (a weight standardised in forward): its first axis keeps the
        # units, the axes merged after it are positions and stay
        trace.fix([dims[k] for k in moving[1:]], None)
        dims = [Free(d.size) if k in moving[1:] else d for k, d in enumerate(dims)]
        moving = moving[:1]
    first, last = moving[0], moving[-1]
    tiles = math.prod(d.size for d in dims[:first])  # positions before the units: tiled
    repeat = math.prod(d.size for d in dims[last + 1:])
    inner = dims[first:last + 1]
    if len(inner) == 1 and isinstance(inner[0], Units):
        segs = trace.resolve(inner[0]).segs  # type: ignore[union-attr]
    elif len(inner) == 1 and isinstance(inner[0], Split) and inner[0].role == "block" \
            and repeat > 1:  # heads merged with what each holds, kept in its order
        return Units((_units_moved_by_heads(trace, node, inner[0], repeat),) * tiles)
    elif all(isinstance(d, Split) and d.same_group(inner[0]) for d in inner):
        roles = tuple(d.role for d in inner)  # type: ignore[union-attr]
        group: Split = inner[0]  # type: ignore[assignment]
        whole = roles in (("block", "inner"), ("part", "block", "inner")) or (
            roles == ("part", "inner") and group.blocks == 1)
        if not whole:  # e.g. a channel shuffle: units in another order
            trace.fix(inner, f"'{node.name}': hidden units merged in another order")
            return Free(math.prod(d.size for d in dims))
        segs = tuple(Seg(p, trace.spaces.size(p)) for p in group.parts)
    elif _heads_of_another_part(trace, inner):  # XCiT: attention over units, v's heads
        segs = (Seg(inner[1].parts[0], trace.spaces.size(inner[1].parts[0])),)  # type: ignore[union-attr]
    else:
        raise trace.fail(node, "merge of hidden axes:")
    return Units(tuple(Seg(s.space, s.size, s.repeat * repeat) for s in segs) * tiles)


def _split(trace: Trace, node: Node, dim: Dim, sizes: list[int]) -> list[Dim]:
    if not isinstance(dim, Units):
        raise trace.fail(node, "reshape of heads:")
    repeats = {s.repeat for s in dim.segs}
    if len(repeats) == 1 and (repeat := repeats.pop()) > 1:  # unflatten back to positions
        for k in range(1, len(sizes)):
            if math.prod(sizes[k:]) == repeat:
                plain = Units(tuple(Seg(s.space, s.size) for s in dim.segs))
                lead = [plain] if k == 1 else _split(trace, node, plain, sizes[:k])
                return [*lead, *(Free(s) for s in sizes[k:])]
        raise trace.fail(node, "reshape of flattened units:")
    if len(repeats) > 1:
        raise trace.fail(node, "reshape of flattened units:")
    where = node.name
    if len(sizes) == 2:
        parts, blocks = (len(dim.segs), 1) if len(dim.segs) == sizes[0] else (1, sizes[0])
    elif len(sizes) == 3:
        parts, blocks = sizes[0], sizes[1]
    else:
        raise trace.fail(node, f"split of a hidden axis into {len(sizes)} axes:")
    block_size = sizes[-1]
    if len(dim.segs) == 1 and parts > 1:  # one packed projection: its parts
        space = dim.segs[0].space
        trace.spaces.cut(space, [k * blocks * block_size for k in range(1, parts)])
        dim = trace.resolve(dim)
    assert isinstance(dim, Units)
    if len(dim.segs) != parts or any(s.size != blocks * block_size for s in dim.segs):
        trace.fix([dim], f"'{where}': a hidden axis split across its spaces")
        return [Free(s) for s in sizes]
    spaces = tuple(s.space for s in dim.segs)
    if blocks > 1:
        grouped = [trace.spaces.block(s, blocks, where) for s in spaces]
        if any(g is None for g in grouped):
            trace.fix([dim], None)
            return [Free(s) for s in sizes]
    roles = ROLES if len(sizes) == 3 else (("part", "inner") if blocks == 1 else ("block",
                                                                                   "inner"))
    return [Split(spaces, blocks, block_size, role) for role in roles]  # type: ignore[arg-type]


@for_methods("expand", "expand_as", "broadcast_to")
@for_functions(torch.broadcast_to)
def expand(trace: Trace, node: Node) -> Traced:
    """Size-1 axes broadcast: what they hold does not change."""
    return _resized(trace, node, None)


@for_methods("repeat", "tile")
@for_functions(torch.tile)
def repeat(trace: Trace, node: Node) -> Traced:
    """Axes tiled: tiled positions stay positions; tiled units are left as they are."""
    return _resized(trace, node, f"'{node.name}': hidden units tiled")


def _resized(trace: Trace, node: Node, tiled: str | None) -> Layout:
    layout, shape = trace.tensor(node), trace.shape(node)
    assert shape is not None
    lead = len(shape) - len(layout)
    dims: list[Dim] = [Free(s) for s in shape[:lead]]
    for dim, size in zip(layout, shape[lead:], strict=True):
        if dim.size != size and tiled is not None:
            trace.fix([dim], tiled)
        dims.append(dim if dim.size == size else Free(size))
    return tuple(dims)


@for_functions(torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like,
               torch.rand_like, torch.randn_like)
def like(trace: Trace, node: Node) -> Traced:
    """A tensor of the input's shape whose entries do not depend on the units: any permutation
    leaves it as it is, so it takes the input's layout."""
    return trace.tensor(node)


@for_functions(torch.tensor, torch.as_tensor, torch.arange, torch.zeros, torch.ones, torch.full,
               torch.empty, torch.linspace, torch.eye, torch.rand, torch.randn, torch.randint)
def created(trace: Trace, node: Node) -> Traced:
    """A tensor made in the forward pass from numbers (an index, a mask): no units."""
    return tuple(Free(s) for s in trace.shape(node) or ())
