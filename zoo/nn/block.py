"""The block every family is made of: a weight layer, an optional norm, an optional activation."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["LayerBlock"]


class LayerBlock(nn.Module):
    r"""``act(norm(layer(x)))``; norm and activation may be absent (``nn.Identity``)."""

    def __init__(self, layer: nn.Module, norm: nn.Module | None = None, act: nn.Module | None = None) -> None:
        super().__init__()
        self.layer = layer
        self.norm = norm if norm is not None else nn.Identity()
        self.act = act if act is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.layer(x)))
