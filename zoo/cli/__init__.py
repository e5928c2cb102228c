"""The ``symzoo`` command line. Sub-command groups live in their own modules and register here."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from zoo.errors import SymzooError

__all__ = ["main", "build_parser", "print_json"]


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr with exit status 2, like every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


# Modules that add sub-commands (each has ``register(commands)``). Named, not imported, here:
# ``zoo`` must not depend on the packages built on top of it.
COMMAND_MODULES = ("zoo.cli.arch", "zoo.cli.storage", "generators.cli", "metanets.cli", "benchmarks.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="symzoo", description="Model zoos of standard and symmetry-reduced networks.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(commands)
    return parser


def print_json(obj: Any) -> None:
    """The one JSON object of a ``--json`` command, on stdout."""
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except SymzooError as err:
        print(f"symzoo: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0

