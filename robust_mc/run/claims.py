"""Claims on units of work shared by several workers through one file system (bench cells,
bench endpoints): a worker computes a unit only after creating its claim file atomically
(``O_CREAT | O_EXCL``), so that each unit is computed once however many workers, on however
many machines, fill the same output directory.

A claim names its host and process and is touched while the work runs. It is stale, and may be
taken over, when its process is gone (same host) or when it has not been touched for
``STALE_AFTER`` seconds (another host, whose processes cannot be asked).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

HEARTBEAT = 30.0  # seconds between touches of a claim while its work runs
STALE_AFTER = 600.0  # seconds without a touch after which another host's claim is stale
POLL = 1.0  # seconds between looks at work another worker holds
MAX_PID = 2**22  # the largest process id Linux gives (pid_max's ceiling)


def claim_path(target: Path) -> Path:
    """The claim file of the unit whose result is ``target`` (a file or directory)."""
    return target.parent / f".{target.name}.claim"


def _owner() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}


def _owner_of(path: Path) -> dict | None:
    """The host and process a claim names, or None when it names none that can exist (not
    JSON, half-written, a pid that is not a process id)."""
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(owner, dict) or not isinstance(owner.get("host"), str):
        return None
    pid = owner.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid <= MAX_PID:
        return None
    return owner


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(path: Path) -> bool:
    """Whether the claim at ``path`` belongs to a worker that is gone: a process of this host
    that has ended; another host's claim not touched for ``STALE_AFTER``; a claim that names no
    process that can exist (a worker killed between creating and writing it, or not a claim)
    once a heartbeat has passed without anyone writing it."""
    try:
        touched = path.stat().st_mtime
    except OSError:
        return True
    owner = _owner_of(path)
    if owner is None:
        return time.time() - touched > HEARTBEAT
    if owner["host"] == socket.gethostname():
        return not _alive(owner["pid"])
    return time.time() - touched > STALE_AFTER


def try_claim(target: Path) -> Path | None:
    """Claim ``target``'s unit: the claim file, or None when a live worker holds it. A stale
    claim is removed and the unit claimed."""
    path = claim_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not is_stale(path):
                return None
            with suppress(FileNotFoundError):
                path.unlink()
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump(_owner(), handle)
        return path
    return None


@contextmanager
def holding(path: Path) -> Iterator[None]:
    """Keep the claim at ``path`` fresh while the block runs; release it afterwards."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(HEARTBEAT):
            with suppress(OSError):
                os.utime(path)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        with suppress(FileNotFoundError):
            path.unlink()


def wait_for(target: Path, finished: Callable[[], bool]) -> bool:
    """Wait while another worker holds ``target``'s unit. True when it finished there; False
    when its claim was dropped unfinished (its worker died or stopped): the caller may claim
    it."""
    path = claim_path(target)
    while True:
        if finished():
            return True
        if not path.exists() or is_stale(path):
            return finished()
        time.sleep(POLL)
