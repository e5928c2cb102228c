"""The ``symzoo`` command line. Sub-command groups live in their own modules and register here."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from zoo.errors import SymzooError, one_line, os_error_message

__all__ = ["main", "build_parser", "print_json", "can_write_in"]


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


def can_write_in(directory: str | Path) -> bool:
    """Whether files can be created in ``directory`` (or, while it does not exist, in the nearest
    folder above it, where it would be made). Tried with a probe file, since permission bits say
    nothing for root or on a read-only mount: commands check their output folder before long work."""
    path = Path(directory)
    while not path.exists():
        if path.parent == path:
            return False
        path = path.parent
    if not path.is_dir():
        return False
    try:
        handle, probe = tempfile.mkstemp(dir=path, prefix=".symzoo-probe-")
    except OSError:
        return False
    os.close(handle)
    os.unlink(probe)
    return True


def print_json(obj: Any) -> None:
    """The one JSON object of a ``--json`` command, on stdout."""
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except SymzooError as err:
        print(f"symzoo: error: {one_line(str(err))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except OSError as err:  # a path the user gave cannot be read or written (missing, read-only, full disk)
        print(f"symzoo: error: {os_error_message(err)}", file=sys.stderr)
        return 2

