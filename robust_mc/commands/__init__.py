"""CLI commands: each module has ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``."""

COMMANDS = ("train", "align", "connect", "eval", "ensemble", "bench", "layers", "info",
            "demo")
