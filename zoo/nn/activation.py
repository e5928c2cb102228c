"""Elementwise nonlinearities that know their width, so that σ-Asym can swap them for FiGLU."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ACTIVATIONS", "Activation"]

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "silu": F.silu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "leaky_relu": F.leaky_relu,
    "identity": lambda x: x,
}


class Activation(nn.Module):
    """``kind(x)`` elementwise, on ``features`` units (channels when ``conv``)."""

    def __init__(self, kind: str, features: int, *, conv: bool = False) -> None:
        super().__init__()
        if kind not in ACTIVATIONS:
            raise ValueError(f"unknown activation '{kind}'; expected one of {', '.join(ACTIVATIONS)}")
        self.kind, self.features, self.conv = kind, int(features), bool(conv)
        self._fn = ACTIVATIONS[kind]

    def forward(self, x: Tensor) -> Tensor:
        return self._fn(x)

    def extra_repr(self) -> str:
        return f"{self.kind}, features={self.features}"
