"""Assignment problems over spaces of units: a plain space is one linear assignment; a grouped
space (attention heads, convolution groups) is solved hierarchically, as its structure demands:
for every pair of blocks (a block of A, a block of B) the best within-block assignment of each
member space, then one assignment of blocks on the sum of those values (and the block space's
own scores), then the within-block assignments of the matched pairs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment

from robust_mc.core.spec import Permutation, PermutationSpec, Space, compose_blocks


def solve_assignment(score: torch.Tensor) -> torch.Tensor:
    """The permutation p maximising sum_i score[i, p[i]]."""
    rows, cols = linear_sum_assignment(score.double().numpy(), maximize=True)
    perm = torch.empty(score.shape[0], dtype=torch.long)
    perm[torch.as_tensor(rows)] = torch.as_tensor(cols, dtype=torch.long)
    return perm


@dataclass
class Group:
    """Spaces solved together: ``members`` grouped into blocks permuted by ``blocks`` (None: a
    plain space, or blocks that stay in place)."""

    blocks: Space | None
    members: list[Space]

    @property
    def spaces(self) -> list[Space]:
        return ([self.blocks] if self.blocks is not None else []) + self.members


def groups_of(spec: PermutationSpec) -> list[Group]:
    """Every space of ``spec`` as a member of one group; a grouped space that itself groups
    others (a grouped convolution's outputs read by a depthwise one) also leads a group of its
    own, listed after the group it belongs to."""
    out = []
    for space in spec:
        members = spec.members(space.name)
        if members:
            out.append(Group(space, members))
        elif space.blocks is None or space.blocks.space is None:
            out.append(Group(None, [space]))
    nested = [g for g in out if g.blocks is not None and g.blocks.blocks is not None]
    return [g for g in out if g not in nested] + nested


def solve_groups(spec: PermutationSpec, scores: dict[str, torch.Tensor]) -> Permutation:
    """Every group solved in turn; a nested group keeps the block order its leader was given."""
    perm: Permutation = {}
    for group in groups_of(spec):
        perm.update(solve_group(group, scores, given_order(group, perm)))
    return perm


def given_order(group: Group, perm: Permutation) -> torch.Tensor | None:
    """A nested group's block order: its leader's permutation as decided so far."""
    if group.blocks is not None and group.blocks.blocks is not None:
        return perm.get(group.blocks.name)
    return None


def solve_group(group: Group, scores: dict[str, torch.Tensor],
                order: torch.Tensor | None = None) -> Permutation:
    """The permutations of ``group``'s spaces maximising the summed ``scores`` ((units, units)
    per space, A's units by B's; a space without scores keeps its units within the blocks
    matched for the others); ``order``: the block order, already decided."""
    if group.blocks is None and group.members[0].blocks is None:
        space = group.members[0]
        score = scores.get(space.name)
        return {space.name: solve_assignment(score) if score is not None
                else torch.arange(space.size)}
    first = group.members[0]
    assert first.blocks is not None
    count = first.size // first.blocks.size
    block_score = torch.zeros(count, count, dtype=torch.float64)
    if group.blocks is not None and group.blocks.name in scores:
        block_score += scores[group.blocks.name].double()
    within: dict[str, torch.Tensor] = {}  # (count, count, units) best order per block pair
    pairs: dict[str, torch.Tensor] = {}  # (count, count, units, units) scores per block pair
    for member in group.members:
        score = scores.get(member.name)
        if score is None:
            continue
        assert member.blocks is not None
        size = member.blocks.size
        blocks = pairs[member.name] = score.double().reshape(count, size, count, size).permute(
            0, 2, 1, 3)
        orders = torch.empty(count, count, size, dtype=torch.long)
        for g in range(count):
            for h in range(count):
                orders[g, h] = solve_assignment(blocks[g, h])
                block_score[g, h] += blocks[g, h][torch.arange(size), orders[g, h]].sum()
        within[member.name] = orders
    if order is None:
        order = (solve_assignment(block_score) if group.blocks is not None
                 else torch.arange(count))
    out: Permutation = {}
    if group.blocks is not None:
        out[group.blocks.name] = order
    for member in group.members:
        assert member.blocks is not None
        if member.blocks.shared and member.name in pairs:  # one order for every block pair
            matched = pairs[member.name][torch.arange(count), order].sum(0)
            inner = solve_assignment(matched).expand(count, -1)
        elif member.name in within:
            inner = within[member.name][torch.arange(count), order]
        else:
            inner = torch.arange(member.blocks.size).expand(count, -1)
        out[member.name] = compose_blocks(order, inner)
    return out


def group_value(group: Group, scores: dict[str, torch.Tensor], perm: Permutation) -> float:
    """The summed score of ``perm`` over ``group``'s spaces."""
    total = 0.0
    for space in group.spaces:
        score = scores.get(space.name)
        if score is not None:
            p = perm[space.name]
            total += float(score[torch.arange(space.size), p].sum())
    return total
