"""The `robust-mc` command line: parse arguments, call the library, turn bad input into exit 2."""

from __future__ import annotations

import argparse
import os
import sys

from robust_mc.errors import Interrupted, UserError, path_problem

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_LOST_PROCESS = 1


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors naming the fix."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(only: str | None = None) -> Parser:
    """The whole command line, or with ``only`` just that command's options (the others are
    listed by name and help, their modules not imported: torch and the rest load for the
    command that runs)."""
    from robust_mc.commands import commands
    from robust_mc.run.provenance import version

    parser = Parser(prog="robust-mc", description="Robust mode connectivity: train PGD endpoints, "
                    "align their neurons, connect them with robust curves and measure barriers.")
    parser.add_argument("--version", action="version", version=f"robust-mc {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, command in commands().items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        if only in (None, name):
            module = command.module()
            module.add_arguments(p)
            p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
            p.set_defaults(handler=module.run, command_parser=p, distributed=command.distributed)
    return parser


def distributed_commands() -> list[str]:
    """The commands torchrun may launch: those whose module says ``DISTRIBUTED = True`` (the
    others run in one process)."""
    from robust_mc.commands import commands

    return [name for name, command in commands().items() if command.distributed]


def named_command(argv: list[str]) -> str | None:
    """The command word of a command line: the top level takes options only (``--help``,
    ``--version``), so it is the first word that is not one."""
    return next((word for word in argv if not word.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(only=named_command(argv) or "")  # no command named: none built
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # named by the command, whose --help lists what it takes
        getattr(args, "command_parser", parser).error(
            f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    args.argv = ["robust-mc", *argv]
    from robust_mc.run import distributed
    from robust_mc.run.runtime import process_scope

    distributed.quiet_unless_main()
    prefix = f"robust-mc {args.command}"
    if distributed.launched():
        prefix += f" (rank {os.environ.get('RANK', '?')})"
    try:
        if distributed.launched() and not args.distributed:
            raise UserError(f"{args.command} runs in one process; launch it without torchrun "
                            f"(torchrun runs {', '.join(distributed_commands())}; a bench is "
                            "shared by plain bench workers, see --shard)")
        with process_scope():  # the command sets up the process once its config is known
            return int(args.handler(args) or 0)
    except UserError as exc:
        if args.debug:
            raise
        print(f"{prefix}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Interrupted as exc:
        if distributed.main_process():  # every rank stopped at the same step: one says so
            print(f"{prefix}: {exc.signal_name}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # a path the user gave that the system refuses
        problem = path_problem(exc)
        if args.debug or problem is None:
            raise
        print(f"{prefix}: error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RuntimeError as exc:
        if args.debug:
            raise
        from robust_mc.run.runtime import CHANNELS_LAST_VIEW  # torch is loaded by now

        if CHANNELS_LAST_VIEW in str(exc):  # a user's module reshapes with .view
            print(f"{prefix}: error: the network (or code it calls) reshapes a tensor with "
                  ".view(), which the channels-last layout does not allow; pass "
                  "--no-channels-last (or use .reshape() or .flatten() there)", file=sys.stderr)
            return EXIT_BAD_INPUT
        if not distributed.launched():
            raise
        # a collective failed: another process of the run died or was stopped
        reason = str(exc).splitlines()[0].split("] ")[-1].split(". ")[0]
        print(f"{prefix}: error: another process of the run ended ({reason}); the last saved "
              "state is kept: rerun the same torchrun command to continue", file=sys.stderr)
        return EXIT_LOST_PROCESS
    finally:
        distributed.stop()


if __name__ == "__main__":
    sys.exit(main())
