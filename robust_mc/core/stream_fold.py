"""Folding a LayerNorm's gain and shift into the linear layers that read it, so that an orthogonal
map of the residual stream leaves a pre-norm transformer's function unchanged.

``LayerNorm(x) = g * n(x) + s`` with ``n`` the centred, normalised ``x``. A reader ``W y + c`` of
it computes ``(W diag(g)) n(x) + (W s + c)``: with ``g`` and ``s`` moved into the reader, the norm
itself is ``n``, which commutes with every orthogonal map that fixes the all-ones vector. Two
networks of one architecture are aligned without changing either's parameterisation: b is
folded, its stream mapped, and unfolded again with a's gains and shifts, so that a stays as
given and every interpolation between a and b aligned equals the one between both folded
(readers are linear in their weights).

The readers of a norm are found in the traced graph: the ``nn.Linear`` layers its output reaches
through operations that leave its last axis alone (selecting tokens, averaging them, dropout).
A norm with any other reader (post-norm blocks add it to the stream) cannot be folded.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from robust_mc.core.tracing.graph import trace_graph

# operations a norm's output may pass through on its way to a reader: they select or average
# tokens, or do nothing, and leave the feature axis as it is
_PASS_MODULES = (nn.Dropout, nn.Identity)
_PASS_FUNCTIONS = (operator.getitem, F.dropout, torch.mean)
_PASS_METHODS = ("mean", "contiguous", "clone", "to", "float", "type_as")


@dataclass(frozen=True)
class NormFold:
    """A LayerNorm (its module path) and the linear layers that read its output."""

    norm: str
    readers: tuple[str, ...]


def find_norm_folds(model: nn.Module, example: torch.Tensor | None = None
                    ) -> dict[str, NormFold | str]:
    """Every ``nn.LayerNorm`` of ``model``: its fold, or why it cannot be folded."""
    gm = trace_graph(model, example)
    modules = dict(model.named_modules())
    out: dict[str, NormFold | str] = {}
    for node in gm.graph.nodes:
        norm = _norm_of(node, modules)
        if norm is None or norm in out:
            continue
        layer = modules[norm]
        if not layer.elementwise_affine:
            out[norm] = f"'{norm}' has no gain to fold"
            continue
        readers, other = _readers(node, modules, layer.normalized_shape[-1])
        out[norm] = (NormFold(norm, tuple(readers)) if other is None and readers
                     else f"'{norm}' is read by {other or 'nothing'}, and its gain folds only "
                          "into linear layers reached through token selection, averaging or "
                          "dropout (a post-norm block, a convolutional stream)")
    return out


def _norm_of(node: torch.fx.Node, modules: dict[str, nn.Module]) -> str | None:
    if node.op == "call_function" and node.target not in (F.layer_norm, torch.layer_norm):
        return None
    return _layer_of(node, modules, nn.LayerNorm, 2)


def _reader_of(node: torch.fx.Node, modules: dict[str, nn.Module], width: int) -> str | None:
    if node.op == "call_function" and node.target is not F.linear:
        return None
    reader = _layer_of(node, modules, nn.Linear, 1)
    return reader if reader is not None and modules[reader].in_features == width else None


def _layer_of(node: torch.fx.Node, modules: dict[str, nn.Module], kind: type,
              weight_at: int) -> str | None:
    """The ``kind`` layer ``node`` runs, called as a module or as a function on the layer's
    weight (argument ``weight_at``), as exported graphs call it."""
    if node.op == "call_module":
        return str(node.target) if isinstance(modules.get(str(node.target)), kind) else None
    if node.op != "call_function":
        return None
    weight = node.args[weight_at] if len(node.args) > weight_at else node.kwargs.get("weight")
    if isinstance(weight, torch.fx.Node) and weight.op == "get_attr":
        owner = str(weight.target).rsplit(".", 1)[0]
        if isinstance(modules.get(owner), kind):
            return owner
    return None


def _passes(node: torch.fx.Node, modules: dict[str, nn.Module], width: int) -> bool:
    meta = node.meta.get("tensor_meta")
    keeps_features = meta is None or (hasattr(meta, "shape") and len(meta.shape) > 0
                                      and meta.shape[-1] == width)
    if node.op == "call_module":
        return isinstance(modules.get(str(node.target)), _PASS_MODULES)
    if node.op == "call_function" and node.target in _PASS_FUNCTIONS:
        return keeps_features and _not_last_axis(node)
    if node.op == "call_method" and node.target in _PASS_METHODS:
        return keeps_features and _not_last_axis(node)
    return False


def _not_last_axis(node: torch.fx.Node) -> bool:
    """A selection or mean that leaves the last axis whole."""
    if node.target is operator.getitem:
        index = node.args[1]
        index = index if isinstance(index, tuple) else (index,)
        if any(i is Ellipsis for i in index):
            return index[-1] is Ellipsis
        return True  # indexing leading axes of a (B, N, D) tensor; shapes are checked too
    if node.target in (torch.mean, "mean"):
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        dims = dim if isinstance(dim, (tuple, list)) else (dim,)
        return dim is not None and all(isinstance(d, int) and d >= 0 for d in dims)
    return True


def _readers(start: torch.fx.Node, modules: dict[str, nn.Module], width: int
             ) -> tuple[list[str], str | None]:
    """The linear layers ``start``'s output reaches, and the first other user (None if all
    are linear layers)."""
    readers: list[str] = []
    todo = list(start.users)
    while todo:
        node = todo.pop()
        if _asks_shape(node):
            continue  # reads sizes, not values
        reader = _reader_of(node, modules, width)
        if reader is not None:
            if reader not in readers:
                readers.append(reader)
        elif _passes(node, modules, width) and getattr(node.meta.get("tensor_meta"), "shape",
                                                       (width,))[-1] == width:
            todo.extend(node.users)
        else:
            return readers, f"'{node.name}'"
    return readers, None


def _asks_shape(node: torch.fx.Node) -> bool:
    return (node.op == "call_function" and node.target is getattr
            and node.args[1] in ("shape", "dtype", "device", "ndim")) or (
        node.op == "call_method" and node.target in ("size", "dim"))


def fold_into_readers(state: dict[str, torch.Tensor], fold: NormFold,
                      gain: torch.Tensor, shift: torch.Tensor) -> dict[str, torch.Tensor]:
    """``state`` with the norm's ``gain`` and ``shift`` moved into its readers: the norm left
    with gain 1 and shift 0 (float64 arithmetic, each tensor back in its own dtype)."""
    out = dict(state)
    g, s = gain.double(), shift.double()
    for reader in fold.readers:
        weight = state[f"{reader}.weight"].double()
        bias = state[f"{reader}.bias"].double()
        out[f"{reader}.weight"] = (weight * g).to(state[f"{reader}.weight"].dtype)
        out[f"{reader}.bias"] = (bias + weight @ s).to(state[f"{reader}.bias"].dtype)
    out[f"{fold.norm}.weight"] = torch.ones_like(state[f"{fold.norm}.weight"])
    out[f"{fold.norm}.bias"] = torch.zeros_like(state[f"{fold.norm}.bias"])
    return out


def unfold_from_readers(state: dict[str, torch.Tensor], fold: NormFold,
                        gain: torch.Tensor, shift: torch.Tensor) -> dict[str, torch.Tensor]:
    """The inverse of :func:`fold_into_readers`: a folded norm given ``gain`` and ``shift``
    again, its readers adjusted so the function is unchanged (``gain`` must have no zeros)."""
    out = dict(state)
    g, s = gain.double(), shift.double()
    for reader in fold.readers:
        weight = state[f"{reader}.weight"].double() / g
        bias = state[f"{reader}.bias"].double() - weight @ s
        out[f"{reader}.weight"] = weight.to(state[f"{reader}.weight"].dtype)
        out[f"{reader}.bias"] = bias.to(state[f"{reader}.bias"].dtype)
    out[f"{fold.norm}.weight"] = gain.to(state[f"{fold.norm}.weight"].dtype).clone()
    out[f"{fold.norm}.bias"] = shift.to(state[f"{fold.norm}.bias"].dtype).clone()
    return out
