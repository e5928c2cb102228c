"""What every experiment report shares: the software/device record, mean ± std, stderr logging,
and PNG figures written atomically."""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from generators.data import DATA_DIR_HELP
from zoo.storage.files import atomic_write

__all__ = ["environment", "summary", "log", "save_figure", "pyplot", "add_run_options", "print_report"]


def environment() -> dict[str, Any]:
    """Software versions and the device a result was measured on."""
    import zoo

    return {"symzoo": zoo.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"}


def summary(values: list[float]) -> dict[str, float]:
    """Mean and (population) standard deviation, as plain floats for JSON."""
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


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
