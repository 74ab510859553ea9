"""Helpers shared by the benchmarks: timing with warm-up, a table printer, and how far a
randomly permuted copy of a network strays from it."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


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


def permutation_error(model: torch.nn.Module, spec, x: torch.Tensor) -> float:
    """The largest change of ``model``'s outputs on ``x`` under a random permutation of
    ``spec`` (relative to the largest output); the model is left as it was. Raises what
    applying the spec raises."""
    from robust_mc.core.permutation import apply_permutation, load_weights, random_permutation

    with torch.no_grad():
        reference = model(x)
        original = {k: v.clone() for k, v in model.state_dict().items()}
        try:
            load_weights(model, apply_permutation(original, spec, random_permutation(
                spec, torch.Generator().manual_seed(0))))
            moved = model(x)
        finally:
            load_weights(model, original)
    scale = reference.abs().max().clamp_min(torch.finfo(reference.dtype).tiny)  # logits of a
    return float((moved - reference).abs().max() / scale)  # deep random network can be 1e-60


def traced(model: torch.nn.Module, x: torch.Tensor):
    """``(spec, seconds)`` of tracing ``model`` on ``x``, or the tracer's one line."""
    from robust_mc.core.permutation import trace_permutation_spec
    from robust_mc.errors import UserError

    start = time.perf_counter()
    try:
        spec = trace_permutation_spec(model, x)
    except UserError as exc:
        return str(exc)
    return spec, time.perf_counter() - start
