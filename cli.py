"""The `robust-mc` command line: parse arguments, call the library, turn bad input into exit 2."""

from __future__ import annotations

import argparse
import sys

from robust_mc.errors import Interrupted, UserError
from robust_mc.run.runtime import process_scope

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors naming the fix."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> Parser:
    from robust_mc.commands import commands
    from robust_mc.run.provenance import version

    parser = Parser(prog="robust-mc", description="Robust mode connectivity: train PGD endpoints, "
                    "align their neurons, connect them with robust curves and measure barriers.")
    parser.add_argument("--version", action="version", version=f"robust-mc {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, module in commands().items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
        p.set_defaults(handler=module.run, command_parser=p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # named by the command, whose --help lists what it takes
        getattr(args, "command_parser", parser).error(
            f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    args.argv = ["robust-mc", *argv]
    try:
        with process_scope():  # the command sets up the process once its config is known
            return int(args.handler(args) or 0)
    except UserError as exc:
        if args.debug:
            raise
        print(f"robust-mc {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Interrupted as exc:
        print(f"robust-mc {args.command}: {exc.signal_name}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"robust-mc {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
