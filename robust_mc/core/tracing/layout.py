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
from typing import Literal


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


def units(space: int, size: int) -> Units:
    return Units((Seg(space, size),))


def is_moving(dim: Dim) -> bool:
    """Whether a permutation can act on this axis."""
    return not isinstance(dim, Free)
