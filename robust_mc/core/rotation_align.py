"""Solving the orthogonal maps of :mod:`robust_mc.core.rotatable`'s plan from activations, and
applying or undoing a whole alignment (permutations, norm folds and rotations) on a state dict.

From one pass of both networks over the alignment data (``core/unit_statistics``):

- a residual stream takes the Procrustes solution, among maps fixing the all-ones vector, of the
  cross-covariance of its LayerNorm-normalised samples (every token of every tap counts alike,
  as every reader sees it);
- attention heads are matched as wholes by how well each pair of heads can be rotated onto each
  other (the nuclear norm of their cross-covariance, over the query/key and value units, scaled
  by both heads' energy), then each matched pair's query/key units take one Procrustes map and
  its value units another.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from robust_mc.core.assignment import solve_assignment
from robust_mc.core.rotatable import RotationPlan
from robust_mc.core.rotation import (
    Rotations,
    apply_rotations,
    check_rotatable,
    inverse_rotations,
    procrustes,
)
from robust_mc.core.spec import (
    Permutation,
    PermutationSpec,
    apply_permutation,
    block_order,
    compose_blocks,
    inverse,
    mix_state,
)
from robust_mc.core.stream_fold import NormFold, fold_into_readers, unfold_from_readers


@dataclass
class StreamMaps:
    """What an alignment did beyond permutations: ``rotations`` (applied after the permutation)
    and, per folded norm, its readers and b's own gain and shift (b aligned carries a's, so
    that a stays as given), enough to undo it."""

    rotations: Rotations = field(default_factory=dict)
    folds: list[NormFold] = field(default_factory=list)
    b_norms: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.rotations)

    def skip(self) -> frozenset[str]:
        """The folded norms' parameters, which a rotation fixing the ones leaves alone."""
        return norm_parameters(self.folds)


    def to_state(self) -> dict:
        """Plain values and tensors, as ``curve.pt`` and checkpoints hold them."""
        return {"rotations": dict(self.rotations),
                "folds": [{"norm": f.norm, "readers": list(f.readers),
                           "gain": self.b_norms[f.norm][0], "shift": self.b_norms[f.norm][1]}
                          for f in self.folds]}

    @classmethod
    def from_state(cls, state: object) -> StreamMaps:
        """The maps a file holds, each checked (ValueError says which field is wrong): square
        orthogonal float matrices, and for each fold a norm, its readers and b's gain and
        shift as 1-D tensors of one length."""
        if not isinstance(state, dict) or not isinstance(state.get("rotations"), dict) \
                or not isinstance(state.get("folds"), list):
            raise ValueError("maps must hold 'rotations' (a mapping) and 'folds' (a list)")
        rotations: Rotations = {}
        for name, r in state["rotations"].items():
            if not (isinstance(name, str) and isinstance(r, torch.Tensor) and r.dim() == 2
                    and r.shape[0] == r.shape[1] and r.is_floating_point()):
                raise ValueError(f"maps.rotations.{str(name)[:60]} must be a square float matrix")
            eye = torch.eye(r.shape[0], dtype=torch.float64)
            if not torch.allclose(r.double() @ r.double().T, eye, atol=1e-6):
                raise ValueError(f"maps.rotations.{name[:60]} is not orthogonal")
            rotations[name] = r.double()
        folds, norms = [], {}
        for i, fold in enumerate(state["folds"]):
            ok = (isinstance(fold, dict) and isinstance(fold.get("norm"), str)
                  and isinstance(fold.get("readers"), list)
                  and all(isinstance(r, str) for r in fold["readers"]))
            gain, shift = (fold.get("gain"), fold.get("shift")) if ok else (None, None)
            if not (ok and isinstance(gain, torch.Tensor) and isinstance(shift, torch.Tensor)
                    and gain.dim() == 1 and gain.shape == shift.shape):
                raise ValueError(f"maps.folds[{i}] must hold a norm, its readers and b's gain "
                                 "and shift (1-D tensors of one length)")
            folds.append(NormFold(fold["norm"], tuple(fold["readers"])))
            norms[fold["norm"]] = (gain, shift)
        return cls(rotations, folds, norms)


def norm_parameters(folds: list[NormFold]) -> frozenset[str]:
    """The gains and shifts of the folded norms."""
    return frozenset(f"{f.norm}.{p}" for f in folds for p in ("weight", "bias"))


