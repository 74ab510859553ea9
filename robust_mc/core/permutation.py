"""Permutation specs derived from the graph: which tensor axes one hidden-unit permutation acts on.

``trace_permutation_spec(model, example)`` traces ``model`` with ``torch.fx`` and follows the
channel layout of every tensor from the input to the logits. Each convolution or linear layer
opens a new *space* of hidden units; batch norm, activations, pooling and dropout carry a space
unchanged; a residual ``+`` ties the spaces of its operands into one; ``torch.cat`` lays spaces
side by side (block-structured); a flatten after pooling repeats each unit over the pooled
positions. The network input and the logits are never permuted: any space tied to them is fixed.

Each space lists the (state-dict name, axis) pairs that its permutation acts on, and its activation
*taps*: post-activation outputs (or, where a space has none, the outputs of its producers), which
define the unit statistics used by correlation alignment. Anything the tracer does not understand
is an error naming the node, never a silently wrong permutation.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from robust_mc.errors import UserError
from robust_mc.models.normalize import Normalize

DOCS = "see 'Alignment: supported operations' in the README"

ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid,
                      nn.Tanh, nn.Hardswish, nn.Hardtanh, nn.Softplus, nn.Mish, nn.PReLU)
PASS_MODULES = (nn.Dropout, nn.Dropout2d, nn.Identity, nn.MaxPool2d, nn.AvgPool2d,
                nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.MaxPool1d, nn.AvgPool1d, Normalize)
ACTIVATION_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu,
                        torch.sigmoid, torch.tanh, F.hardswish, F.softplus, F.mish, torch.relu_}
ACTIVATION_METHODS = {"relu", "relu_", "sigmoid", "tanh"}
PASS_FUNCTIONS = {F.dropout, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d,
                  F.adaptive_max_pool2d, torch.clone}
PASS_METHODS = {"contiguous", "clone", "detach", "float", "to", "type_as", "dropout"}
ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add, operator.mul, operator.imul, torch.mul}
ADD_METHODS = {"add", "add_", "mul", "mul_"}
REDUCE_FUNCTIONS = {torch.mean, torch.sum, torch.amax}
REDUCE_METHODS = {"mean", "sum", "amax"}
FLATTEN_FUNCTIONS = {torch.flatten}
FLATTEN_METHODS = {"flatten", "view", "reshape"}


@dataclass(frozen=True)
class Axis:
    """The part of one tensor axis that a space's permutation acts on.

    Units occupy ``[offset, offset + size * repeat)`` of axis ``axis``; each unit spans ``repeat``
    consecutive entries (a flatten of C x H x W repeats each channel H*W times).
    """

    name: str
    axis: int
    offset: int = 0
    repeat: int = 1


@dataclass(frozen=True)
class Tap:
    """An activation defining a space's units: channels ``[offset, offset + size)`` of ``node``."""

    node: str
    offset: int


@dataclass
class Space:
    name: str
    size: int
    axes: list[Axis] = field(default_factory=list)
    taps: list[Tap] = field(default_factory=list)


@dataclass
class PermutationSpec:
    spaces: list[Space]

    def __iter__(self):
        return iter(self.spaces)

    def __len__(self) -> int:
        return len(self.spaces)

    @property
    def tap_nodes(self) -> set[str]:
        return {tap.node for space in self.spaces for tap in space.taps}


@dataclass(frozen=True)
class Segment:
    """A run of ``size`` units of space ``space`` along a tensor's feature axis."""

    space: int
    size: int
    repeat: int = 1


Layout = tuple[Segment, ...]


