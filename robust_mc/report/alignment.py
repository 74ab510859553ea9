"""What ``align`` shows: a table of each space's correlation before and after, and the notes on
spaces that kept permutations only and on learned maps."""

from __future__ import annotations

from rich.table import Table

from robust_mc.core.align import Alignment
from robust_mc.train.learned_maps import describe_learned


def alignment_table(alignment: Alignment, title: str) -> Table:
    """One row per space (units, the map and its angle where some space rotated, correlation
    before and after, the share re-matched, silent units) and the mean."""
    table = Table(title=title)
    rotated = any(s.map != "permutation" for s in alignment.spaces)
    for column in ("space", "units", *(("map", "angle") if rotated else ()), "corr before",
                   "corr after", "re-matched", "no signal"):
        table.add_column(column, justify="left" if column in ("space", "map") else "right")
    for s in alignment.spaces:
        table.add_row(s.name.removeprefix("net."), str(s.units),
                      *((s.map, "-" if s.angle is None else f"{s.angle:.0f}°") if rotated
                        else ()),
                      _corr(s.corr_before), _corr(s.corr_after), f"{100 * s.moved:.0f}%",
                      str(s.no_signal))
    summary = alignment.as_dict()
    table.add_row("[bold]mean", "", *(("", "") if rotated else ()),
                  f"{summary['mean_corr_before']:.3f}", f"{summary['mean_corr_after']:.3f}",
                  "", "")
    return table


def alignment_notes(alignment: Alignment) -> list[str]:
    """Which spaces a rotation class left with permutations only, and why; the learned maps."""
    notes = []
    kept = alignment.plan.refused
    if alignment.map_class != "permutations" and kept:
        reasons: dict[str, list[str]] = {}
        for space, why in kept.items():
            reasons.setdefault(why, []).append(space.removeprefix("net."))
        for why, spaces in reasons.items():
            listed = f"{len(spaces)} spaces ({spaces[0]}, ...)" if len(spaces) > 1 \
                else f"space {spaces[0]}"
            notes.append(f"permutations only for {listed}: {why}")
    if alignment.learned is not None:
        notes.append(f"{describe_learned(alignment.learned)}; the correlations are the solved "
                     "maps'")
    return notes


def _corr(value: float) -> str:
    """A correlation, or "-" for a space no activation shows (heads, matched by their units)."""
    return "-" if value != value else f"{value:.3f}"
