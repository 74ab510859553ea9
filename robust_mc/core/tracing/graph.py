"""The graph the tracer walks: ``torch.fx`` symbolic tracing, with robust-mc's input
normalisation kept whole; where symbolic tracing fails (control flow on tensor values, iteration
over a split: timm's Swin, ResNeSt), TorchDynamo's export of one forward pass on an example
input, its parameters renamed to the model's own names. The exported graph of an architecture is
kept for later calls on models of the same architecture (the second model of a pair, the folded
copy of the statistics pass)."""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import torch
import torch.fx
from torch import nn

from robust_mc.core.tracing.spaces import DOCS
from robust_mc.errors import UserError
from robust_mc.models.normalize import Normalize

_EXPORTED: dict[tuple, Exported] = {}  # architecture -> its exported graph
CONSTANT = "_traced_constant_"  # an exported graph's tensor that the model does not hold


@dataclass(frozen=True)
class Exported:
    """An architecture's exported graph, and the tensors it reads that are none of the model's
    parameters or buffers (a table computed once and kept as a plain attribute: ConViT's
    relative positions; caches that modules drop when set to training, as TinyViT's attention
    biases, are dropped before tracing). Those are taken from the model exported, so the
    tracer treats them as constants that vary along every axis: a space they meet stays as it
    is, whatever values another model of the architecture holds there."""

    graph: torch.fx.Graph
    constants: dict[str, torch.Tensor]


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, Normalize) or super().is_leaf_module(m, qualname)


def trace_graph(model: nn.Module, example: torch.Tensor | None = None) -> torch.fx.GraphModule:
    """``model``'s graph: symbolic tracing, else an export on ``example`` (or the export made
    earlier for this architecture)."""
    try:
        return torch.fx.GraphModule(model, _Tracer().trace(model))
    except Exception as exc:  # fx raises many types for untraceable code
        symbolic = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    key = _architecture(model)
    if key not in _EXPORTED and example is not None:
        _EXPORTED[key] = _export(model, example, symbolic)
    if key not in _EXPORTED:
        raise UserError(f"cannot trace {type(model).__name__} with torch.fx ({symbolic}); {DOCS}")
    return _with_constants(model, _EXPORTED[key])


def _with_constants(model: nn.Module, exported: Exported) -> torch.fx.GraphModule:
    """The graph module of ``exported`` over ``model``, its constants held beside the model's
    own modules and tensors (outside the state dict)."""
    graph = copy.deepcopy(exported.graph)
    if not exported.constants:
        return torch.fx.GraphModule(model, graph)
    root: dict[str, Any] = dict(exported.constants)
    for node in graph.nodes:
        if node.op in ("call_module", "get_attr") and node.target not in root:
            root[node.target] = attrgetter(str(node.target))(model)
    gm = torch.fx.GraphModule(root, graph)
    for name in exported.constants:  # buffers of the graph module, yet not state
        gm._non_persistent_buffers_set.add(name)
    return gm


def _architecture(model: nn.Module) -> tuple:
    return (type(model), tuple((n, tuple(t.shape)) for n, t in model.state_dict().items()))


def _export(model: nn.Module, example: torch.Tensor, symbolic: str) -> Exported:
    import torch._dynamo
    from torch.export import Dim

    batch = getattr(Dim, "AUTO", None) or Dim("batch")  # AUTO: dynamic wherever it can be
    model = copy.deepcopy(model)  # what the export leaves on modules (transformers' Swin keeps
    try:                          # a traced input) stays on this copy, not on the user's model
        with torch.no_grad():
            gm, _ = torch._dynamo.export(model, dynamic_shapes=({0: batch},))(example)
            gm(example[:1].expand(3, *example.shape[1:]))  # any batch size, not only 2
    except Exception as exc:  # noqa: BLE001 - dynamo raises many types
        raise UserError(f"cannot trace {type(model).__name__}: torch.fx failed ({symbolic}) and "
                        f"so did TorchDynamo's export ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200]}); {DOCS}") from None
    own = {id(t): n for n, t in itertools.chain(model.named_parameters(remove_duplicate=False),
                                                model.named_buffers(remove_duplicate=False))}
    constants: dict[str, torch.Tensor] = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            tensor = attrgetter(str(node.target))(gm)
            name = own.get(id(tensor))
            if name is None:
                name = f"{CONSTANT}{len(constants)}"
                constants[name] = tensor.detach().clone()
            node.target = name
    return Exported(gm.graph, constants)


def node_args(obj: Any) -> list[torch.fx.Node]:
    """The graph nodes among ``obj``'s (nested) arguments."""
    out: list[torch.fx.Node] = []

    def collect(node: torch.fx.Node) -> torch.fx.Node:
        out.append(node)
        return node

    torch.fx.node.map_arg(obj, collect)
    return out


def module_path(node: torch.fx.Node) -> str:
    """The path of the module whose forward ran ``node`` ('' at the top level): the called
    module's own for a layer, else the innermost on the module stack the trace recorded
    (an exported graph writes it as ``L['self'].a.b``)."""
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = str(list(stack.values())[-1][0])
    for prefix in ("L['self'].", "L['self']"):
        path = path.removeprefix(prefix)
    return path


def where_of(node: torch.fx.Node, layer: nn.Module | None = None) -> str:
    """How a message names ``node``: the layer (``layer``, the module it calls) with its class,
    or the operation and the module whose forward ran it, so a user sees what to rewrite."""
    if layer is not None:
        return f"module '{node.target}' ({type(layer).__name__})"
    path = module_path(node)
    name = getattr(node.target, "__name__", str(node.target))
    return f"{name} in module '{path}'" if path else name


def uniform_along(gm: torch.fx.GraphModule, name: str, axis: int) -> bool:
    """Whether the tensor ``name`` of ``gm`` holds equal values along ``axis`` (a constant
    that any permutation of that axis leaves as it is, such as a zero key bias)."""
    if name.startswith(CONSTANT):  # another model of the architecture may hold other values
        return False
    try:
        tensor = attrgetter(name)(gm)
    except AttributeError:
        return False
    if not isinstance(tensor, torch.Tensor) or tensor.dim() <= axis:
        return False
    return bool(torch.equal(tensor, tensor.narrow(axis, 0, 1).expand_as(tensor)))
