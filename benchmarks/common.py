"""Helpers shared by the benchmarks: timing with warm-up, and a table printer."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def time_it(fn: Callable[[], object], repeats: int, warmup: int = 2) -> tuple[float, float]:
    """Median and spread (min..max half-range) of ``repeats`` timed calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), (max(times) - min(times)) / 2


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
