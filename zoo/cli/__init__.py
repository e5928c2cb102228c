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

from zoo.errors import Interrupted, SymzooError, one_line, os_error_message

__all__ = ["main", "build_parser", "print_json", "can_write_in", "models_kept"]


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


def models_kept(zoo_dir: str | Path) -> str:
    """What an interrupted ``generate`` or ``import`` keeps: the models ``zoo.json`` lists now."""
    from zoo.storage.format import MANIFEST
    from zoo.storage.manifest import Manifest

    resume = "run the same command again to resume"
    if not (Path(zoo_dir) / MANIFEST).is_file():
        return f"no model was stored in {zoo_dir} yet; {resume}"
    try:
        n = Manifest.load(Path(zoo_dir)).rows()
    except Exception:  # noqa: BLE001 - a damaged zoo.json is for `verify` to report, not this line
        return f"the models stored in {zoo_dir} are kept; {resume}"
    return f"{n:,} model{'s' if n != 1 else ''} stored in {zoo_dir} {'are' if n != 1 else 'is'} kept; {resume}"


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

