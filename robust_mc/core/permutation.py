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
ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add, operator.mul, operator.imul, torch.mul,
                 operator.sub, operator.isub, torch.sub, operator.truediv, operator.itruediv,
                 torch.div}
ADD_METHODS = {"add", "add_", "mul", "mul_", "sub", "sub_", "div", "div_"}
PAD_MODULES = tuple(getattr(nn, name) for name in (
    "ZeroPad1d", "ZeroPad2d", "ConstantPad1d", "ConstantPad2d", "ReflectionPad1d",
    "ReflectionPad2d", "ReplicationPad1d", "ReplicationPad2d") if hasattr(nn, name))
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
    fixed: list[str] = field(default_factory=list)  # hidden spaces left as they are, and why

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
        self.constants: set[str] = set()  # get_attr nodes: buffers and parameters used directly
        self.state_names = set(gm.state_dict())
        self.fixed_notes: list[str] = []

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
        if node.op == "get_attr":  # a buffer or parameter: handled where it is used
            self.constants.add(node.name)
            return None
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
        if isinstance(m, PASS_MODULES) or isinstance(m, PAD_MODULES):  # pads are spatial
            return layout
        if isinstance(m, nn.Flatten):
            return self.flatten(node, layout, m.start_dim, shape)
        if isinstance(m, nn.GroupNorm):
            if m.num_groups in (1, m.num_channels):  # statistics over all, or each, channel
                for key in ("weight", "bias"):
                    if getattr(m, key, None) is not None:
                        self.record(layout, f"{name}.{key}", 0)
            else:  # groups of channels: a permutation across groups would change them
                self.fix(layout, f"{name}: GroupNorm with {m.num_groups} groups")
            return layout
        if isinstance(m, nn.LayerNorm):
            rank = len(shape)
            if len(m.normalized_shape) == rank - 1:  # over channels (and every axis after)
                for key in ("weight", "bias"):
                    if getattr(m, key, None) is not None:
                        self.record(layout, f"{name}.{key}", 0)
            return layout  # otherwise over trailing spatial axes: channels untouched
        if self.channel_elementwise(node, lambda t: m(t)):
            self.activations.append(node.name)
            return layout
        raise self.fail(node, "layer")

    def visit_function(self, node: torch.fx.Node, shape: tuple[int, ...]) -> Layout:
        target = node.target
        method = target if node.op == "call_method" else None
        if target in ACTIVATION_FUNCTIONS or method in ACTIVATION_METHODS:
            self.activations.append(node.name)
            return self.tensor_input(node)[1]
        if target in PASS_FUNCTIONS or method in PASS_METHODS:
            return self.tensor_input(node)[1]
        if target is F.pad:
            arg, layout = self.tensor_input(node)
            pad: Any = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad", ())
            if len(pad) > 2 * (len(self.shape(arg) or ()) - 2):
                raise self.fail(node, "padding of the batch or channel axis:")
            return layout
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
        if self.channel_elementwise(node, self.call_of(node)):  # e.g. a custom activation
            self.activations.append(node.name)
            return self.tensor_input(node)[1]
        raise self.fail(node, "operation")

    def call_of(self, node: torch.fx.Node) -> Any:
        """``node``'s operation as a function of its first argument (None if another argument
        is a tensor of the graph)."""
        rest = list(node.args[1:])
        if any(isinstance(a, torch.fx.Node) for a in _flatten_args((rest, node.kwargs))):
            return None
        if node.op == "call_method":
            return lambda t: getattr(t, str(node.target))(*rest, **node.kwargs)
        return lambda t: node.target(t, *rest, **node.kwargs)  # type: ignore[operator]

    def channel_elementwise(self, node: torch.fx.Node, fn: Any) -> bool:
        """Whether ``fn`` (an operation this tracer has no rule for, such as a custom
        ``autograd.Function`` activation) acts on every channel alike: its output keeps the
        input's shape and permuting the input's channels permutes the output's the same way,
        checked on a random input. Such an operation carries its space unchanged."""
        arg = node.args[0] if node.args else None
        in_shape = self.shape(arg)
        if fn is None or in_shape is None or len(in_shape) < 2 or self.shape(node) != in_shape:
            return False
        generator = torch.Generator().manual_seed(0)
        device = next(iter(self.gm.parameters()), torch.empty(0)).device
        x = torch.randn(in_shape, generator=generator).to(device)
        order = torch.randperm(in_shape[1], generator=generator).to(device)
        try:
            with torch.no_grad():
                out, shuffled = fn(x), fn(x[:, order])
        except Exception:  # noqa: BLE001 - not callable on its own: not element-wise here
            return False
        return (isinstance(out, torch.Tensor) and out.shape == x.shape
                and torch.allclose(out[:, order], shuffled, atol=1e-6, rtol=1e-5))

    def fix(self, layout: Layout, why: str) -> None:
        for seg in layout:
            self.spaces.fix(seg.space)
        self.fixed_notes.append(why)

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
        """``+ - * /`` between tensors: their units meet, so their spaces become one. A buffer
        or parameter in the operation (an input normalization's mean, a learned per-channel
        scale) follows the permutation of the channels it is broadcast over."""
        args = _flatten_args((node.args, node.kwargs))
        tensors = [a for a in args if self.layout_of(a) is not None]
        if not tensors:
            raise self.fail(node, "operation on non-tensors")
        first = self.layout_of(tensors[0])
        assert first is not None
        for constant in (a for a in args if a.name in self.constants):
            self.constant_operand(node, constant, first, len(self.shape(node) or ()))
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

    def constant_operand(self, node: torch.fx.Node, constant: torch.fx.Node, layout: Layout,
                         rank: int) -> None:
        """A buffer or parameter broadcast against a tensor of ``layout``: per channel, its
        channel axis is permuted with the space (or, not in the state dict, the space is left
        fixed); a scalar or a channel-free constant needs nothing."""
        shape = self.shape(constant) or ()
        channel = len(shape) - (rank - 1)  # the constant's axis that meets the channel axis
        if channel < 0 or shape[channel] == 1:
            return  # channel-free: broadcast alike over every unit
        if all(self.spaces.fixed[self.spaces.find(seg.space)] for seg in layout):
            return  # the input's channels (an input normalization): never permuted
        units = sum(seg.size * seg.repeat for seg in layout)
        if shape[channel] != units or any(d != 1 for i, d in enumerate(shape) if i != channel):
            raise self.fail(node, f"operation with a constant of shape {tuple(shape)}:")
        name = str(constant.target)
        if name in self.state_names:
            self.record(layout, name, channel)
        else:
            self.fix(layout, f"'{name}' (not in the state dict) is applied per channel")

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
        return PermutationSpec(sorted(spaces.values(), key=lambda s: _order(s, self.gm)),
                               self.fixed_notes)


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

