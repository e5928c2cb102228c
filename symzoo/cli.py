"""The ``symzoo`` command line: the root parser, with each command group registered from its own
module, and the one place that turns errors and Ctrl-C into a line on stderr and an exit status."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from benchmarks import cli as bench_cli
from generators import cli as generate_cli
from metanets import cli as metanet_cli
from zoo.cli import arch as arch_cli
from zoo.cli import storage as storage_cli
from zoo.errors import Interrupted, SymzooError, one_line, os_error_message

__all__ = ["main", "build_parser"]

COMMAND_GROUPS = (arch_cli, storage_cli, generate_cli, metanet_cli, bench_cli)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr with exit status 2, like every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="symzoo", description="Model zoos of standard and symmetry-reduced networks.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


# Ctrl-C in a command that does not say what it keeps (by raising ``Interrupted``).
INTERRUPTED = "stopped before the command finished; run the same command again"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``symzoo argv``; returns the exit status. Bad input: one line, status 2. Ctrl-C: one
    line saying what is kept and how to resume (the command's :class:`Interrupted`), status 130."""
    try:
        args = build_parser().parse_args(argv)
        return int(args.handler(args) or 0)
    except KeyboardInterrupt as err:
        reason = str(err) if isinstance(err, Interrupted) and str(err) else INTERRUPTED
        print(f"symzoo: interrupted: {one_line(reason)}", file=sys.stderr)
        return 130
    except SymzooError as err:
        print(f"symzoo: error: {one_line(str(err))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except OSError as err:  # a path the user gave cannot be read or written (missing, read-only, full disk)
        print(f"symzoo: error: {os_error_message(err)}", file=sys.stderr)
        return 2

