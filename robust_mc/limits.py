"""Bounds on what a file robust-mc reads may hold, checked where it is read.

A file is untrusted input: a pickle or a YAML document can share one container among many
places (8 levels of 8 references expand to 8^8 items when walked), refer to itself, or nest
deeper than Python recurses; and a path can name a FIFO or a device that blocks the reader
forever. Both are refused here in one line, before any code walks the value.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from robust_mc.errors import UserError

# items a value read from a file may expand to when walked (tensors count as one); the largest
# file robust-mc writes (a curve run with its history) holds a few thousand
MAX_ITEMS = 200_000
MAX_DEPTH = 64  # nesting of containers; robust-mc's own files nest under 10 deep


def check_regular_file(path: str | Path, what: str = "") -> Path:
    """``path`` if it is a regular file (or does not exist: the caller says so); a FIFO, socket
    or device, which would block or never end, is refused."""
    path = Path(path)
    try:
        checked_stat(path, what)
    except OSError:
        pass
    return path


def checked_stat(path: Path, what: str = "") -> os.stat_result:
    """``path``'s stat (OSError where there is none), one line for a FIFO, socket or device."""
    info = path.stat()
    if not stat.S_ISREG(info.st_mode) and not stat.S_ISDIR(info.st_mode):
        raise UserError(f"{what or path} is not a regular file (a FIFO, socket or device); give "
                        "a file")
    return info


def check_bounded(value: Any, source: str | Path) -> Any:
    """``value`` if walking it visits at most :data:`MAX_ITEMS` items at most
    :data:`MAX_DEPTH` deep (shared references count each time they are reached); else one
    line naming ``source``."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    seen = 0
    while stack:
        item, depth = stack.pop()
        seen += 1
        if seen > MAX_ITEMS or depth > MAX_DEPTH:
            raise UserError(f"{source} holds a structure larger or deeper than robust-mc writes "
                            f"(over {MAX_ITEMS:,} items or {MAX_DEPTH} levels, counting shared "
                            "references); it is not a robust-mc file, or it was tampered with")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
            stack.extend((k, depth + 1) for k in item if not isinstance(k, str))
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend((v, depth + 1) for v in item)
    return value
