"""Multilayer perceptrons: ``[Linear → (LayerNorm) → act] × L → Linear``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from zoo.errors import SpecError
from zoo.nets.spec import ArchSpec, positive_ints
from zoo.nn import ACTIVATIONS, Activation, LayerBlock
from zoo.symmetry import PermutationSpec, PermutationSpecBuilder

__all__ = ["MLPSpec", "MLP"]


@dataclass(frozen=True, kw_only=True)
class MLPSpec(ArchSpec):
    """An MLP on flattened inputs.

    Attributes:
        in_features: input size (inputs of any shape are flattened).
        widths: hidden layer widths.
        out_features: number of outputs (classes).
        layer_norm: LayerNorm after each hidden Linear, before the activation.
        activation: elementwise nonlinearity (replaced by FiGLU in the σ-Asym variant).
    """

    family: ClassVar[str] = "mlp"
    in_features: int
    widths: tuple[int, ...]
    out_features: int
    layer_norm: bool = False
    activation: str = "relu"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not positive_ints(self.in_features, self.out_features, *self.widths):
            raise SpecError(f"mlp: in_features, widths and out_features must be positive integers, got "
                            f"{self.in_features}, {list(self.widths)}, {self.out_features}")
        if self.activation not in ACTIVATIONS:
            raise SpecError(f"mlp: activation '{self.activation}' is unknown; expected one of {', '.join(ACTIVATIONS)}")
        self._check_size()

    def build_standard(self) -> nn.Module:
        return MLP(self)

    def input_shape(self) -> tuple[int, ...]:
        return (self.in_features,)

    def accepts(self, example_shape: tuple[int, ...]) -> bool:
        return math.prod(example_shape) == self.in_features  # inputs are flattened

    def num_outputs(self) -> int:
        return self.out_features

    def num_weights(self) -> int:
        dims = (self.in_features, *self.widths)
        hidden = sum(d_in * d_out + d_out + (2 * d_out if self.layer_norm else 0)
                     + (d_out * d_out if self.variant == "sigma_asym" else 0) for d_in, d_out in zip(dims[:-1], dims[1:]))
        return hidden + dims[-1] * self.out_features + self.out_features


class MLP(nn.Module):
    """Hidden blocks ``blocks.{i}`` (layer, norm, act) and a ``head`` Linear."""

    def __init__(self, spec: MLPSpec) -> None:
        super().__init__()
        dims = (spec.in_features, *spec.widths)
        self.blocks = nn.ModuleList(
            LayerBlock(
                nn.Linear(d_in, d_out),
                nn.LayerNorm(d_out) if spec.layer_norm else None,
                Activation(spec.activation, d_out),
            )
            for d_in, d_out in zip(dims[:-1], dims[1:])
        )
        self.head = nn.Linear(dims[-1], spec.out_features)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.flatten(x, 1)
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def permutation_spec(self) -> PermutationSpec:
        b = PermutationSpecBuilder()
        b.layer("head", self.head, None, b.chain("blocks", self.blocks))
        return b.build()
