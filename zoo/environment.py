"""What a result was made with: software versions and the machine, recorded beside zoos and
benchmark results so that a number can be traced to where it came from. The one place that reads
them, so every record names the same things the same way."""

from __future__ import annotations

import importlib
import os
import platform
from pathlib import Path

import torch

__all__ = ["software_record", "cpu_model", "ram_gib", "device_label", "machine_record"]


def software_record(*packages: str) -> dict[str, str]:
    """symzoo's, torch's and Python's versions, and those of ``packages`` (importable names with a
    ``__version__``), as ``{"symzoo", "torch", *packages, "python"}``."""
    import zoo

    record = {"symzoo": zoo.__version__, "torch": torch.__version__}
    record |= {name: importlib.import_module(name).__version__ for name in packages}
    return record | {"python": platform.python_version()}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows (may be empty)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def ram_gib() -> float | None:
    """The machine's memory in GiB (``/proc/meminfo``), None where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def device_label() -> str:
    """The device torch computes on here, in words: the GPU's name, else ``cpu (N threads)``."""
    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"


def machine_record() -> dict[str, object]:
    """The machine a timing was taken on: CPU model, cores, torch threads and version, and the GPU
    where there is one."""
    info: dict[str, object] = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                               "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info
