"""From a finished trace to a :class:`~robust_mc.core.spec.PermutationSpec`: one space per set of
tied units that is neither fixed nor wild, the parameter axes recorded against it, its grouping
into blocks, and the activations that define its units (taps)."""

from __future__ import annotations

import torch.fx

from robust_mc.core.spec import Axis, Blocks, PermutationSpec, Space, Tap
from robust_mc.core.tracing.layout import Units
from robust_mc.core.tracing.trace import Trace


def build_spec(trace: Trace) -> PermutationSpec:
    table = trace.spaces
    entries = table.entries
    roots = [i for i, e in enumerate(entries) if e.parent == i and e.children is None]

    def live(root: int) -> bool:
        e = entries[root]
        return not e.fixed and not e.wild and not e.within_fixed and e.size >= 2

    axes: dict[int, list[Axis]] = {}
    for sid, record in trace.records:
        offset = 0
        for leaf in table.leaves(sid):
            axis = Axis(record.name, record.axis, record.offset + offset * record.repeat,
                        record.repeat, record.groups, record.within)
            found = axes.setdefault(table.find(leaf), [])
            if axis not in found:
                found.append(axis)
            offset += table.size(leaf)

    # units fixed within blocks move with their blocks where no axis of theirs is a grouped
    # convolution's (one shared by every block, in the order within one, stays as it is)
    plain = {r for r in roots if entries[r].within_fixed and not entries[r].fixed
             and not entries[r].wild and all(a.groups == 1 for a in axes.get(r, []))}
    changed = True
    while changed:  # a grouped space that stays keeps its groups in place
        changed = False
        for root in roots:
            block = entries[root].block
            if block is not None and not live(root) and root not in plain \
                    and not entries[table.find(block[0])].fixed:
                entries[table.find(block[0])].fixed = changed = True

    for root in plain & set(axes):  # their block space moves them, a block a unit
        space, units = entries[root].block or (root, 1)
        found = axes.setdefault(table.find(space), [])
        found.extend(a for a in (Axis(a.name, a.axis, a.offset, a.repeat * units)
                                 for a in axes.pop(root) if not a.within) if a not in found)

    block_spaces = {table.find(block[0]) for r in roots
                    if (block := entries[r].block) is not None and live(r)}
    names: dict[int, str] = {}
    for root in roots:
        if live(root) and (root in axes or root in block_spaces):
            name = entries[root].producer
            while name in names.values():
                name += "'"
            names[root] = name
    spaces: dict[int, Space] = {}
    for root, name in names.items():
        block = entries[root].block
        blocks = None
        if block is not None:
            block_root = table.find(block[0])
            blocks = Blocks(block[1], names.get(block_root) if live(block_root) else None,
                            entries[root].shared)
        spaces[root] = Space(name, entries[root].size, axes.get(root, []), [], blocks)
    _add_taps(trace, spaces)
    order = _graph_order(trace.gm)
    return PermutationSpec(sorted(spaces.values(), key=lambda s: order(s.name)),
                           list(table.notes), list(trace.unsupported))


def _add_taps(trace: Trace, spaces: dict[int, Space]) -> None:
    """Post-activation outputs define a space's units; a space without any uses its layers'
    outputs."""
    for candidates in (trace.activations, trace.producers):
        found: dict[int, list[Tap]] = {}
        for node in candidates:
            layout = trace.layouts.get(node)
            for axis, dim in enumerate(layout or ()):
                if not isinstance(dim, Units):
                    continue
                offset = 0
                for seg in trace.resolve(dim).segs:  # type: ignore[union-attr]
                    root = trace.spaces.find(seg.space)
                    if root in spaces and seg.repeat == 1 and not spaces[root].taps:
                        found.setdefault(root, []).append(Tap(node, offset, axis))
                    offset += seg.size * seg.repeat
        for root, taps in found.items():
            spaces[root].taps = list(dict.fromkeys(taps))


def _graph_order(gm: torch.fx.GraphModule):
    position: dict[str, int] = {}
    for k, node in enumerate(gm.graph.nodes):
        position.setdefault(str(node.target), k)
        position.setdefault(node.name, k)

    def order(name: str) -> int:
        base = name.split("#")[0].split("/")[0].rstrip("'")
        for key in (base, base.rsplit(".", 1)[0]):
            if key in position:
                return position[key]
        return len(position)

    return order
