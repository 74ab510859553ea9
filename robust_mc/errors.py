"""The one exception type that the CLI turns into a one-line message and exit code 2."""


class UserError(Exception):
    """Bad input from the user: a file, a flag or a config value.

    The message names the problem and, where there is one, the fix. The CLI prints it on one line
    and exits with code 2; ``--debug`` shows the traceback instead.
    """
