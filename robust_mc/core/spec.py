"""Permutation specs: which parameter axes each permutation of hidden units acts on.

A :class:`PermutationSpec` lists *spaces*; each space's permutation moves the (parameter, axis)
pairs in its ``axes``. A space with ``blocks`` is grouped (attention heads, convolution groups):
its units fall into consecutive blocks of ``blocks.size`` units that the space ``blocks.space``
permutes as wholes (None: blocks stay in place), with any permutation within each block.
Permutations are plain unit orders (``new unit i = old unit perm[i]``), so applying one is the
same for every space.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import torch
from torch import nn


@dataclass(frozen=True)
class Axis:
    """The part of one tensor axis that a space's permutation acts on.

    Units occupy ``[offset, offset + size * repeat)`` of axis ``axis``; each unit spans ``repeat``
    consecutive entries (a flatten of C x H x W repeats each channel H*W times). ``groups`` > 1:
    a grouped convolution's input axis (``axis`` 1, the units within one group): the rows
    (axis 0) of each group read their group's units, in that group's own order.
    """

    name: str
    axis: int
    offset: int = 0
    repeat: int = 1
    groups: int = 1
    within: int = 0  # > 0: shared by every block of this many units, ordered as within one


@dataclass(frozen=True)
class Tap:
    """An activation defining a space's units: entries ``[offset, offset + size)`` of axis
    ``axis`` of ``node``'s output (every other axis counts as samples)."""

    node: str
    offset: int
    axis: int = 1


@dataclass(frozen=True)
class Blocks:
    size: int  # units per block
    space: str | None  # the space permuting the blocks; None: they stay in place
    shared: bool = False  # every block orders its units alike (a per-dimension q/k norm)


@dataclass
class Space:
    name: str
    size: int
    axes: list[Axis] = field(default_factory=list)
    taps: list[Tap] = field(default_factory=list)
    blocks: Blocks | None = None


@dataclass
class PermutationSpec:
    spaces: list[Space]
    fixed: list[str] = field(default_factory=list)  # hidden spaces left as they are, and why
    unsupported: list[str] = field(default_factory=list)  # operations left alone (partial)

    def __iter__(self) -> Iterator[Space]:
        return iter(self.spaces)

    def __len__(self) -> int:
        return len(self.spaces)

    @property
    def tap_nodes(self) -> set[str]:
        return {tap.node for space in self.spaces for tap in space.taps}

    def space(self, name: str) -> Space:
        return next(s for s in self.spaces if s.name == name)

    def members(self, name: str) -> list[Space]:
        """The spaces whose blocks space ``name`` permutes."""
        return [s for s in self.spaces if s.blocks is not None and s.blocks.space == name]

    def left_alone(self, model: nn.Module) -> str | None:
        """With partial alignment: the share of weights no permutation moves and the
        operations responsible (None when every operation was followed)."""
        if not self.unsupported:
            return None
        return (f"partial alignment: {100 * (1 - self.moved_share(model)):.1f}% of the weights "
                f"left unaligned, where the tracer has no rule for: "
                f"{'; '.join(self.unsupported)}")

    def moved_share(self, model: nn.Module) -> float:
        """The share of ``model``'s parameter entries that some permutation moves."""
        params = dict(model.named_parameters())
        total = sum(p.numel() for p in params.values())
        moved = {a.name for s in self.spaces for a in s.axes if a.name in params}
        return sum(params[n].numel() for n in moved) / max(total, 1)


Permutation = dict[str, torch.Tensor]  # space name -> (size,) int64: new unit i = old unit perm[i]


def block_order(perm: torch.Tensor, block: int) -> torch.Tensor:
    """The block permutation of a blocked unit permutation: new block g = old block out[g]."""
    return perm.view(-1, block)[:, 0] // block


def compose_blocks(block_perm: torch.Tensor, within: torch.Tensor) -> torch.Tensor:
    """The unit permutation moving block ``block_perm[g]`` to block g, its units in the order
    ``within[g]`` ((blocks, units per block))."""
    size = within.shape[1]
    return (block_perm[:, None] * size + within).flatten()


def axis_index(axis: Axis, perm: torch.Tensor, length: int) -> torch.Tensor:
    """The full index along ``axis.axis`` (of ``length`` entries) that applies ``perm``."""
    units = (perm[:, None] * axis.repeat + torch.arange(axis.repeat)).flatten() + axis.offset
    end = axis.offset + units.numel()
    return torch.cat([torch.arange(axis.offset), units, torch.arange(end, length)])


