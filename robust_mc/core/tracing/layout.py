"""What each axis of a traced tensor holds, as far as permutations of hidden units go.

- :class:`Free`: an axis no permutation acts on (batch, spatial positions, tokens).
- :class:`Units`: hidden units, as runs of whole spaces (``Seg``); a unit repeated ``repeat``
  times in a row where spatial axes were flattened into the feature axis.
- :class:`Split`: one of the axes a feature axis was reshaped into: ``part`` (query, key and
  value of a packed projection), ``block`` (attention heads) or ``inner`` (the units within a
  head). The parts are spaces, each grouped into ``blocks`` blocks of ``block_size`` units.

A tensor's layout is one entry per axis, the batch axis included; a layout of a tuple (the
result of ``unbind`` or ``chunk``) is a tuple of layouts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import torch


@dataclass(frozen=True)
class Seg:
    space: int
    size: int
    repeat: int = 1


@dataclass(frozen=True)
class Free:
    size: int


@dataclass(frozen=True)
class Units:
    segs: tuple[Seg, ...]

    @property
    def size(self) -> int:
        return sum(s.size * s.repeat for s in self.segs)


Role = Literal["part", "block", "inner"]


@dataclass(frozen=True)
class Split:
    parts: tuple[int, ...]
    blocks: int
    block_size: int
    role: Role

    @property
    def size(self) -> int:
        return {"part": len(self.parts), "block": self.blocks, "inner": self.block_size}[self.role]

    def same_group(self, other: Dim) -> bool:
        return isinstance(other, Split) and (other.parts, other.blocks, other.block_size) == (
            self.parts, self.blocks, self.block_size)

    def with_parts(self, parts: tuple[int, ...]) -> Split:
        return replace(self, parts=parts)


Dim = Free | Units | Split
Layout = tuple[Dim, ...]
# what the walk records for a node: a tensor's layout, the layouts of the tensors a node returns
# together (split, unbind, attention's output and weights), or nothing (sizes, numbers)
Traced = Layout | tuple["Traced", ...] | list["Traced"] | None


def free_layout(meta: Any) -> Traced:
    """A value's layout with nothing moving: a tensor's axes all free, a (nested) tuple of
    tensors' likewise, None for anything else (``meta``: the trace's ``tensor_meta``)."""
    if hasattr(meta, "shape"):
        return tuple(Free(s) for s in meta.shape)
    if isinstance(meta, (tuple, list)):
        return tuple(free_layout(m) for m in meta)
    return None


def units(space: int, size: int) -> Units:
    return Units((Seg(space, size),))


def is_moving(dim: Dim) -> bool:
    """Whether a permutation can act on this axis."""
    return not isinstance(dim, Free)


def is_dim(value: Any) -> bool:
    """Whether ``value`` is an axis layout (free, units, or a split of units)."""
    return isinstance(value, (Free, Units, Split))


def dims_in(value: Any) -> list[Dim]:
    """The axis layouts in ``value`` (one, or nested in lists and tuples), in order."""
    if is_dim(value):
        return [value]
    if isinstance(value, (list, tuple)):
        return [d for item in value for d in dims_in(item)]
    return []


def spaces_of(dim: Dim) -> list[int]:
    """The spaces an axis layout's units belong to (none for a free axis)."""
    if isinstance(dim, Units):
        return [seg.space for seg in dim.segs]
    if isinstance(dim, Split):
        return list(dim.parts)
    return []


def entry_bounds(dim: Units) -> list[int]:
    """Where each segment of ``dim`` ends along the axis (cumulative sizes)."""
    out, start = [], 0
    for seg in dim.segs:
        start += seg.size * seg.repeat
        out.append(start)
    return out


def permutes_alike(fn: Any, shape: tuple[int, ...], layout: tuple, device: torch.device) -> bool:
    """Whether ``fn`` keeps a random input's ``shape`` and, along each hidden axis of
    ``layout``, permuting its input permutes its output the same way (an operation that acts
    on every unit alike)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator).to(device)
    try:
        with torch.no_grad():
            out = fn(x)
            for axis, dim in enumerate(layout):
                if not is_moving(dim) or dim.size < 2:
                    continue
                order = torch.randperm(dim.size, generator=generator).to(device)
                shuffled = fn(x.index_select(axis, order))
                if not (isinstance(out, torch.Tensor) and torch.allclose(
                        out.index_select(axis, order), shuffled, atol=1e-6, rtol=1e-5)):
                    return False
    except Exception:  # noqa: BLE001 - not callable on its own: not element-wise here
        return False
    return isinstance(out, torch.Tensor) and out.shape == x.shape
