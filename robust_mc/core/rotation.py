"""Orthogonal maps of hidden spaces: the symmetry of a transformer beyond permutations.

A permutation of a space's units is one orthogonal map among many. Where every operation that
touches a space is linear in its units (projections, residual additions, the query-key product,
token mixing), any orthogonal map ``R`` of the space leaves the function unchanged when it is
applied to every parameter axis the space moves: writers' rows become ``R W``, readers' columns
``W R^T``, and both are the same contraction ``new unit i = sum_j R[i, j] unit j`` along the axis
(``R^{-T} = R``), exactly as a permutation is the same index on every axis.

Two places need more than that, and :mod:`robust_mc.core.stream_fold` handles them for the
residual stream: LayerNorm normalises over the units (exact under ``R`` when ``R`` fixes the
all-ones vector, which keeps the centring and the norm) and scales them one by one (its gain and
shift are folded into the layers that read it). Attention heads take one map per head on the
query/key units (queries and keys rotated alike keep every score) and one on the value units.

``Rotations`` map a space's name to a (size, size) float64 orthogonal matrix, applied after the
space's permutation. Which spaces admit one is decided by :mod:`robust_mc.core.rotatable`.
"""

from __future__ import annotations

import math

import torch

from robust_mc.core.spec import PermutationSpec, Space, mix_state

Rotations = dict[str, torch.Tensor]  # space name -> (size, size) float64 orthogonal


def apply_rotations(state: dict[str, torch.Tensor], spec: PermutationSpec,
                    rotations: Rotations, skip: frozenset[str] = frozenset()
                    ) -> dict[str, torch.Tensor]:
    """A new state dict with each rotated space's map applied to every axis it moves (each
    unit's ``repeat`` entries alike, in float64, back in each tensor's dtype), except the
    tensors named in ``skip`` (a folded LayerNorm's gain and shift, which the map fixes)."""
    check_rotatable(spec, rotations)
    return mix_state(state, spec, rotations, torch.float64, skip)


def check_rotatable(spec: PermutationSpec, rotations: Rotations) -> None:
    """ValueError for a rotation of a space with a grouped or shared axis."""
    for space in spec:
        if space.name in rotations and any(a.groups > 1 or a.within for a in space.axes):
            raise ValueError(f"{space.name}: a grouped or shared axis takes permutations only")


def inverse_rotations(rotations: Rotations) -> Rotations:
    return {name: r.T.contiguous() for name, r in rotations.items()}


def ones_complement(n: int) -> torch.Tensor:
    """(n, n - 1) float64: an orthonormal basis of the vectors whose entries sum to zero."""
    basis = torch.linalg.qr(torch.cat([torch.ones(n, 1, dtype=torch.float64),
                                       torch.eye(n, dtype=torch.float64)[:, : n - 1]], 1))[0]
    return basis[:, 1:]


def procrustes(cross: torch.Tensor, fix_ones: bool = False) -> torch.Tensor:
    """The orthogonal ``R`` maximising ``sum_samples <a, R b>`` given ``cross`` = sum a b^T
    (units_a, units_b): ``U V^T`` from the SVD ``cross = U S V^T``. ``fix_ones``: among the maps
    with ``R 1 = 1`` (those under which a LayerNorm stays exact)."""
    cross = cross.double()
    if not fix_ones:
        u, _, vh = torch.linalg.svd(cross)
        return u @ vh
    basis = ones_complement(cross.shape[0])
    inner = procrustes(basis.T @ cross @ basis)
    n = cross.shape[0]
    return basis @ inner @ basis.T + torch.full((n, n), 1.0 / n, dtype=torch.float64)


def random_rotation(space: Space, fix_ones: bool, generator: torch.Generator) -> torch.Tensor:
    """A random orthogonal map of ``space``: one per block for a blocked space (heads), else
    one for the whole space (fixing the all-ones vector if ``fix_ones``)."""
    def draw(n: int) -> torch.Tensor:
        q, r = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
        return q * torch.sign(torch.diagonal(r))  # uniform (Haar) among orthogonal maps

    if space.blocks is not None:
        block = space.blocks.size
        return torch.block_diag(*(draw(block) for _ in range(space.size // block)))
    if not fix_ones:
        return draw(space.size)
    basis = ones_complement(space.size)
    n = space.size
    return basis @ draw(n - 1) @ basis.T + torch.full((n, n), 1.0 / n, dtype=torch.float64)


def mean_angle(rotation: torch.Tensor) -> float:
    """The mean rotation angle of ``rotation`` in degrees (0: the identity, 90: a typical map of
    a large space far from it), from its eigenvalues ``e^{i theta}``."""
    eig = torch.linalg.eigvals(rotation.double())
    return float(torch.angle(eig).abs().mean()) * 180 / math.pi
