"""Permutation specs derived from the graph: which tensor axes one hidden-unit permutation acts on.

``trace_permutation_spec(model, example)`` traces ``model`` with ``torch.fx`` and follows every
tensor from the input to the logits, axis by axis (``core/tracing``): convolution and linear
layers open spaces of hidden units on whatever axis holds them (channels, or the last axis of
tokens x features); normalisations, activations and pooling carry them; residual additions and
contractions tie spaces; ``permute``, ``transpose``, ``reshape`` and ``flatten`` move and
regroup axes; attention splits a projection into heads, permuted as wholes. The network input,
the logits and token or spatial axes are never permuted. Anything the tracer does not understand
is an error naming the node (or, with ``partial=True``, left as it is), never a silently wrong
permutation.
"""

from __future__ import annotations

import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from robust_mc.core.spec import (
    Axis,
    Blocks,
    Permutation,
    PermutationSpec,
    Space,
    Tap,
    apply_permutation,
    axis_index,
    drop_inference_caches,
    identity_permutation,
    inverse,
    load_weights,
    permute_model,
    random_permutation,
    with_aliases,
)
from robust_mc.core.tracing import rules  # noqa: F401  (registers every rule)
from robust_mc.core.tracing.collect import build_spec
from robust_mc.core.tracing.graph import trace_graph
from robust_mc.core.tracing.trace import Trace

__all__ = ["Axis", "Blocks", "Permutation", "PermutationSpec", "Space", "Tap",
           "apply_permutation", "axis_index", "drop_inference_caches", "identity_permutation",
           "inverse", "load_weights", "permute_model", "random_permutation", "trace_graph",
           "trace_permutation_spec"]


class _ValueProp(ShapeProp):
    """Shapes of tensors, and the values of sizes and other small Python results (a slice
    bound computed from a shape), which rules read as constants."""

    def run_node(self, n: torch.fx.Node):
        result = super().run_node(n)
        if isinstance(result, (int, float, bool, torch.Size)) or (
                isinstance(result, (tuple, list)) and all(isinstance(r, int) for r in result)):
            n.meta["value"] = result
        return result


def trace_permutation_spec(model: nn.Module, example: torch.Tensor, *,
                           partial: bool = False) -> PermutationSpec:
    """Derive the permutable hidden spaces of ``model`` from a forward pass on ``example``.

    Args:
        model: any network ``torch.fx`` can trace (docs/alignment.md lists the operations).
        example: an input batch (B, C, H, W) in [0, 1]; only its first two images are used.
        partial: leave the spaces an operation without a rule touches as they are (listed in
            ``spec.unsupported``) instead of stopping.

    Returns:
        A :class:`PermutationSpec`: one space per set of units that must be permuted together
        (residual additions tie spaces), each listing every parameter axis it moves.

    Raises:
        UserError: an operation whose effect on hidden units is unknown, named by its node.

    Example::

        spec = trace_permutation_spec(model, x[:2])
        permute_model(copy, spec, random_permutation(spec))  # same function, other weights
    """
    was_training = model.training
    drop_inference_caches(model)  # the trace must meet the parameters, not a cache of them
    model.eval()
    try:
        gm = trace_graph(model, example[:2])
        reference = next(iter(model.parameters()), example.float())
        with torch.no_grad():
            _ValueProp(gm).propagate(example[:2].detach().to(reference.device, reference.dtype))
    finally:
        model.train(was_training)
    trace = Trace(gm, partial=partial)
    trace.run()
    return with_aliases(build_spec(trace), model)
