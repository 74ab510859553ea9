"""The exceptions that the CLI turns into a one-line message and an exit code."""

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