def permute_axis(tensor: torch.Tensor, axis: Axis, perm: torch.Tensor) -> torch.Tensor:
    if axis.within:  # the order within a block, the same for every block
        order = perm[:axis.within] - block_order(perm, axis.within)[0] * axis.within
        return tensor.index_select(axis.axis, order.to(tensor.device))
    if axis.groups == 1:
        index = axis_index(axis, perm, tensor.shape[axis.axis]).to(tensor.device)
        return tensor.index_select(axis.axis, index)
    # a grouped convolution's input: the rows of old group order[g] read their inputs in the
    # order new block g has them
    groups, width = axis.groups, tensor.shape[1]
    order = block_order(perm, width)
    within = perm.view(groups, width) - order[:, None] * width
    by_old = torch.empty_like(within)
    by_old[order] = within
    rows = tensor.reshape(groups, tensor.shape[0] // groups, width, -1)
    index = by_old[:, None, :, None].expand_as(rows).to(tensor.device)
    return rows.gather(2, index).reshape(tensor.shape)


def mix_axis(tensor: torch.Tensor, axis: Axis, matrix: torch.Tensor,
             dtype: torch.dtype | None = None) -> torch.Tensor:
    """``tensor`` with the units on ``axis`` mixed by ``matrix`` (size, size): new unit i =
    sum_j matrix[i, j] unit j, each unit's ``repeat`` entries alike. A permutation matrix gives
    :func:`permute_axis`; an orthogonal one a rotation. Computed in ``dtype`` (the tensor's by
    default; differentiable in both), returned in the tensor's."""
    size = matrix.shape[0]
    dtype = dtype or tensor.dtype
    moved = tensor.to(dtype).movedim(axis.axis, 0)
    lo, hi = axis.offset, axis.offset + size * axis.repeat
    units = moved[lo:hi].reshape(size, axis.repeat, *moved.shape[1:])
    mixed = torch.tensordot(matrix.to(moved.device, dtype), units, dims=([1], [0]))
    whole = torch.cat([moved[:lo], mixed.reshape(hi - lo, *moved.shape[1:]), moved[hi:]])
    return whole.movedim(0, axis.axis).to(tensor.dtype)


def mix_state(state: dict[str, torch.Tensor], spec: PermutationSpec,
              matrices: dict[str, torch.Tensor], dtype: torch.dtype | None = None,
              skip: frozenset[str] = frozenset()) -> dict[str, torch.Tensor]:
    """A new state dict with each space's units mixed by its (size, size) matrix on every axis
    it moves that ``state`` holds (:func:`mix_axis`), except the tensors named in ``skip``."""
    out = dict(state)
    for space in spec:
        matrix = matrices.get(space.name)
        if matrix is None:
            continue
        for axis in space.axes:
            if axis.name in out and axis.name not in skip:
                out[axis.name] = mix_axis(out[axis.name], axis, matrix, dtype)
    return out


def with_aliases(spec: PermutationSpec, model: nn.Module) -> PermutationSpec:
    """``spec`` (extended in place) with every axis also under the other names its tensor has in
    ``model``'s state dict: a module shared by several parents (CoaT's position encodings, tied
    embeddings) is saved once per name, and each copy must move alike or loading the state
    dict would put an unmoved copy back."""
    names: dict[int, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        names.setdefault(id(tensor), []).append(name)
    others = {name: [o for o in group if o != name]
              for group in names.values() if len(group) > 1 for name in group}
    if not others:
        return spec
    for space in spec:
        extra = [replace(axis, name=alias) for axis in space.axes
                 for alias in others.get(axis.name, [])]
        space.axes.extend(a for a in extra if a not in space.axes)
    return spec


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
            out[axis.name] = permute_axis(out[axis.name], axis, p)
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
    load_weights(model, new)


def drop_inference_caches(model: nn.Module) -> None:
    """Forget what modules keep derived from their parameters for inference (timm's attention
    biases in TinyViT, LeViT and EfficientFormer, filled in eval mode and dropped when set to
    training), leaving the mode as it was: after weights change, a cache would be stale."""
    was_training = model.training
    model.train()
    model.train(was_training)


def load_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """``model.load_state_dict(state)`` (strict), its inference caches dropped."""
    model.load_state_dict(state)
    drop_inference_caches(model)


def random_permutation(spec: PermutationSpec, generator: torch.Generator | None = None
                       ) -> Permutation:
    """A random permutation of every space, grouped spaces permuting whole blocks."""
    out: Permutation = {}

    def draw(space: Space) -> torch.Tensor:
        if space.name in out:
            return out[space.name]
        if space.blocks is None:
            out[space.name] = torch.randperm(space.size, generator=generator)
        else:
            blocks = space.size // space.blocks.size
            order = (draw(spec.space(space.blocks.space)) if space.blocks.space is not None
                     else torch.arange(blocks))
            within = torch.stack([torch.randperm(space.blocks.size, generator=generator)
                                  for _ in range(1 if space.blocks.shared else blocks)])
            within = within.expand(blocks, -1)
            out[space.name] = compose_blocks(order, within)
        return out[space.name]

    for space in spec:
        draw(space)
    return out


def identity_permutation(spec: PermutationSpec) -> Permutation:
    return {s.name: torch.arange(s.size) for s in spec}


def inverse(perm: Permutation) -> Permutation:
    return {name: torch.argsort(p) for name, p in perm.items()}