class _Spaces:
    """Union-find over space ids; a set tied to the input or the logits is fixed."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.fixed: list[bool] = []
        self.size: list[int] = []
        self.producer: list[str] = []

    def new(self, size: int, producer: str, fixed: bool = False) -> int:
        self.parent.append(len(self.parent))
        self.fixed.append(fixed)
        self.size.append(size)
        self.producer.append(producer)
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int, where: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] != self.size[rb]:
            raise UserError(f"permutation tracing: {where} ties spaces of {self.size[ra]} and "
                            f"{self.size[rb]} units; {DOCS}")
        keep, drop = min(ra, rb), max(ra, rb)  # the earlier producer names the space
        self.parent[drop] = keep
        self.fixed[keep] = self.fixed[keep] or self.fixed[drop]

    def fix(self, i: int) -> None:
        self.fixed[self.find(i)] = True


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


def trace_permutation_spec(model: nn.Module, example: torch.Tensor) -> PermutationSpec:
    """Derive the permutable hidden spaces of ``model`` from a forward pass on ``example``.

    Args:
        model: any network ``torch.fx`` can trace (see the README's supported operations).
        example: an input batch (B, C, H, W) in [0, 1]; only its first two images are used.

    Returns:
        A :class:`PermutationSpec`: one space per set of units that must be permuted together
        (residual additions tie spaces), each listing every parameter axis it moves.

    Raises:
        UserError: an operation whose effect on channels is unknown, named by its node.

    Example::

        spec = trace_permutation_spec(model, x[:2])
        permute_model(copy, spec, random_permutation(spec))  # same function, other weights
    """
    gm = trace_graph(model)
    was_training = model.training
    gm.eval()
    device = next(iter(model.parameters()), example).device
    with torch.no_grad():
        ShapeProp(gm).propagate(example[:2].detach().to(device).float())
    model.train(was_training)
    return _SpecBuilder(gm).build()


class _SpecBuilder:
    def __init__(self, gm: torch.fx.GraphModule) -> None:
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.spaces = _Spaces()
        self.layouts: dict[str, Layout | None] = {}
        self.axes: list[tuple[int, Axis]] = []
        self.activations: list[str] = []  # nodes whose outputs are post-activation taps
        self.producers: list[str] = []  # conv/linear/BN/add outputs: fallback taps

    # --- helpers
    def shape(self, node: Any) -> tuple[int, ...] | None:
        meta = getattr(node, "meta", {}).get("tensor_meta")
        return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None

    def layout_of(self, arg: Any) -> Layout | None:
        return self.layouts.get(arg.name) if isinstance(arg, torch.fx.Node) else None

    def fail(self, node: torch.fx.Node, what: str) -> UserError:
        where = node.target if node.op != "call_module" else (
            f"module '{node.target}' ({type(self.modules[str(node.target)]).__name__})")
        return UserError(f"permutation tracing: unsupported {what} {where} at node "
                         f"'{node.name}'; {DOCS}")

    def record(self, layout: Layout, name: str, axis: int) -> None:
        offset = 0
        for seg in layout:
            self.axes.append((seg.space, Axis(name, axis, offset, seg.repeat)))
            offset += seg.size * seg.repeat

    def tensor_input(self, node: torch.fx.Node) -> tuple[torch.fx.Node, Layout]:
        arg = node.args[0]
        layout = self.layout_of(arg)
        if not isinstance(arg, torch.fx.Node) or layout is None:
            raise self.fail(node, "operation on a non-tensor")
        return arg, layout

    # --- the walk
    def build(self) -> PermutationSpec:
        for node in self.gm.graph.nodes:
            self.layouts[node.name] = self.visit(node)
        return self.collect()

    def visit(self, node: torch.fx.Node) -> Layout | None:
        shape = self.shape(node)
        if node.op == "placeholder":
            channels = shape[1] if shape and len(shape) > 1 else 1
            return (Segment(self.spaces.new(channels, "input", fixed=True), channels),)
        if node.op == "output":
            for leaf in _flatten_args(node.args):
                for seg in self.layout_of(leaf) or ():
                    self.spaces.fix(seg.space)
            return None
        if node.op == "get_attr":
            raise self.fail(node, "direct use of a parameter")
        if shape is None:  # sizes, shapes and other non-tensor values
            return None
        if node.op == "call_module":
            return self.visit_module(node, self.modules[str(node.target)], shape)
        return self.visit_function(node, shape)

    def visit_module(self, node: torch.fx.Node, m: nn.Module, shape: tuple[int, ...]) -> Layout:
        name = str(node.target)
        _, layout = self.tensor_input(node)
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            if isinstance(m, nn.Linear) and len(shape) != 2:
                raise self.fail(node, "linear layer on a tensor of more than 2 dims:")
            depthwise = isinstance(m, (nn.Conv1d, nn.Conv2d)) and m.groups > 1
            if depthwise:
                if not (m.groups == m.in_channels == m.out_channels):
                    raise self.fail(node, "grouped convolution")
                self.record(layout, f"{name}.weight", 0)
                if m.bias is not None:
                    self.record(layout, f"{name}.bias", 0)
                return layout
            self.record(layout, f"{name}.weight", 1)
            out = (Segment(self.spaces.new(shape[1], name), shape[1]),)
            self.record(out, f"{name}.weight", 0)
            if m.bias is not None:
                self.record(out, f"{name}.bias", 0)
            self.producers.append(node.name)
            return out
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            for key in ("weight", "bias", "running_mean", "running_var"):
                if getattr(m, key, None) is not None:
                    self.record(layout, f"{name}.{key}", 0)
            self.producers.append(node.name)
            return layout
        if isinstance(m, ACTIVATION_MODULES):
            if isinstance(m, nn.PReLU) and m.num_parameters > 1:
                self.record(layout, f"{name}.weight", 0)
            self.activations.append(node.name)
            return layout
        if isinstance(m, PASS_MODULES):
            return layout
        if isinstance(m, nn.Flatten):
            return self.flatten(node, layout, m.start_dim, shape)
        raise self.fail(node, "layer")

    def visit_function(self, node: torch.fx.Node, shape: tuple[int, ...]) -> Layout:
        target = node.target
        method = target if node.op == "call_method" else None
        if target in ACTIVATION_FUNCTIONS or method in ACTIVATION_METHODS:
            self.activations.append(node.name)
            return self.tensor_input(node)[1]
        if target in PASS_FUNCTIONS or method in PASS_METHODS:
            return self.tensor_input(node)[1]
        if target in ADD_FUNCTIONS or method in ADD_METHODS:
            return self.elementwise(node)
        if target is torch.cat:
            return self.concat(node)
        if target in REDUCE_FUNCTIONS or method in REDUCE_METHODS:
            arg, layout = self.tensor_input(node)
            dims: Any = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
            rank = len(self.shape(arg) or ())
            if not dims or any(d % rank in (0, 1) for d in dims):
                raise self.fail(node, "reduction over the batch or channel axis:")
            return layout
        if target in FLATTEN_FUNCTIONS or method in FLATTEN_METHODS:
            arg, layout = self.tensor_input(node)
            in_shape = self.shape(arg) or ()
            if method in ("view", "reshape") and len(shape) == 2 and shape[0] == in_shape[0]:
                return self.flatten(node, layout, 1, shape, in_shape)
            if method == "flatten" or target is torch.flatten:
                start: Any = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
                return self.flatten(node, layout, int(start), shape, in_shape)
            raise self.fail(node, "reshape")
        raise self.fail(node, "operation")

    def flatten(self, node: torch.fx.Node, layout: Layout, start: int, shape: tuple[int, ...],
                in_shape: tuple[int, ...] | None = None) -> Layout:
        in_shape = in_shape or self.shape(node.args[0]) or ()
        if start != 1:
            raise self.fail(node, f"flatten from dim {start} (only from dim 1):")
        spatial = 1
        for size in in_shape[2:]:
            spatial *= size
        return tuple(Segment(s.space, s.size, s.repeat * spatial) for s in layout)

    def elementwise(self, node: torch.fx.Node) -> Layout:
        """``+`` and ``*`` between tensors: their units meet, so their spaces become one."""
        tensors = [a for a in _flatten_args((node.args, node.kwargs))
                   if self.layout_of(a) is not None]
        if not tensors:
            raise self.fail(node, "operation on non-tensors")
        first = self.layout_of(tensors[0])
        assert first is not None
        for arg in tensors[1:]:
            other = self.layout_of(arg)
            assert other is not None
            if [(s.size, s.repeat) for s in other] != [(s.size, s.repeat) for s in first]:
                raise self.fail(node, "element-wise operation on differently laid out tensors:")
            for a, b in zip(first, other, strict=True):
                self.spaces.union(a.space, b.space, f"'{node.name}'")
        if len(tensors) > 1 and (node.target in (operator.add, operator.iadd, torch.add)
                                 or node.target in ("add", "add_")):
            self.producers.append(node.name)
        return first

    def concat(self, node: torch.fx.Node) -> Layout:
        parts = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        if dim != 1 or not isinstance(parts, (list, tuple)):
            raise self.fail(node, "concatenation other than along channels:")
        layout: list[Segment] = []
        for part in parts:
            seg = self.layout_of(part)
            if seg is None:
                raise self.fail(node, "concatenation of non-tensors:")
            layout.extend(seg)
        return tuple(layout)

    # --- the result
    def collect(self) -> PermutationSpec:
        find = self.spaces.find
        spaces: dict[int, Space] = {}
        for sid, axis in self.axes:
            root = find(sid)
            if self.spaces.fixed[root] or self.spaces.size[root] < 2:
                continue
            space = spaces.setdefault(root, Space(self.spaces.producer[root],
                                                  self.spaces.size[root]))
            if axis not in space.axes:
                space.axes.append(axis)
        # post-activation outputs define the units; a space without any uses its producers
        for candidates in (self.activations, self.producers):
            found: dict[int, list[Tap]] = {}
            for node in candidates:
                offset = 0
                for seg in self.layouts.get(node) or ():
                    root = find(seg.space)
                    if root in spaces and seg.repeat == 1 and not spaces[root].taps:
                        found.setdefault(root, []).append(Tap(node, offset))
                    offset += seg.size * seg.repeat
            for root, taps in found.items():
                spaces[root].taps = list(dict.fromkeys(taps))
        return PermutationSpec(sorted(spaces.values(), key=lambda s: _order(s, self.gm)))


def _order(space: Space, gm: torch.fx.GraphModule) -> int:
    names = [n.target for n in gm.graph.nodes]
    return names.index(space.name) if space.name in names else len(names)


def _flatten_args(obj: Any) -> list[torch.fx.Node]:
    out: list[torch.fx.Node] = []

    def collect(node: torch.fx.Node) -> torch.fx.Node:
        out.append(node)
        return node

    torch.fx.node.map_arg(obj, collect)
    return out


# --- applying a permutation ----------------------------------------------------------------------

Permutation = dict[str, torch.Tensor]  # space name -> (size,) int64: new unit i = old unit perm[i]


def axis_index(axis: Axis, perm: torch.Tensor, length: int) -> torch.Tensor:
    """The full index along ``axis.axis`` (of ``length`` entries) that applies ``perm``."""
    units = (perm[:, None] * axis.repeat + torch.arange(axis.repeat)).flatten() + axis.offset
    end = axis.offset + units.numel()
    return torch.cat([torch.arange(axis.offset), units, torch.arange(end, length)])


def apply_permutation(state: dict[str, torch.Tensor], spec: PermutationSpec,
                      perm: Permutation) -> dict[str, torch.Tensor]:
    """A new state dict with every space's permutation applied (tensors not touched are shared)."""
    out = dict(state)
    for space in spec:
        p = perm.get(space.name)
        if p is None:
            continue
        p = p.cpu()
        for axis in space.axes:
            tensor = out[axis.name]
            index = axis_index(axis, p, tensor.shape[axis.axis]).to(tensor.device)
            out[axis.name] = tensor.index_select(axis.axis, index)
    return out


def permute_model(model: nn.Module, spec: PermutationSpec, perm: Permutation) -> None:
    """Permute ``model``'s parameters and buffers in place; the function is unchanged.

    Args:
        model: the network ``spec`` was traced from (or one of the same architecture).
        spec: from :func:`trace_permutation_spec`.
        perm: space name -> permutation of its units (``align(...).perm``); unit ``i`` of the
            result is unit ``perm[i]`` of the input.

    Example::

        result = align(a, b, batches, spec=spec)
        permute_model(b, spec, result.perm)
    """
    new = apply_permutation(model.state_dict(), spec, perm)
    model.load_state_dict(new)


def random_permutation(spec: PermutationSpec, generator: torch.Generator | None = None
                       ) -> Permutation:
    return {s.name: torch.randperm(s.size, generator=generator) for s in spec}


def identity_permutation(spec: PermutationSpec) -> Permutation:
    return {s.name: torch.arange(s.size) for s in spec}


def inverse(perm: Permutation) -> Permutation:
    return {name: torch.argsort(p) for name, p in perm.items()}

