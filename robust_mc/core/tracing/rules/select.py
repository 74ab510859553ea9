"""Taking tensors apart and putting them together: indexing and slicing, ``unbind``, ``chunk``
and ``split`` (a packed query/key/value), ``cat`` (along tokens: a class token; along features:
dense blocks) and ``stack``. Slicing part of a hidden axis cuts its spaces there; taking one unit
of a hidden axis leaves that space as it is."""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING

import torch
import torch.fx
from torch.fx import Node

from robust_mc.core.tracing.layout import Dim, Free, Layout, Split, Traced, Units
from robust_mc.core.tracing.rulebook import for_functions, for_methods

if TYPE_CHECKING:
    from robust_mc.core.tracing.trace import Trace


def slice_units(trace: Trace, dim: Units, start: int, stop: int) -> Units:
    """Entries ``[start, stop)`` of a hidden axis, its spaces cut at both ends (ValueError
    where an end splits a repeated unit)."""
    dim = trace.cut_at(dim, [start, stop])
    out, offset = [], 0
    for seg in dim.segs:
        if start <= offset and offset + seg.size * seg.repeat <= stop:
            out.append(seg)
        offset += seg.size * seg.repeat
    return Units(tuple(out))


def _pieces(trace: Trace, node: Node, dim: Dim, sizes: list[int]) -> list[Dim]:
    """``dim`` cut into consecutive pieces of ``sizes`` entries."""
    if isinstance(dim, Free):
        return [Free(s) for s in sizes]
    starts = [sum(sizes[:k]) for k in range(len(sizes) + 1)]
    if isinstance(dim, Units):
        try:
            return [slice_units(trace, dim, a, b) for a, b in zip(starts, starts[1:],
                                                                    strict=False)]
        except ValueError:
            trace.fix([dim], f"'{node.name}': a repeated unit split")
            return [Free(s) for s in sizes]
    if dim.role == "part":
        return [Split(dim.parts[a:b], dim.blocks, dim.block_size, "part")
                for a, b in zip(starts, starts[1:], strict=False)]
    if dim.role == "inner":  # each head's units cut into query, key and value (LeViT, MaxViT):
        trace.fix([dim], f"'{node.name}': each head's units split into parts")  # heads move
        return [Free(s) for s in sizes]
    raise trace.fail(node, "split of heads:")


def _pick_parts(layout: Layout, group: Split, parts: tuple[int, ...]) -> Layout:
    """The layout with ``group``'s axes narrowed to ``parts``."""
    return tuple(d.with_parts(parts) if isinstance(d, Split) and d.same_group(group) else d
                 for d in layout)


def _split_along(trace: Trace, node: Node, layout: Layout, axis: int, sizes: list[int],
                 keep_axis: bool = True) -> tuple[Layout, ...]:
    dim = trace.resolve(layout[axis])
    out = []
    for piece in _pieces(trace, node, dim, sizes):
        new = list(layout)
        if isinstance(dim, Split) and isinstance(piece, Split):  # parts; a head's units: Free
            new = list(_pick_parts(layout, dim, piece.parts))
        if keep_axis:
            new[axis] = piece
        else:
            del new[axis]
        out.append(tuple(new))
    return tuple(out)


@for_functions(torch.unbind)
@for_methods("unbind")
def unbind(trace: Trace, node: Node) -> Traced:
    layout = trace.tensor(node)
    axis = int(trace.arg(node, 1, "dim", 0)) % len(layout)
    return _split_along(trace, node, layout, axis, [1] * layout[axis].size, keep_axis=False)


@for_functions(torch.chunk, torch.split, torch.tensor_split)
@for_methods("chunk", "split", "tensor_split", "split_with_sizes")
def split(trace: Trace, node: Node) -> Traced:
    layout = trace.tensor(node)
    axis = int(trace.arg(node, 2, "dim", 0)) % len(layout)
    return _split_along(trace, node, layout, axis, [s[axis] for s in trace.shapes(node)])


@for_functions(operator.getitem)
def getitem(trace: Trace, node: Node) -> Traced:
    source = trace.layout(node.args[0])
    index = node.args[1]
    if isinstance(source, tuple) and source and not isinstance(source[0], (Free, Units,
                                                                              Split)):
        # an item of a tuple (of unbind, chunk, an attention module)
        return source[index]  # type: ignore[index]  # an int or a slice; fx types it as any
    return _index(trace, node, trace.tensor(node), index)


