"""Atomic file writes: a temp file in the same folder, fsynced, then renamed over the target.

A kill at any moment leaves either the previous file or the new one, never a torn one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import torch

from robust_mc.errors import UserError
from robust_mc.limits import check_regular_file
from robust_mc.run import distributed


def _atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    path = Path(path)
    if not distributed.writes_files():  # one of several processes: rank 0 writes
        return path
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a directory; give a file path")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"cannot write {path}: {parent} is a file, not a directory") from None
    except PermissionError:
        raise UserError(f"cannot write {path}: no permission to create {parent}") from None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except PermissionError:
        raise UserError(f"cannot write {path}: {parent} is not writable") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(parent)  # the rename itself survives a power cut
    return path


def _fsync_directory(folder: Path) -> None:
    with suppress(OSError):  # not every platform or file system can open a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def cache_dir() -> Path:
    """robust-mc's cache folder: ``$XDG_CACHE_HOME/robust-mc``, else ``~/.cache/robust-mc``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "robust-mc"


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    return _atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    def write(handle: IO[bytes]) -> None:
        handle.write(data)

    return _atomic_write(path, write)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_plain) + "\n")


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def remove(path: str | Path) -> None:
    """Delete a file of the run if it is there; of several processes, rank 0 alone does, once
    the others have passed this point (none still needs it)."""
    distributed.group().barrier()
    if distributed.writes_files():
        Path(path).unlink(missing_ok=True)


def read_json(path: str | Path) -> Any:
    """A JSON file's value, or None when it is missing or not JSON (a FIFO or device in its
    place is refused in one line: reading it would block)."""
    try:
        return json.loads(check_regular_file(path).read_text())
    except (OSError, ValueError, RecursionError):
        return None


@contextmanager
def as_written(path: str | Path, fix: str) -> Iterator[None]:
    """The block turns what was read from ``path`` into records (or restores a saved state
    from it): a field of the wrong type, shape or range (KeyError, TypeError, ValueError, or
    torch's RuntimeError) ends in one line naming the file and ``fix``, not deep in the code."""
    try:
        yield
    except UserError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError,
            OverflowError) as exc:
        first = (str(exc).splitlines() or [""])[0][:160]
        detail = first if isinstance(exc, ValueError) else f"{type(exc).__name__}: {first}"
        raise UserError(f"{path} is not what robust-mc writes ({detail}); {fix}") from None


def at_most(items: Any, count: int) -> list:
    """``items`` as a list of at most ``count`` entries; ValueError when it is no list or
    longer (a progress file of more points than the run has)."""
    if not isinstance(items, list) or len(items) > count:
        raise ValueError(f"expected a list of at most {count} entries")
    return items


def ensure_out_dir(path: str | Path, files: tuple[str, ...] = ()) -> Path:
    """Create an output directory, or explain in one line why it cannot be used (before creating
    anything): ``files`` are the names the command writes there, each of which must be a file
    where it already exists (a directory or FIFO in its place would fail only after the
    work)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {path} is a file; give a directory path")
    for name in files:
        target = path / name
        if target.exists() and not target.is_file():
            raise UserError(f"{target} is not a file, but the run writes its {name} there; move "
                            "it away or choose another --out")
    _check_can_create(path, f"--out {path}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (PermissionError, FileExistsError, NotADirectoryError) as exc:
        raise UserError(f"cannot create --out {path}: {exc.strerror or exc}") from None
    return path


def _check_can_create(path: Path, what: str, file_name: str | None = None) -> None:
    """``path`` (a folder) exists and is writable, or its nearest existing ancestor is a
    writable folder in which a folder can be made; no name on the way (nor ``file_name``) is
    longer than the file system allows. Nothing is left behind."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"cannot write {what}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK):
        raise UserError(f"cannot write {what}: {existing} is not writable; choose another --out")
    missing = path.relative_to(existing).parts
    try:
        limit = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    for name in (*missing, *([file_name] if file_name else [])):
        if len(os.fsencode(name)) > limit:
            raise UserError(f"cannot write {what}: the name {name[:30]}... is longer than the "
                            f"{limit} bytes the file system allows; shorten it")
    if missing:  # /proc, a read-only or full disk: a folder cannot be made there at all
        probe = existing / f".robust-mc-probe-{os.getpid()}"  # its own name: no other process
        try:                                                   # (torchrun's ranks) races it
            probe.mkdir()
        except OSError as exc:
            raise UserError(f"cannot write {what}: no folder can be made in {existing} "
                            f"({exc.strerror}); choose another --out") from None
        probe.rmdir()


def check_writable_file(path: str | Path) -> None:
    """Fail before a long run, not after it, when ``path`` cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"--out {path} is a directory; give a file path, e.g. {path}/a.pt")
    _check_can_create(path.parent, str(path), path.name)


def check_writable_folder(path: str | Path) -> None:
    """Fail before any work when ``path``, a new directory the command writes (or an empty
    one), cannot be made."""
    path = Path(path)
    if path.exists() and not (path.is_dir() and not any(path.iterdir())):
        raise UserError(f"--out {path} exists; give a new directory path")
    _check_can_create(path.parent, str(path), path.name)
