"""``--device`` names and the torch device they mean: one rule for every command (``auto`` is CUDA
when present), so a zoo and an experiment run on the same device from the same option."""

from __future__ import annotations

import torch

from zoo.errors import SpecError

__all__ = ["DEVICES", "check_device", "resolve_device"]

DEVICES = ("auto", "cpu", "cuda")


def check_device(device: str) -> None:
    """A valid ``--device`` name, checked where the device itself may be on another machine."""
    if device not in DEVICES:
        raise SpecError(f"--device '{device}' is unknown; expected auto, cpu or cuda")


def resolve_device(device: str) -> torch.device:
    """The torch device of a ``--device`` name on this machine; ``cuda`` without one is refused."""
    check_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SpecError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    return torch.device(device)