def solve_rotations(plan: RotationPlan, spec: PermutationSpec, perm: Permutation,
                    cross: dict[str, torch.Tensor], energy: dict[str, torch.Tensor]
                    ) -> tuple[Permutation, Rotations]:
    """The permutation (head orders only, where heads rotate; the identity on a rotated stream)
    and the rotations applied after it. ``cross``: per planned space, (units, units) sums of
    a b^T (normalised samples for a stream); ``energy``: (2, units) sums of squares of A's and
    B's units."""
    perm = {k: v.clone() for k, v in perm.items()}
    rotations: Rotations = {}
    heads: dict[str | None, list[str]] = {}
    for name, kind in plan.kinds.items():
        if kind == "stream":
            perm[name] = torch.arange(spec.space(name).size)
            rotations[name] = procrustes(cross[name], fix_ones=True)
        else:
            blocks = spec.space(name).blocks
            assert blocks is not None
            heads.setdefault(blocks.space, []).append(name)
    for block_space, names in heads.items():
        members = spec.members(block_space) if block_space is not None else []
        size = spec.space(names[0]).blocks.size  # type: ignore[union-attr]
        if block_space is not None and {m.name for m in members} == set(names):
            order = solve_assignment(_head_scores(names, size, cross, energy))
            perm[block_space] = order
        else:  # some heads' units keep permutations: keep the order they were matched in
            order = block_order(perm[names[0]], size)
        for name in names:
            count = spec.space(name).size // size
            perm[name] = compose_blocks(order, torch.arange(size).expand(count, size))
            rotations[name] = torch.block_diag(*[
                procrustes(cross[name][h * size:(h + 1) * size,
                                       g * size:(g + 1) * size])
                for h, g in enumerate(order.tolist())])
    return _snapped(perm, rotations)


SNAP = 1e-3  # a rotation this close to a permutation matrix (entry by entry) is that permutation


def _snapped(perm: Permutation, rotations: Rotations) -> tuple[Permutation, Rotations]:
    """Rotations that are permutations up to float error become those permutations, exactly:
    a permuted copy is recovered bit for bit under every map class, as with permutations."""
    kept: Rotations = {}
    for name, rotation in rotations.items():
        order = solve_assignment(rotation)  # new unit i = old unit order[i]
        exact = torch.eye(rotation.shape[0], dtype=rotation.dtype)[order]
        if float((rotation - exact).abs().max()) < SNAP:
            perm[name] = perm[name][order]
        else:
            kept[name] = rotation
    return perm, kept


def _head_scores(names: list[str], size: int, cross: dict[str, torch.Tensor],
                 energy: dict[str, torch.Tensor]) -> torch.Tensor:
    """(heads, heads): for head h of A and g of B, the summed best-rotation agreement of their
    units, ``||cross_hg||_* / sqrt(energy_h energy_g)`` per member space (1: identical up to a
    rotation)."""
    total = None
    for name in names:
        c = cross[name].double()
        heads = c.shape[0] // size
        blocks = c.reshape(heads, size, heads, size).permute(0, 2, 1, 3)
        nuclear = torch.linalg.svdvals(blocks).sum(-1)
        e = energy[name].double().reshape(2, heads, size).sum(-1).clamp_min(1e-30)
        score = nuclear / (e[0][:, None] * e[1][None, :]).sqrt()
        total = score if total is None else total + score
    assert total is not None
    return total


def map_state(state_b: dict[str, torch.Tensor], state_a: dict[str, torch.Tensor],
              spec: PermutationSpec, perm: Permutation, rotations: Rotations,
              plan: RotationPlan) -> tuple[dict[str, torch.Tensor], StreamMaps]:
    """b's state aligned: permuted, its streams' norms folded, rotated, and unfolded with a's
    gains and shifts; with the record that undoes it."""
    state = apply_permutation(state_b, spec, perm)
    folds = [f for name in rotations for f in plan.folds.get(name, ())]
    maps = StreamMaps(dict(rotations), folds,
                      {f.norm: (state[f"{f.norm}.weight"].clone(), state[f"{f.norm}.bias"].clone())
                       for f in folds})
    check_rotatable(spec, rotations)
    return fold_and_mix(state, state_a, spec, rotations, plan, torch.float64), maps


def fold_and_mix(state: dict[str, torch.Tensor], state_a: dict[str, torch.Tensor],
                 spec: PermutationSpec, matrices: dict[str, torch.Tensor], plan: RotationPlan,
                 dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """``state`` with each space's units mixed by its matrix (:func:`mix_state`, in ``dtype``),
    the norms of the plan's streams among them folded into their readers first and unfolded
    with a's gains and shifts after: the same function when the matrices are maps of their
    class. Differentiable in the matrices (learned maps train through it)."""
    folds = [f for name in matrices for f in plan.folds.get(name, ())]
    for fold in folds:
        state = fold_into_readers(state, fold, state[f"{fold.norm}.weight"],
                                  state[f"{fold.norm}.bias"])
    state = mix_state(state, spec, matrices, dtype, norm_parameters(folds))
    for fold in folds:
        state = unfold_from_readers(state, fold, state_a[f"{fold.norm}.weight"],
                                    state_a[f"{fold.norm}.bias"])
    return state


def unmap_state(state: dict[str, torch.Tensor], spec: PermutationSpec, perm: Permutation | None,
                maps: StreamMaps | None) -> dict[str, torch.Tensor]:
    """b as given, from b aligned (:func:`map_state`'s inverse)."""
    if maps:
        for fold in maps.folds:
            state = fold_into_readers(state, fold, state[f"{fold.norm}.weight"],
                                      state[f"{fold.norm}.bias"])
        state = apply_rotations(state, spec, inverse_rotations(maps.rotations), maps.skip())
        for fold in maps.folds:
            state = unfold_from_readers(state, fold, *maps.b_norms[fold.norm])
    if perm:
        state = apply_permutation(state, spec, inverse(perm))
    return state
