"""W-Asymmetric linear and convolution layers (docs/PAPER.md §1).

The effective weight is ``W ⊙ M + κ·Z ⊙ (1 − M)``: entries where the mask ``M`` is 0 are fixed to
the random constants ``κ·Z``. It is computed with ``torch.where`` on every forward pass, so fixed
entries get exactly zero gradient and stay bit-identical whatever the optimiser does to the raw
parameter (AdamW's weight decay and momentum included). ``state_dict()`` stores the effective
weight, so a saved network reloads into a working one.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.masks import make_mask
from zoo.seeding import seeded_generator

__all__ = ["WAsymLinear", "WAsymConv2d", "is_w_asym"]


class _WAsymMixin:
    """Mask, fixed values and the effective weight, shared by the linear and conv layers."""

    weight: nn.Parameter
    mask: Tensor
    fixed_values: Tensor

    def _init_asym(self, *, n_fix: int, kappa: float, mask_type: str, seed: int) -> None:
        self.n_fix, self.kappa, self.mask_type, self.seed = int(n_fix), float(kappa), mask_type, int(seed)
        shape = tuple(self.weight.shape)
        mask = make_mask(shape, mask_type=mask_type, n_fix=n_fix, generator=seeded_generator(seed, "mask"))
        z = torch.randn(shape, generator=seeded_generator(seed, "values"))
        fixed = (self.kappa * z).masked_fill(mask, 0.0)
        device, dtype = self.weight.device, self.weight.dtype
        self.register_buffer("mask", mask.to(device), persistent=False)
        self.register_buffer("fixed_values", fixed.to(device=device, dtype=dtype), persistent=False)
        self._impose_fixed()

    def set_fixed_entries(self, mask: Tensor, fixed_values: Tensor) -> None:
        """Replace the mask (True = trainable) and the fixed values, e.g. by those stored with a zoo."""
        if mask.shape != self.weight.shape or fixed_values.shape != self.weight.shape:
            raise ValueError(f"mask and fixed values must have the weight's shape {tuple(self.weight.shape)}")
        self.mask = mask.to(device=self.weight.device, dtype=torch.bool).clone()
        self.fixed_values = fixed_values.to(self.fixed_values).masked_fill(self.mask, 0.0)
        self._impose_fixed()

    def effective_weight(self) -> Tensor:
        """The weight the layer computes with: trainable entries from ``weight``, fixed ones constant."""
        return torch.where(self.mask, self.weight, self.fixed_values)

    def fixed_entries(self) -> dict[str, Tensor]:
        """Boolean masks of the fixed entries of this layer's state_dict tensors (True = fixed)."""
        return {"weight": ~self.mask}

    @property
    def num_fixed(self) -> int:
        return int((~self.mask).sum())

    def reset_parameters(self) -> None:
        super().reset_parameters()  # type: ignore[misc]
        if "mask" in self._buffers:  # type: ignore[attr-defined]
            self._impose_fixed()

    def _impose_fixed(self) -> None:
        with torch.no_grad():
            self.weight.copy_(self.effective_weight())

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)  # type: ignore[misc]
        weight = self.effective_weight()
        destination[prefix + "weight"] = weight if keep_vars else weight.detach()

    def _asym_repr(self) -> str:
        return f"mask_type={self.mask_type}, n_fix={self.n_fix}, kappa={self.kappa:g}, fixed={self.num_fixed}"


class WAsymLinear(_WAsymMixin, nn.Linear):
    r"""Linear layer with some weight entries fixed to random constants.

    .. math::
        y = x \left(W \odot M + \kappa Z \odot (1 - M)\right)^\top + b

    Args:
        n_fix: fixed entries per output row (unused by ``densest``).
        kappa: standard deviation of the fixed values (``Z ~ N(0, 1)``).
        mask_type: ``random_subsets`` or ``densest``.
        seed: integer seed of the mask and of ``Z``; the same seed gives bit-identical tensors in
            any process.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        n_fix: int,
        kappa: float = 1.0,
        mask_type: str = "random_subsets",
        seed: int = 0,
        device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._init_asym(n_fix=n_fix, kappa=kappa, mask_type=mask_type, seed=seed)

    @classmethod
    def from_dense(cls, layer: nn.Linear, *, n_fix: int, kappa: float, mask_type: str, seed: int) -> "WAsymLinear":
        """A W-Asym copy of ``layer`` keeping its trainable entries' values."""
        new = cls(layer.in_features, layer.out_features, layer.bias is not None, n_fix=n_fix,
                  kappa=kappa, mask_type=mask_type, seed=seed,
                  device=layer.weight.device, dtype=layer.weight.dtype)
        _copy_dense(layer, new)
        return new

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.effective_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._asym_repr()}"


class WAsymConv2d(_WAsymMixin, nn.Conv2d):
    r"""2-D convolution with some kernel entries fixed to random constants.

    .. math::
        y = \left(W \odot M + \kappa Z \odot (1 - M)\right) \star x + b

    Args:
        n_fix: fixed entries per output channel, over its ``in·kh·kw`` positions
            (``random_subsets``), or fixed whole input filters (``filter_random_subsets``).
        kappa, mask_type, seed: as in :class:`WAsymLinear`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        bias: bool = True,
        *,
        n_fix: int,
        kappa: float = 1.0,
        mask_type: str = "random_subsets",
        seed: int = 0,
        dilation: int | tuple[int, int] = 1,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups=1, bias=bias, padding_mode=padding_mode, device=device, dtype=dtype)
        self._init_asym(n_fix=n_fix, kappa=kappa, mask_type=mask_type, seed=seed)

    @classmethod
    def from_dense(cls, layer: nn.Conv2d, *, n_fix: int, kappa: float, mask_type: str, seed: int) -> "WAsymConv2d":
        """A W-Asym copy of ``layer`` keeping its trainable entries' values."""
        if layer.groups != 1:
            raise ValueError("W-Asym convolutions need groups=1")
        new = cls(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                  layer.padding, layer.bias is not None, n_fix=n_fix, kappa=kappa,
                  mask_type=mask_type, seed=seed, dilation=layer.dilation,
                  padding_mode=layer.padding_mode, device=layer.weight.device, dtype=layer.weight.dtype)
        _copy_dense(layer, new)
        return new

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._asym_repr()}"


def _copy_dense(src: nn.Module, dst: _WAsymMixin) -> None:
    with torch.no_grad():
        dst.weight.copy_(src.weight)
        if src.bias is not None:
            dst.bias.copy_(src.bias)  # type: ignore[attr-defined]
    dst._impose_fixed()


def is_w_asym(module: nn.Module) -> bool:
    return isinstance(module, _WAsymMixin)