def _index(trace: Trace, node: Node, layout: Layout, index) -> Layout:
    """The layout of ``tensor[index]`` (basic indexing, and one gathered axis)."""
    shape = trace.shape(node)
    assert shape is not None
    index = trace.value(index)
    items = list(index) if isinstance(index, tuple) else [index]
    consuming = sum(1 for i in items if i is not None and i is not Ellipsis)
    if Ellipsis in items:
        at = items.index(Ellipsis)
        items[at:at + 1] = [slice(None)] * (len(layout) - consuming)
    items += [slice(None)] * (len(layout) - sum(1 for i in items if i is not None))
    out: list[Dim] = []
    axis = 0
    for item in items:
        if item is None:
            out.append(Free(1))
            continue
        dim = trace.resolve(layout[axis])
        axis += 1
        if isinstance(item, int):
            if isinstance(dim, Split) and dim.role == "part":
                layout = _pick_parts(layout, dim, (dim.parts[item],))
                out = list(_pick_parts(tuple(out), dim, (dim.parts[item],)))
            elif not isinstance(dim, Free):
                trace.fix([dim], f"'{node.name}': one hidden unit taken on its own")
        elif isinstance(item, slice):
            out.append(_sliced(trace, node, dim, item))
        elif isinstance(item, torch.fx.Node):  # gathered entries: positions, not units
            trace.meet([dim, Free(dim.size)], f"'{node.name}'")
            index_shape = trace.shape(item) or ()
            out.extend(Free(s) for s in index_shape)
        else:
            raise trace.fail(node, f"index {item!r} in")
    if len(out) != len(shape):
        raise trace.fail(node, "indexing")
    return tuple(Free(s) if isinstance(d, Free) else d for d, s in zip(out, shape, strict=True))


def _sliced(trace: Trace, node: Node, dim: Dim, item: slice) -> Dim:
    start, stop, step = item.indices(dim.size)
    if (start, stop, step) == (0, dim.size, 1):
        return dim
    if isinstance(dim, Free):
        return Free(len(range(start, stop, step)))
    if isinstance(dim, Units) and step == 1:
        try:
            return slice_units(trace, dim, start, stop)
        except ValueError:
            pass
    trace.fix([dim], f"'{node.name}': a strided slice of hidden units")
    return Free(len(range(start, stop, step)))


@for_methods("select")
@for_functions(torch.select)
def select(trace: Trace, node: Node) -> Traced:
    layout = trace.tensor(node)
    axis = int(trace.arg(node, 1, "dim")) % len(layout)
    index = int(trace.arg(node, 2, "index"))
    items: list = [slice(None)] * axis + [index]
    return _index(trace, node, layout, tuple(items))


@for_methods("narrow")
@for_functions(torch.narrow)
def narrow(trace: Trace, node: Node) -> Traced:
    layout = trace.tensor(node)
    axis = int(trace.arg(node, 1, "dim")) % len(layout)
    start, length = int(trace.arg(node, 2, "start")), int(trace.arg(node, 3, "length"))
    items: list = [slice(None)] * axis + [slice(start, start + length)]
    return _index(trace, node, layout, tuple(items))


@for_functions(torch.cat, torch.concat, torch.concatenate)
def cat(trace: Trace, node: Node) -> Traced:
    layouts = _tensors(trace, node, "concatenation")
    rank = len(layouts[0])
    axis = int(trace.arg(node, 1, "dim", 0)) % rank
    out: list[Dim] = []
    for k in range(rank):
        dims = [trace.resolve(layout[k]) for layout in layouts]
        if k != axis:
            out.append(trace.meet(dims, f"'{node.name}'"))
        elif all(isinstance(d, Free) for d in dims):
            out.append(Free(sum(d.size for d in dims)))
        elif all(isinstance(d, Units) for d in dims):
            out.append(Units(tuple(s for d in dims for s in d.segs)))  # type: ignore[union-attr]
        else:
            trace.fix(dims, f"'{node.name}': hidden units concatenated with other entries")
            out.append(Free(sum(d.size for d in dims)))
    return tuple(out)


@for_functions(torch.stack)
def stack(trace: Trace, node: Node) -> Traced:
    layouts = _tensors(trace, node, "stack")
    rank = len(layouts[0])
    axis = int(trace.arg(node, 1, "dim", 0)) % (rank + 1)
    out = [trace.meet([layout[k] for layout in layouts], f"'{node.name}'") for k in range(rank)]
    out.insert(axis, Free(len(layouts)))
    return tuple(out)


@for_methods("index_select")
@for_functions(torch.index_select)
def index_select(trace: Trace, node: Node) -> Traced:
    layout = list(trace.tensor(node))
    axis = int(trace.arg(node, 1, "dim")) % len(layout)
    trace.meet([layout[axis], Free(layout[axis].size)], f"'{node.name}'")
    shape = trace.shape(node)
    assert shape is not None
    layout[axis] = Free(shape[axis])
    return tuple(layout)


def _tensors(trace: Trace, node: Node, what: str) -> list[Layout]:
    """The layouts of a sequence of tensors (``cat``'s and ``stack``'s first argument)."""
    layouts = [trace.operand(t) for t in trace.arg(node, 0, "tensors")]
    tensors = [layout for layout in layouts if layout is not None]
    if not tensors or len(tensors) < len(layouts):
        raise trace.fail(node, f"{what} of non-tensors:")
    return tensors
