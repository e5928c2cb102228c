"""What every experiment report shares: the software/device record, mean ± std, stderr logging,
and PNG figures written atomically."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from generators.data import DATA_DIR_HELP
from zoo.environment import device_label, software_record
from zoo.storage.files import atomic_write

__all__ = ["environment", "summary", "summary_text", "settings_difference", "log", "save_figure", "pyplot",
           "add_run_options", "print_report"]


def environment() -> dict[str, Any]:
    """Software versions and the device a result was measured on (``symzoo``, ``torch``,
    ``python``, ``device``: the keys every report and leaderboard cell carries)."""
    return {**software_record(), "device": device_label()}


def summary(values: list[float]) -> dict[str, float]:
    """Mean and (population) standard deviation, as plain floats for JSON."""
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def summary_text(cell: dict[str, float] | None, digits: int = 3) -> str:
    """A :func:`summary` as a table cell, ``"0.912 ± 0.004"``; ``"—"`` for None (nothing to summarise)."""
    return "—" if cell is None else f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f}"


def settings_difference(stored: Any, wanted: Any, where: str = "") -> str:
    """Every setting in which a saved result's config differs from the one asked for, as dotted
    paths: ``"seeds 2 there, 1 now; train.epochs 7 there, 2 now"``. Saved results are reused only
    when their config matches; this says why one was not."""
    if isinstance(stored, dict) and isinstance(wanted, dict):
        parts = [settings_difference(stored.get(key), wanted.get(key), f"{where}.{key}" if where else key)
                 for key in sorted(set(stored) | set(wanted), key=str) if stored.get(key) != wanted.get(key)]
        return "; ".join(parts)
    return f"{where or 'config'} {json.dumps(stored)} there, {json.dumps(wanted)} now"


def images_text(first: int | None, total: int | None, kind: str) -> str:
    """Which images were used, with the count actually used: ``"the first 5,000 training images"``
    when ``first`` is below the set's ``total``, else ``"all 1,347 training images"`` (or ``"all
    training images"`` when the total is not known)."""
    if first is not None and (total is None or first < total):
        return f"the first {first:,} {kind} images"
    return f"all {total:,} {kind} images" if total else f"all {kind} images"


def log(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr)


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, title: str, dpi: int = 120) -> None:
    """Title, tight layout, and the PNG written atomically; the figure is closed."""
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi), durable=False)
    pyplot().close(fig)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options every experiment command shares: device, data folder, output format."""
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda (default: %(default)s)")
    parser.add_argument("--data-dir", metavar="D", help=DATA_DIR_HELP)
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def print_report(args: argparse.Namespace, report: dict[str, Any], table: str, written: str) -> None:
    """``--json``: the report as one JSON object; otherwise the Markdown table and what was written."""
    from zoo.cli import print_json

    if args.json:
        print_json(report)
    else:
        print(table)
        print(f"wrote {written}")
