"""The permutation spaces met while tracing: a union-find over spaces of hidden units.

A *space* is a set of units permuted together. Ties (a residual ``+``, a contraction) merge two
spaces into one; a space can be *cut* into consecutive parts that are permuted separately (the
query, key and value rows of one packed projection); and a space can be *blocked*: its units
fall into equal consecutive blocks (attention heads, convolution groups) that another space, the
*block space*, permutes as wholes, with any permutation inside each block. A space tied to the
network's input or logits, or met by an operation that cannot follow it, is *fixed*; a blocked
space met by one that acts within each block alone (a rotary embedding along a head's
dimensions) is *fixed within*: its blocks still move as wholes, their units in their order.

*Wild* spaces stand for a parameter's axes before the tracer knows what they meet: a position
embedding's feature axis becomes the residual space when it is added to it; a wild space that
never meets a hidden space, or meets a token axis, is left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

from robust_mc.errors import UserError

DOCS = "see docs/alignment.md (supported operations)"


@dataclass
class _Entry:
    size: int
    producer: str
    parent: int
    fixed: bool = False
    wild: bool = False
    children: list[int] | None = None  # a space cut into consecutive parts
    block: tuple[int, int] | None = None  # (block space, units per block)
    shared: bool = False  # every block orders its units alike
    within_fixed: bool = False  # blocked units that keep their order within each block


@dataclass(frozen=True)
class Record:
    """A parameter axis that a space moves: units at ``offset`` of axis ``axis`` of ``name``,
    each ``repeat`` entries long; ``groups`` > 1: a grouped convolution's input axis, whose
    order within each group follows the group of the row (``axis`` 0) it belongs to;
    ``within`` > 0: a parameter shared by every head (a per-dimension query/key norm), ordered
    as the units within each head."""

    name: str
    axis: int
    offset: int = 0
    repeat: int = 1
    groups: int = 1
    within: int = 0


class SpaceTable:
    def __init__(self) -> None:
        self.entries: list[_Entry] = []
        self.notes: list[str] = []  # why hidden spaces were fixed

    def new(self, size: int, producer: str, *, fixed: bool = False, wild: bool = False) -> int:
        self.entries.append(_Entry(size, producer, len(self.entries), fixed, wild))
        return len(self.entries) - 1

    def find(self, i: int) -> int:
        entries = self.entries
        while entries[i].parent != i:
            entries[i].parent = entries[entries[i].parent].parent
            i = entries[i].parent
        return i

    def entry(self, i: int) -> _Entry:
        return self.entries[self.find(i)]

    def leaves(self, i: int) -> list[int]:
        """The uncut spaces that ``i`` consists of, in order."""
        root = self.find(i)
        children = self.entries[root].children
        if children is None:
            return [root]
        return [leaf for child in children for leaf in self.leaves(child)]

    def size(self, i: int) -> int:
        return self.entries[self.find(i)].size

    # --- changes
    def produce(self, i: int, producer: str) -> None:
        """A layer's outputs: a wild space becomes a hidden space named after the layer."""
        for leaf in self.leaves(i):
            entry = self.entries[leaf]
            if entry.wild:
                entry.wild, entry.producer = False, producer

    def fix(self, i: int, why: str | None = None) -> None:
        changed = False
        for leaf in self.leaves(i):
            entry = self.entries[leaf]
            changed = changed or not (entry.fixed or entry.wild)
            entry.fixed = True
        if why and changed and why not in self.notes:
            self.notes.append(why)

    def fix_within(self, i: int, why: str | None = None) -> None:
        """Keep ``i``'s units in their order within each block, the blocks free to move (a
        space without blocks is fixed)."""
        for leaf in self.leaves(i):
            entry = self.entries[leaf]
            if entry.block is None:
                self.fix(leaf, why)
            elif not (entry.fixed or entry.wild or entry.within_fixed):
                entry.within_fixed = True
                if why and why not in self.notes:
                    self.notes.append(why)

    def cut(self, i: int, offsets: list[int]) -> None:
        """Cut space ``i`` at unit ``offsets`` (0 < offset < size) into parts."""
        root = self.find(i)
        entry = self.entries[root]
        inner = sorted({o for o in offsets if 0 < o < entry.size})
        if not inner:
            return
        if entry.children is not None:
            start = 0
            for child in entry.children:
                size = self.size(child)
                self.cut(child, [o - start for o in inner if start < o < start + size])
                start += size
            return
        if entry.block is not None:  # parts of a blocked space would split its blocks
            self.fix(root, f"{entry.producer}: a blocked space is cut into parts")
            return
        bounds = [0, *inner, entry.size]
        entry.children = [self.new(b - a, f"{entry.producer}#{k}", fixed=entry.fixed,
                                   wild=entry.wild)
                          for k, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False))]

    def union(self, a: int, b: int, where: str) -> None:
        """Tie the units of ``a`` and ``b`` one to one (the same permutation for both)."""
        if self.find(a) == self.find(b):
            return
        if self.size(a) != self.size(b):
            raise UserError(f"permutation tracing: {where} ties spaces of {self.size(a)} and "
                            f"{self.size(b)} units; {DOCS}")
        for x, y in ((a, b), (b, a)):  # cut each where the other is cut
            self.cut(x, _offsets([self.size(leaf) for leaf in self.leaves(y)]))
        for x, y in zip(self.leaves(a), self.leaves(b), strict=True):
            self._union_leaves(x, y, where)

    def _union_leaves(self, a: int, b: int, where: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        ea, eb = self.entries[ra], self.entries[rb]
        keep, drop = (ra, rb) if (ea.wild, ra) < (eb.wild, rb) else (rb, ra)  # a layer names it
        kept, dropped = self.entries[keep], self.entries[drop]
        dropped.parent = keep
        kept.fixed = kept.fixed or dropped.fixed
        kept.wild = kept.wild and dropped.wild
        kept.shared = kept.shared or dropped.shared
        kept.within_fixed = kept.within_fixed or dropped.within_fixed
        if kept.block is None:
            kept.block = dropped.block
        elif dropped.block is not None:
            (space_a, units_a), (space_b, units_b) = kept.block, dropped.block
            if units_a == units_b:
                self.union(space_a, space_b, where)
            else:
                self.fix(keep, f"{where}: ties blocks of {units_a} and {units_b} units")

    def block(self, i: int, blocks: int, producer: str) -> int | None:
        """Group space ``i``'s units into ``blocks`` equal consecutive blocks; the space that
        permutes the blocks (made here, or the one already grouping ``i`` alike); None where
        ``i`` is cut or already grouped otherwise (then ``i`` is fixed)."""
        leaves = self.leaves(i)
        size = self.size(i)
        if blocks == 1:
            return None
        if len(leaves) != 1 or size % blocks:
            self.fix(i, f"{producer}: {blocks} groups across separately permuted units")
            return None
        entry = self.entries[leaves[0]]
        units = size // blocks
        if units == 1:  # blocks of one unit: the space itself permutes them
            return leaves[0]
        if entry.block is not None:
            if entry.block[1] == units:
                return entry.block[0]
            self.fix(leaves[0], f"{producer}: groups of {units} and {entry.block[1]} units")
            return None
        space = self.new(blocks, f"{entry.producer}/groups", fixed=entry.fixed, wild=entry.wild)
        entry.block = (space, units)
        return space


def _offsets(sizes: list[int]) -> list[int]:
    out, total = [], 0
    for size in sizes[:-1]:
        total += size
        out.append(total)
    return out
