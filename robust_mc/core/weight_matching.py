"""Weight matching (Ainsworth et al. 2023, Git Re-Basin): data-free coordinate ascent over
spaces, each step a linear assignment on the inner products of the weights that the space's
permutation acts on; and the re-matching by weights of units that show no correlation signal."""

from __future__ import annotations

import torch

from robust_mc.core.assignment import (
    Group,
    given_order,
    group_value,
    groups_of,
    solve_assignment,
    solve_group,
)
from robust_mc.core.permutation import (
    Axis,
    Permutation,
    PermutationSpec,
    Space,
    identity_permutation,
)
from robust_mc.core.spec import permute_axis


def _unit_matrix(tensor: torch.Tensor, axis_spec: Axis, size: int) -> torch.Tensor:
    """Rows = the space's units on this axis, columns = everything else that moves with them."""
    t = tensor.movedim(axis_spec.axis, 0)
    t = t[axis_spec.offset:axis_spec.offset + size * axis_spec.repeat]
    return t.reshape(size, -1).double()


def weight_matching(state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor],
                    spec: PermutationSpec, max_sweeps: int = 100, seed: int = 0,
                    start: Permutation | None = None, only: list[Group] | None = None
                    ) -> Permutation:
    """Git Re-Basin weight matching over parameters (running statistics are not weights):
    coordinate ascent over groups of spaces (``only``: just these, the rest as in ``start``),
    each step an assignment (hierarchical for heads and groups) given the others."""
    perm = {name: p.clone() for name, p in (start or identity_permutation(spec)).items()}
    tables = _weight_tables(spec, state_a, state_b)
    groups = only if only is not None else groups_of(spec)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(max_sweeps):
        changed = False
        for index in torch.randperm(len(groups), generator=gen).tolist():
            group = groups[index]
            scores = {s.name: _weight_score(s, perm, *tables) for s in group.spaces}
            new = solve_group(group, scores, given_order(group, perm))
            old_value, new_value = group_value(group, scores, perm), group_value(group, scores,
                                                                                  new)
            if new_value > old_value + 1e-9 * max(1.0, abs(old_value)):
                perm.update(new)
                changed = True
        if not changed:
            break
    return perm


def match_by_weights(perm: Permutation, rows: dict[str, torch.Tensor],
                     state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor],
                     spec: PermutationSpec, max_sweeps: int = 10) -> Permutation:
    """Re-match, within each space, the ``rows`` of A and the units of B they were matched to by
    weight matching given the rest of the assignment (live units keep their match): units
    without a correlation signal (dead, or constant on the data) are paired by what they
    compute, so a permuted copy is recovered exactly even where units are dead. In a grouped
    space, units are re-matched within their matched blocks only."""
    if not rows:
        return perm
    perm = {name: p.clone() for name, p in perm.items()}
    tables = _weight_tables(spec, state_a, state_b)
    for _ in range(max_sweeps):
        changed = False
        for space in spec:
            if space.name not in rows or (space.blocks is not None and space.blocks.shared):
                continue  # (a shared order within heads is re-solved only as a whole)
            score = _weight_score(space, perm, *tables)
            block = space.blocks.size if space.blocks is not None else space.size
            for r in _by_block(rows[space.name], block):
                cols = perm[space.name][r]
                new = cols[solve_assignment(score[r][:, cols])]
                if not torch.equal(new, perm[space.name][r]):
                    perm[space.name][r] = new
                    changed = True
        if not changed:
            break
    return perm


def _by_block(rows: torch.Tensor, block: int) -> list[torch.Tensor]:
    """``rows`` split by the block each lies in."""
    return [rows[rows // block == b] for b in torch.unique(rows // block).tolist()]


Tables = tuple[dict[str, list[tuple[Space, Axis]]], dict[str, torch.Tensor],
               dict[str, torch.Tensor]]


def _weight_tables(spec: PermutationSpec, state_a: dict[str, torch.Tensor],
                   state_b: dict[str, torch.Tensor]) -> Tables:
    """For weight matching: each tensor's (space, axis) pairs, and A's and B's parameters in
    float64 on the CPU (running statistics are not weights)."""
    by_tensor: dict[str, list[tuple[Space, Axis]]] = {}
    for space in spec:
        for axis in space.axes:
            by_tensor.setdefault(axis.name, []).append((space, axis))
    names = [n for n in by_tensor if "running_" not in n and n in state_a]
    return (by_tensor, {n: state_a[n].detach().cpu().double() for n in names},
            {n: state_b[n].detach().cpu().double() for n in names})


def _weight_score(space: Space, perm: Permutation, by_tensor: dict[str, list[tuple[Space, Axis]]],
                  a_cpu: dict[str, torch.Tensor], b_cpu: dict[str, torch.Tensor]
                  ) -> torch.Tensor:
    """(units, units) inner products of A's and B's units over every tensor that moves with the
    space, B's other axes permuted as matched so far (weight matching's objective). A grouped
    convolution's input axis, whose order differs per group, does not count."""
    score = torch.zeros(space.size, space.size, dtype=torch.float64)
    for axis in space.axes:
        if axis.name not in a_cpu or axis.groups > 1 or axis.within:
            continue
        b = b_cpu[axis.name]
        for other, other_axis in by_tensor[axis.name]:
            if other is not space:
                b = permute_axis(b, other_axis, perm[other.name])
        score += _unit_matrix(a_cpu[axis.name], axis, space.size) @ _unit_matrix(
            b, axis, space.size).T
    return score
