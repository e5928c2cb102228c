"""Plain CNNs as in the Small CNN Zoo (Unterthiner et al.): conv stack → global average pool → Linear."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from zoo.errors import SpecError
from zoo.nets.spec import ArchSpec, positive_ints
from zoo.nn import ACTIVATIONS, Activation, LayerBlock
from zoo.symmetry import PermutationSpec, PermutationSpecBuilder

__all__ = ["CNNSpec", "CNN"]


@dataclass(frozen=True, kw_only=True)
class CNNSpec(ArchSpec):
    """A conv stack, global average pooling and a linear classifier.

    Attributes:
        in_channels, image_size: input shape ``in_channels × image_size × image_size``.
        channels: output channels of each conv layer.
        strides: stride of each conv layer (default 1 for all).
        kernel_size: square kernel size of every conv layer.
        padding: ``same`` (``kernel_size // 2``) or ``valid`` (none, Keras' default).
        num_classes: outputs of the final Linear.
        group_norm: GroupNorm(1, C) after each conv, before the activation.
        activation: elementwise nonlinearity (FiGLU in the σ-Asym variant).
    """

    family: ClassVar[str] = "cnn"
    in_channels: int
    image_size: int
    channels: tuple[int, ...]
    num_classes: int
    strides: tuple[int, ...] | None = None
    kernel_size: int = 3
    padding: str = "same"
    group_norm: bool = False
    activation: str = "relu"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.channels or not positive_ints(self.in_channels, self.image_size, self.num_classes, self.kernel_size,
                                                  *self.channels, *(self.strides or ())):
            raise SpecError("cnn: in_channels, image_size, channels, strides, kernel_size and num_classes must be "
                            "positive integers")
        if self.strides is not None and len(self.strides) != len(self.channels):
            raise SpecError(f"cnn: strides has {len(self.strides)} entries; expected one per conv layer ({len(self.channels)})")
        if self.padding not in ("same", "valid"):
            raise SpecError(f"cnn: padding '{self.padding}' is unknown; expected 'same' or 'valid'")
        if self.activation not in ACTIVATIONS:
            raise SpecError(f"cnn: activation '{self.activation}' is unknown; expected one of {', '.join(ACTIVATIONS)}")
        self._check_size()

    def build_standard(self) -> nn.Module:
        return CNN(self)

    def input_shape(self) -> tuple[int, ...]:
        return (self.in_channels, self.image_size, self.image_size)

    def num_outputs(self) -> int:
        return self.num_classes

    def num_weights(self) -> int:
        dims, k = (self.in_channels, *self.channels), self.kernel_size
        convs = sum(c_in * c_out * k * k + c_out + (2 * c_out if self.group_norm else 0)
                    + (c_out * c_out if self.variant == "sigma_asym" else 0) for c_in, c_out in zip(dims[:-1], dims[1:]))
        return convs + dims[-1] * self.num_classes + self.num_classes


class CNN(nn.Module):
    """Conv blocks ``blocks.{i}`` (layer, norm, act), global average pooling, ``head`` Linear."""

    def __init__(self, spec: CNNSpec) -> None:
        super().__init__()
        dims = (spec.in_channels, *spec.channels)
        strides = spec.strides or (1,) * len(spec.channels)
        k = spec.kernel_size
        self.blocks = nn.ModuleList(
            LayerBlock(
                nn.Conv2d(c_in, c_out, k, stride=s, padding=k // 2 if spec.padding == "same" else 0),
                nn.GroupNorm(1, c_out) if spec.group_norm else None,
                Activation(spec.activation, c_out, conv=True),
            )
            for c_in, c_out, s in zip(dims[:-1], dims[1:], strides)
        )
        self.head = nn.Linear(dims[-1], spec.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(dim=(2, 3)))

    def permutation_spec(self) -> PermutationSpec:
        b = PermutationSpecBuilder()
        b.layer("head", self.head, None, b.chain("blocks", self.blocks))
        return b.build()
