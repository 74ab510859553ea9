"""The exceptions that the CLI turns into a one-line message and an exit code."""

import errno
import os
import signal


class UserError(Exception):
    """Bad input from the user: a file, a flag or a config value.

    The message names the problem and, where there is one, the fix. The CLI prints it on one line
    and exits with code 2; ``--debug`` shows the traceback instead.
    """


class Interrupted(Exception):
    """A run stopped by SIGINT or SIGTERM after saving its state; the message says how to
    resume. The CLI exits with 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM)."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


PATH_PROBLEMS = {
    errno.ENAMETOOLONG: "a name in this path is longer than the file system allows; shorten it",
    errno.ENOENT: "no such file or folder (a folder on the way cannot be created there); "
                  "check the path",
    errno.ENOTDIR: "a part of this path is a file, not a folder; choose another path",
    errno.EISDIR: "this is a folder where a file is expected; remove it or choose another path",
    errno.EACCES: "permission denied; choose a path you can read and write",
    errno.EPERM: "operation not permitted; choose a path you can read and write",
    errno.EROFS: "the file system is read-only; choose a writable path",
    errno.ENOSPC: "the disk is full; free space or choose another disk",
    errno.ELOOP: "too many levels of symbolic links; choose the target itself",
}


def path_problem(exc: OSError) -> str | None:
    """One line naming the path an operating-system call refused and what to do, or None when
    the error names no path (not the user's input, so not ours to explain)."""
    if exc.filename is None:
        return None
    reason = PATH_PROBLEMS.get(exc.errno or 0, f"{exc.strerror or exc}; choose another path")
    name = str(exc.filename)
    shown = name if len(name) <= 120 else f"{name[:60]}...{name[-40:]}"
    return f"{shown}: {reason}"


def home_of(path: str) -> str:
    """``path`` with a leading ``~`` or ``~user`` expanded; an unknown user is bad input."""
    expanded = os.path.expanduser(path)
    if expanded.startswith("~"):
        user = expanded[1:].split("/", 1)[0] or "the current user"
        raise UserError(f"{path}: {user} has no home folder here; write the path out in full")
    return expanded
