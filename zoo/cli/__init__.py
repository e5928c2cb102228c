"""What the ``symzoo`` command groups share: output checks, JSON output, what an interrupted command
keeps. The command line's root, which assembles the groups, is :mod:`symzoo.cli`."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any


__all__ = ["print_json", "can_write_in", "models_kept"]


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
