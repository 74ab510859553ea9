"""Merging networks of one architecture into one: the weighted average of their states, how much
of the members' weights that average keeps, and the members' unit moments averaged (what the
merge's statistics are repaired to).

The members must already be in one frame (their units aligned: :mod:`robust_mc.pipelines.merge`
chooses the frame); averaging unaligned networks is the baseline that alignment improves on.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from robust_mc.core.repair import Moments

WEIGHT_SUM_TOLERANCE = 1e-6  # merge weights typed as decimals (0.333...) still sum to 1


def check_weights(weights: Sequence[float], members: int) -> list[float]:
    """The merge weights as floats: one per member, none negative, summing to 1 (within
    :data:`WEIGHT_SUM_TOLERANCE`). Raises ``ValueError`` naming what is wrong."""
    values = [float(w) for w in weights]
    if len(values) != members:
        raise ValueError(f"{len(values)} weights for {members} members; give one per member")
    if any(not (w >= 0.0) or w == float("inf") for w in values):  # also refuses NaN
        raise ValueError(f"weights must be finite and at least 0, not {values}")
    if abs(sum(values) - 1.0) > WEIGHT_SUM_TOLERANCE:
        raise ValueError(f"weights sum to {sum(values):g}, not 1")
    return values


def uniform_weights(members: int) -> list[float]:
    return [1.0 / members] * members


def average_states(states: Sequence[dict[str, torch.Tensor]], weights: Sequence[float]
                   ) -> dict[str, torch.Tensor]:
    """``sum_i weights[i] * states[i]`` for every floating-point tensor (summed in float64,
    returned in each tensor's own dtype); other tensors (batch norm's batch counter) are the
    first member's. The states must have the same names and shapes."""
    weights = check_weights(weights, len(states))
    first = states[0]
    for state in states[1:]:
        if state.keys() != first.keys():
            missing = sorted(set(first) ^ set(state))
            raise ValueError(f"the members' tensors differ in name ({missing[0]})")
    merged: dict[str, torch.Tensor] = {}
    for name, tensor in first.items():
        if not tensor.is_floating_point():
            merged[name] = tensor.clone()
            continue
        total = torch.zeros(tensor.shape, dtype=torch.float64, device=tensor.device)
        for state, weight in zip(states, weights, strict=True):
            if state[name].shape != tensor.shape:
                raise ValueError(f"the members' {name} differ in shape "
                                 f"({tuple(tensor.shape)} vs {tuple(state[name].shape)})")
            total += weight * state[name].to(torch.float64)
        merged[name] = total.to(tensor.dtype)
    return merged


def agreement(states: Sequence[dict[str, torch.Tensor]], weights: Sequence[float],
              names: Sequence[str]) -> float:
    """How much of the members' weights their average keeps: ``|sum_i w_i W_i|^2 /
    sum_i w_i |W_i|^2`` over the tensors ``names``, in [0, 1]; 1 when the members are equal.

    A permutation or rotation of a member's units leaves its norm unchanged, so maximising this
    over the maps maximises the weighted sum of the members' pairwise inner products: the
    objective of consensus alignment (MergeMany's, for weight matching), and the reason an
    unaligned average shrinks the weights (its agreement is near ``sum_i w_i^2`` for unrelated
    members)."""
    weights = check_weights(weights, len(states))
    average = 0.0
    spread = 0.0
    for name in names:
        stacked = torch.stack([s[name].to(torch.float64) for s in states])  # (N, ...)
        w = torch.tensor(weights, dtype=torch.float64).view(-1, *[1] * (stacked.dim() - 1))
        average += float((w * stacked).sum(0).square().sum())
        spread += float((w * stacked.square()).sum())
    return average / spread if spread > 0 else 1.0


def average_moments(moments: Sequence[Moments], weights: Sequence[float]) -> Moments:
    """Each unit's mean and standard deviation averaged over the members with ``weights``
    (REPAIR's target for the merge, as the interpolation of the endpoints' is along a path)."""
    weights = check_weights(weights, len(moments))
    sites = moments[0].mean.keys()
    mean = {k: sum(w * m.mean[k] for w, m in zip(weights, moments, strict=True)) for k in sites}
    std = {k: sum(w * m.std[k] for w, m in zip(weights, moments, strict=True)) for k in sites}
    return Moments(mean, std)  # type: ignore[arg-type]
