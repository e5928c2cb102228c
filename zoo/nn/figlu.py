"""FiGLU, the fixed-gate nonlinearity of σ-Asymmetric networks (docs/PAPER.md §1)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.seeding import seeded_generator

__all__ = ["FiGLU"]


class FiGLU(nn.Module):
    r"""Fixed Gated Linear Unit.

    .. math::
        \mathrm{FiGLU}(x) = \sigma(F x) \odot x

    ``F`` is a fixed Gaussian ``d×d`` matrix (a ``C×C`` 1×1 convolution in the conv form) with
    standard deviation ``1/√d`` by default. Almost surely it commutes with no permutation or
    invertible diagonal matrix, so FiGLU has none of the equivariances that make hidden units of
    elementwise nonlinearities interchangeable. ``F`` is a buffer in the ``state_dict`` (all of its
    entries are fixed), drawn from ``seed`` so that a zoo shares it.

    Args:
        features: ``d`` (linear form) or the channel count ``C`` (conv form, inputs ``N×C×H×W``).
        conv: use the 1×1-convolution form.
        std: standard deviation of ``F``; ``None`` means ``1/√features``.
        seed: integer seed of ``F``.
    """

    def __init__(self, features: int, *, conv: bool = False, std: float | None = None, seed: int = 0) -> None:
        super().__init__()
        self.features, self.conv, self.seed = int(features), bool(conv), int(seed)
        self.std = float(std) if std is not None else 1.0 / math.sqrt(self.features)
        shape = (self.features, self.features, 1, 1) if self.conv else (self.features, self.features)
        self.register_buffer("F_mat", torch.empty(shape))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Redraw ``F`` from the seed (so the result is always the same matrix)."""
        values = torch.randn(self.features, self.features, generator=seeded_generator(self.seed, "figlu"))
        with torch.no_grad():
            self.F_mat.copy_((self.std * values).reshape(self.F_mat.shape))

    def forward(self, x: Tensor) -> Tensor:
        pre_gate = F.conv2d(x, self.F_mat) if self.conv else F.linear(x, self.F_mat)
        return torch.sigmoid(pre_gate) * x

    def fixed_entries(self) -> dict[str, Tensor]:
        """Every entry of ``F`` is fixed."""
        return {"F_mat": torch.ones(self.F_mat.shape, dtype=torch.bool, device=self.F_mat.device)}

    def extra_repr(self) -> str:
        return f"{self.features}, conv={self.conv}, std={self.std:.4g}"
