"""Which spaces of a network admit orthogonal maps beyond permutations, and why the others do not.

Map classes (``--align-maps``), each containing the one before:

- ``permutations``: every space's units permuted (today's alignment);
- ``head-rotations``: attention heads matched as wholes, then one orthogonal map per head on the
  query/key units and one on the value units;
- ``orthogonal``: also one orthogonal map of each residual stream, fixing the all-ones vector,
  with every LayerNorm that reads the stream folded into its readers (:mod:`stream_fold`).

A space is given a map of its class only where that is exact: the tracer says which parameter
axes each space moves, the norms on a stream are folded, and a random map of the class is
applied to a float64 copy of the network and must leave its logits unchanged (to 1e-9 of their
size; float64 rounding is about 1e-15, while an operation that treats units one by one changes
them by their own order). A space that fails keeps permutations, with the reason.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from robust_mc.core.rotation import apply_rotations, random_rotation
from robust_mc.core.spec import PermutationSpec, Space, load_weights
from robust_mc.core.stream_fold import (
    NormFold,
    find_norm_folds,
    fold_into_readers,
    unfold_from_readers,
)

MapClass = Literal["permutations", "head-rotations", "orthogonal"]
MAP_CLASSES: tuple[MapClass, ...] = ("permutations", "head-rotations", "orthogonal")
EXACT = 1e-9  # relative change of the logits below which a map counts as exact (float64)


@dataclass(frozen=True)
class RotationPlan:
    """Per space the map it takes beyond a permutation: ``heads`` (one per head) or ``stream``
    (one for the space, fixing the all-ones vector, its norms folded as ``folds`` says);
    ``refused``: spaces that keep permutations, and why."""

    kinds: dict[str, Literal["heads", "stream"]] = field(default_factory=dict)
    folds: dict[str, tuple[NormFold, ...]] = field(default_factory=dict)  # stream -> its norms
    refused: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.kinds)

    def shown_by(self, measured: dict) -> RotationPlan:
        """The plan less the spaces no activation showed (``measured``: the spaces with
        statistics), which keep permutations."""
        hidden = [name for name in self.kinds if name not in measured]
        return RotationPlan({k: v for k, v in self.kinds.items() if k not in hidden},
                            {k: v for k, v in self.folds.items() if k not in hidden},
                            {**self.refused, **{n: "no activation shows its units"
                                                for n in hidden}})


def norms_on(space: Space, modules: dict[str, nn.Module]) -> list[str]:
    """The LayerNorms (among ``modules``, by name) whose gain lies on ``space``'s units."""
    return sorted({a.name.rsplit(".", 1)[0] for a in space.axes
                   if isinstance(modules.get(a.name.rsplit(".", 1)[0]), nn.LayerNorm)})


def plan_rotations(model: nn.Module, spec: PermutationSpec, example: torch.Tensor,
                   maps: MapClass) -> RotationPlan:
    """The spaces of ``model`` (traced as ``spec``) that take ``maps``' orthogonal maps, each
    checked exactly on ``example`` (B, C, H, W) in [0, 1]."""
    plan = RotationPlan()
    if maps == "permutations":
        return plan
    folds = find_norm_folds(model, example[:2])
    modules = dict(model.named_modules())
    check = _ExactnessCheck(model, example[:2])
    for space in spec:
        if not space.axes:
            continue  # an order of heads: it has no units of its own to rotate
        kind: Literal["heads", "stream"] = "heads" if space.blocks is not None else "stream"
        if kind == "stream" and maps != "orthogonal":
            continue
        reason, norms = _refusal(space, modules, folds)
        if reason is None:
            change = check.change(space, norms, spec)
            if not change <= EXACT:  # NaN too (a zero gain)
                reason = (f"a random rotation changes the logits by {change:.0e} of their size: "
                          "an operation treats its units one by one (an element-wise "
                          "activation, a gate or a per-unit scale)")
        if reason is not None:
            plan.refused[space.name] = reason
            continue
        plan.kinds[space.name] = kind
        if norms:
            plan.folds[space.name] = tuple(norms)
    return plan


def _refusal(space: Space, modules: dict[str, nn.Module], folds: dict[str, NormFold | str]
             ) -> tuple[str | None, list[NormFold]]:
    """Why ``space`` cannot take a rotation, from what the trace says it touches (``modules``:
    the network's, by name); else None and the norm folds it needs."""
    if space.blocks is not None and space.blocks.shared:
        return ("its heads share one order of units (a per-dimension query/key norm, a sum of "
                "heads unit by unit)"), []
    if any(a.groups > 1 or a.within or getattr(modules.get(a.name.rsplit(".", 1)[0]), "groups",
                                               1) > 1 for a in space.axes):
        return "a grouped or depthwise convolution reads its units group by group", []
    if any(a.name.endswith("running_mean") for a in space.axes):
        return "batch norm keeps statistics per unit", []
    norms: list[NormFold] = []
    for name in norms_on(space, modules):
        fold = folds.get(name)
        if not isinstance(fold, NormFold):
            return fold or f"'{name}' was not reached by the trace", []
        if any(getattr(modules[r], "bias", None) is None for r in fold.readers):
            return f"a reader of '{name}' has no bias to take the norm's shift", []
        norms.append(fold)
    if space.blocks is None and not norms and any(
            isinstance(m, nn.LayerNorm) for m in modules.values()):
        return "no LayerNorm normalises these units (a hidden layer, not a residual stream)", []
    return None, norms


class _ExactnessCheck:
    """Applies a random map to one space of a float64 copy of the network (its norms folded,
    then unfolded with their own gains: the function must not move) and measures how far the
    logits move."""

    def __init__(self, model: nn.Module, example: torch.Tensor) -> None:
        self.copy = copy.deepcopy(model).double().eval()
        self.state = {k: v.clone() for k, v in self.copy.state_dict().items()}
        self.x = example.detach().double().to(next(self.copy.parameters()).device)
        self.generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.reference = self.copy(self.x)

    def change(self, space: Space, norms: list[NormFold], spec: PermutationSpec) -> float:
        state = dict(self.state)
        for fold in norms:
            state = fold_into_readers(state, fold, self.state[f"{fold.norm}.weight"],
                                      self.state[f"{fold.norm}.bias"])
        rotation = random_rotation(space, fix_ones=space.blocks is None, generator=self.generator)
        skip = frozenset(f"{f.norm}.{p}" for f in norms for p in ("weight", "bias"))
        one = PermutationSpec([space])
        state = apply_rotations(state, one, {space.name: rotation}, skip)
        for fold in norms:
            state = unfold_from_readers(state, fold, self.state[f"{fold.norm}.weight"],
                                        self.state[f"{fold.norm}.bias"])
        try:
            load_weights(self.copy, state)
            with torch.no_grad():
                out = self.copy(self.x)
        finally:
            load_weights(self.copy, self.state)
        scale = self.reference.abs().max().clamp_min(torch.finfo(self.reference.dtype).tiny)
        return float((out - self.reference).abs().max() / scale)
