"""The one way robust-mc draws a figure: matplotlib (the ``plot`` extra) without a display, the
figure written atomically as a PNG. Without matplotlib, nothing is drawn."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from robust_mc.run.files import atomic_write_bytes

DPI = 110


@contextmanager
def figure(path: Path, *subplots: int, size: tuple[float, float]) -> Iterator[tuple[Any, Any]]:
    """``with figure(out / "x.png", 2, 2, size=(10, 7)) as (fig, axes): ...``: draws into
    ``axes`` and writes ``path`` when the block ends; yields ``(None, None)`` (and writes
    nothing) where matplotlib is missing, so callers check ``fig is None``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        yield None, None
        return
    fig, axes = plt.subplots(*subplots, figsize=size)
    try:
        yield fig, axes
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI)
        atomic_write_bytes(path, buffer.getvalue())
    finally:
        plt.close(fig)
