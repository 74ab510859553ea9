"""Learning-rate schedules as pure functions of training progress."""

from __future__ import annotations

import math


def lr_factor(progress: float, schedule: str, warmup: float = 0.0) -> float:
    """Multiplier of the base learning rate at ``progress`` = epochs done / total epochs, in [0, 1].

    ``piecewise``: 1, then 0.1 from 50% and 0.01 from 75% (Madry et al.); ``cosine``: half a cosine
    down to 0; ``constant``: 1. ``warmup`` (a fraction of training) ramps linearly up from 0.
    """
    if warmup > 0 and progress < warmup:
        return (progress / warmup) * lr_factor(warmup, schedule)
    if schedule == "piecewise":
        return 1.0 if progress < 0.5 else 0.1 if progress < 0.75 else 0.01
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    if schedule == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {schedule!r}")
