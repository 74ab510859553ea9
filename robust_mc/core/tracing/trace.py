"""The walk: follow every tensor of a traced network from the input to the logits, recording which
parameter axes each space of hidden units moves.

Rules (``rules/``) give each operation's output layout; this module holds what they share:
layouts of nodes and parameters, ties between axes that meet, records of parameter axes, and the
activations that define the units of a space (taps). An operation no rule covers stops the trace
with a line naming it, or, with ``partial=True``, leaves every space it touches as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx

from robust_mc.core.tracing import rulebook
from robust_mc.core.tracing.graph import node_args, uniform_along, where_of
from robust_mc.core.tracing.layout import (
    Dim,
    Free,
    Layout,
    Seg,
    Split,
    Traced,
    Units,
    dims_in,
    entry_bounds,
    free_layout,
    is_dim,
    is_moving,
    permutes_alike,
    spaces_of,
    units,
)
from robust_mc.core.tracing.spaces import DOCS, Record, SpaceTable
from robust_mc.errors import UserError


class Unsupported(Exception):
    """An operation without a rule (or with inputs its rule cannot follow)."""


@dataclass
class Trace:
    gm: torch.fx.GraphModule
    partial: bool = False
    spaces: SpaceTable = field(default_factory=SpaceTable)
    layouts: dict[str, Traced] = field(default_factory=dict)
    records: list[tuple[int, Record]] = field(default_factory=list)
    activations: list[str] = field(default_factory=list)  # post-activation outputs: taps
    producers: list[str] = field(default_factory=list)  # layer outputs: fallback taps
    unsupported: list[str] = field(default_factory=list)  # left alone (partial=True)

    def __post_init__(self) -> None:
        self.modules = dict(self.gm.named_modules())
        self.state_names = set(self.gm.state_dict())

    # --- what rules read
    def shape(self, node: Any) -> tuple[int, ...] | None:
        meta = getattr(node, "meta", {}).get("tensor_meta")
        return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None

    def shapes(self, node: Any) -> list[tuple[int, ...]]:
        """The shapes of a node whose value is a tuple of tensors."""
        meta = getattr(node, "meta", {}).get("tensor_meta")
        if meta is None or hasattr(meta, "shape"):  # TensorMetadata is a tuple too
            return []
        return [tuple(m.shape) for m in meta if hasattr(m, "shape")]

    def layout(self, arg: Any) -> Traced:
        return self.layouts.get(arg.name) if isinstance(arg, torch.fx.Node) else None

    def arg(self, node: torch.fx.Node, index: int, name: str, default: Any = None) -> Any:
        """Argument ``index`` (or keyword ``name``) of ``node``; sizes and numbers computed in
        the graph are given as their values."""
        if len(node.args) > index:
            return self.value(node.args[index])
        return self.value(node.kwargs.get(name, default))

    def value(self, obj: Any) -> Any:
        """``obj`` with graph nodes that computed sizes or numbers replaced by their values."""
        if isinstance(obj, torch.fx.Node):
            return obj.meta.get("value", obj)
        if isinstance(obj, slice):
            return slice(self.value(obj.start), self.value(obj.stop), self.value(obj.step))
        if isinstance(obj, (tuple, list)):
            return type(obj)(self.value(o) for o in obj)
        return obj

    def operand(self, arg: Any) -> Layout | None:
        """A tensor argument's layout; None for an absent bias, a number, a tuple of tensors."""
        layout = self.layout(arg)
        if isinstance(layout, tuple) and all(is_dim(d) for d in layout):
            return layout  # type: ignore[return-value]  # every entry is a Dim
        return None

    def tensor(self, node: torch.fx.Node, index: int = 0, name: str = "input") -> Layout:
        layout = self.operand(self.arg(node, index, name))
        if layout is None:
            raise self.fail(node, "operation on a non-tensor")
        return layout

    def module(self, node: torch.fx.Node) -> Any:  # a layer: its attributes vary by kind
        return self.modules[str(node.target)]

    def fail(self, node: torch.fx.Node, what: str) -> Unsupported:
        layer = self.module(node) if node.op == "call_module" else None
        return Unsupported(f"unsupported {what} {where_of(node, layer)} at node '{node.name}'")

    # --- what rules do
    def activation(self, node: torch.fx.Node) -> None:
        self.activations.append(node.name)

    def producer(self, node: torch.fx.Node) -> None:
        self.producers.append(node.name)

    def new_units(self, size: int, producer: str) -> Units:
        return units(self.spaces.new(size, producer), size)

    def cut_at(self, dim: Units, bounds: list[int]) -> Units:
        """``dim`` with its spaces cut so that each entry offset in ``bounds`` falls between
        whole spaces. Raises ValueError where an offset splits a repeated unit."""
        dim = self.resolve(dim)  # type: ignore[assignment]
        start = 0
        for seg in dim.segs:
            end = start + seg.size * seg.repeat
            inner = [x - start for x in bounds if start < x < end]
            if any(x % seg.repeat for x in inner):
                raise ValueError("an offset through a repeated unit")
            self.spaces.cut(seg.space, [x // seg.repeat for x in inner])
            start = end
        return self.resolve(dim)  # type: ignore[return-value]

    def resolve(self, dim: Dim) -> Dim:
        """``dim`` with its spaces replaced by the parts they have been cut into."""
        if not isinstance(dim, Units):
            return dim
        segs = tuple(Seg(leaf, self.spaces.size(leaf), seg.repeat)
                     for seg in dim.segs for leaf in self.spaces.leaves(seg.space))
        return Units(segs)

    def record(self, dim: Dim, name: str, axis: int, groups: int = 1) -> None:
        """Parameter ``name``'s axis ``axis`` holds the units of ``dim``; a tensor outside the
        state dict (a blur filter) cannot move: uniform along the axis it need not, else the
        units stay."""
        if name not in self.state_names and not uniform_along(self.gm, name, axis):
            self.fix([dim], f"'{name}' is not in the state dict and varies along its units")
        elif isinstance(dim, Units) and name in self.state_names:
            offset = 0
            for seg in dim.segs:
                self.records.append((seg.space, Record(name, axis, offset, seg.repeat, groups)))
                offset += seg.size * seg.repeat

    def parameter(self, name: str, shape: tuple[int, ...]) -> Layout:
        """A parameter or buffer as a tensor: each axis a wild space until it meets another (a
        constant outside the state dict only along an axis where its values are all equal)."""
        kept, dims = name in self.state_names, []  # type: bool, list[Dim]
        for axis, size in enumerate(shape):
            if size == 1:
                dims.append(Free(1))
                continue
            fixed = not kept and not uniform_along(self.gm, name, axis)
            space = self.spaces.new(size, name if kept else f"'{name}' (not in the state dict)",
                                    wild=True, fixed=fixed)
            dims.append(units(space, size))
            if kept:
                self.record(dims[-1], name, axis)
        return tuple(dims)

    def module_parameter(self, node: torch.fx.Node, attr: str) -> Layout | None:
        tensor = getattr(self.module(node), attr, None)
        if not isinstance(tensor, torch.Tensor):
            return None
        return self.parameter(f"{node.target}.{attr}", tuple(tensor.shape))

    def block_space(self, part: int) -> int | None:
        block = self.spaces.entry(part).block
        return block[0] if block is not None else None

    def fix(self, dims: Any, why: str | None) -> None:
        for dim in dims_in(dims):  # an axis within heads: whole heads still move
            fix = self.spaces.fix_within if getattr(dim, "role", "") == "inner" else self.spaces.fix
            for space in spaces_of(dim):
                fix(space, why)

    def meet(self, dims: list[Dim], where: str) -> Dim:
        """The axis where ``dims`` meet element by element (broadcast: size-1 axes drop out):
        their units are tied; a hidden axis meeting one that is never permuted is fixed."""
        size = max(d.size for d in dims)
        dims = [d for d in dims if d.size == size] if size > 1 else dims[:1]
        free = [d for d in dims if not is_moving(d)]
        moving = [self.resolve(d) for d in dims if is_moving(d)]
        if not moving:
            return free[0]
        if free:
            self.fix(moving, f"{where}: hidden units meet an axis that is not permuted")
            return free[0]
        first = moving[0]
        for other in moving[1:]:
            self.tie(first, other, where)
        return self.resolve(first)

    def tie(self, a: Dim, b: Dim, where: str) -> None:
        if isinstance(a, Units) and isinstance(b, Units):
            self._tie_units(a, b, where)
        elif isinstance(a, Split) and isinstance(b, Split) and a.role == b.role \
                and len(a.parts) == len(b.parts):
            for pa, pb in zip(a.parts, b.parts, strict=True):
                if a.role == "block":
                    sa, sb = self.block_space(pa), self.block_space(pb)
                    if sa is None or sb is None:
                        self.fix([a, b], f"{where}: heads of a space without heads")
                    else:
                        self.spaces.union(sa, sb, where)
                else:
                    self.spaces.union(pa, pb, where)
        else:
            unit_side, split = (a, b) if isinstance(a, Units) else (b, a)
            if isinstance(unit_side, Units) and isinstance(split, Split) \
                    and split.role == "block" and len(split.parts) == 1 \
                    and len(unit_side.segs) == 1 and unit_side.segs[0].repeat == 1:
                block = self.block_space(split.parts[0])  # one value per head
                if block is not None:
                    self.spaces.union(unit_side.segs[0].space, block, where)
                    return
            if isinstance(unit_side, Units) and isinstance(split, Split) \
                    and split.role == "inner" and self._is_wild_axis(unit_side):
                self._share_within(unit_side.segs[0].space, split)  # one value per unit
                return
            self.fix([a, b], f"{where}: units of a head meet units of another kind")

    def _tie_units(self, a: Units, b: Units, where: str) -> None:
        a, b = self.resolve(a), self.resolve(b)  # type: ignore[assignment]
        assert isinstance(a, Units) and isinstance(b, Units)
        for wild, other in ((a, b), (b, a)):
            if any(s.repeat > 1 for s in other.segs) and self._is_wild_axis(wild):
                self._substitute(wild.segs[0].space, other)
                return
        bounds = sorted(set(entry_bounds(a)) | set(entry_bounds(b)))
        try:  # both sides run through the same boundaries
            a, b = self.cut_at(a, bounds), self.cut_at(b, bounds)
        except ValueError:
            raise UserError(f"permutation tracing: {where} meets units repeated "
                            f"differently; {DOCS}") from None
        a, b = self.resolve(a), self.resolve(b)  # type: ignore[assignment]
        assert isinstance(a, Units) and isinstance(b, Units)
        for sa, sb in zip(a.segs, b.segs, strict=True):
            if sa.repeat != sb.repeat:
                raise UserError(f"permutation tracing: {where} meets units repeated "
                                f"differently; {DOCS}")
            self.spaces.union(sa.space, sb.space, where)

    def _is_wild_axis(self, dim: Units) -> bool:
        return (len(dim.segs) == 1 and dim.segs[0].repeat == 1
                and self.spaces.entry(dim.segs[0].space).wild
                and self.spaces.entry(dim.segs[0].space).children is None)

    def _substitute(self, wild: int, dim: Units) -> None:
        """A parameter axis meeting units repeated over positions (a linear layer after a
        flatten): its records take the units' layout, repeats included."""
        def moved(record: Record) -> list[tuple[int, Record]]:
            out, offset = [], record.offset
            for seg in dim.segs:
                out.append((seg.space, Record(record.name, record.axis, offset, seg.repeat,
                                              record.groups)))
                offset += seg.size * seg.repeat
            return out

        self._dissolve(wild, moved)

    def _share_within(self, wild: int, split: Split) -> None:
        """A parameter broadcast over heads along the units within each head (a per-dimension
        query/key norm): every head's units take one order, which the parameter follows."""
        self._dissolve(wild, lambda record: [
            (part, Record(record.name, record.axis, within=split.block_size))
            for part in split.parts])
        for part in split.parts:
            self.spaces.entry(part).shared = True

    def dissolve_grouped(self, wild: int, channels: int, groups: int) -> None:
        """The records of wild space ``wild`` (a computed grouped weight's input axis) moved to
        space ``channels``, within ``groups`` groups: each row's order follows its group."""
        self._dissolve(wild, lambda record: [
            (channels, Record(record.name, record.axis, groups=groups))])

    def _dissolve(self, wild: int, moved: Callable[[Record], list[tuple[int, Record]]]) -> None:
        """The records of wild space ``wild`` replaced by ``moved(record)``; the wild space
        itself is left behind."""
        root = self.spaces.find(wild)
        records = []
        for space, record in self.records:
            records.extend(moved(record) if self.spaces.find(space) == root
                           else [(space, record)])
        self.records = records
        self.spaces.entries[root].fixed = True

    def broadcast(self, layouts: list[Layout], rank: int, where: str) -> Layout:
        """Element-wise meeting of tensors of ``layouts`` (aligned on their last axes)."""
        out: list[Dim] = []
        for axis in range(rank):
            dims = [layout[len(layout) - rank + axis] for layout in layouts
                    if len(layout) - rank + axis >= 0]
            out.append(self.meet(dims, where))
        return tuple(out)

    # --- the walk
    def run(self) -> None:
        for node in self.gm.graph.nodes:
            try:
                self.layouts[node.name] = self.visit(node)
            except Unsupported as exc:
                if not self.partial:
                    raise UserError(f"permutation tracing: {exc}; {DOCS} "
                                    f"(--partial-alignment leaves it alone)") from None
                self.layouts[node.name] = self.leave_alone(node, str(exc))

    def leave_alone(self, node: torch.fx.Node, why: str) -> Traced:
        """``--partial-alignment``: every space ``node`` touches stays as it is."""
        for arg in node_args((node.args, node.kwargs)):
            self.fix(self.layout(arg), None)
        self.unsupported.append(why)
        return free_layout(node.meta.get("tensor_meta"))

    def visit(self, node: torch.fx.Node) -> Traced:
        shape = self.shape(node)
        if node.op == "placeholder":
            if shape is None:
                return None
            dims: list[Dim] = [Free(s) for s in shape]
            if len(shape) > 1:
                dims[1] = units(self.spaces.new(shape[1], "input", fixed=True), shape[1])
            return tuple(dims)
        if node.op == "output":
            for arg in node_args((node.args, node.kwargs)):
                self.fix(self.layout(arg), None)
            return None
        if node.op == "get_attr":
            if shape is None:
                return None
            if not node.meta["tensor_meta"].dtype.is_floating_point:  # an index, not weights
                return tuple(Free(s) for s in shape)
            return self.parameter(str(node.target), shape)
        if shape is None and not self.shapes(node):
            return None  # sizes, shapes and other non-tensor values
        if node.op == "call_module":
            module = self.module(node)
            rule = rulebook.module_rule(module)
            fallback = (lambda t: module(t))  # noqa: E731
        elif node.op == "call_method":
            rule = rulebook.METHOD_RULES.get(str(node.target))
            fallback = self.call_of(node)
        else:
            rule = rulebook.FUNCTION_RULES.get(node.target)
            fallback = self.call_of(node)
        if rule is not None:
            try:
                return rule(self, node)
            except (Unsupported, UserError):
                raise
            except Exception as exc:  # noqa: BLE001 - arguments in a form the rule does not know
                raise self.fail(node, f"arguments ({type(exc).__name__}: {exc}) of") from None
        if self.elementwise_alike(node, fallback):  # e.g. a custom activation
            self.activation(node)
            return self.tensor(node)
        if node.op != "call_module" and all(isinstance(d, Free) for a in node_args(
                (node.args, node.kwargs)) for d in dims_in(self.layout(a))):
            return free_layout(node.meta.get("tensor_meta"))  # no units in: none out (masks)
        raise self.fail(node, "operation" if node.op != "call_module" else "layer")

    def call_of(self, node: torch.fx.Node) -> Any:
        """``node``'s operation as a function of its first argument (None if another argument
        is a tensor of the graph)."""
        rest = list(node.args[1:])
        if node_args((rest, node.kwargs)):
            return None
        if node.op == "call_method":
            return lambda t: getattr(t, str(node.target))(*rest, **node.kwargs)
        return lambda t: node.target(t, *rest, **node.kwargs)  # type: ignore[operator]

    def elementwise_alike(self, node: torch.fx.Node, fn: Any) -> bool:
        """Whether ``fn`` (an operation without a rule, such as a custom ``autograd.Function``
        activation) acts on every unit alike: its output keeps the input's shape and permuting
        the input along each hidden axis permutes the output the same way (checked on a random
        input)."""
        arg = node.args[0] if node.args else None
        in_shape, layout = self.shape(arg), self.layout(arg)
        if fn is None or in_shape is None or self.shape(node) != in_shape \
                or not isinstance(layout, tuple):
            return False
        device = next(iter(self.gm.parameters()), torch.empty(0)).device
        return permutes_alike(fn, in_shape, layout, device)
