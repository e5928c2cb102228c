"""CIFAR-style ResNets (depth 6n+2) with GroupNorm(1, C) and 1×1-conv shortcuts where shapes change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from zoo.errors import SpecError
from zoo.nets.spec import ArchSpec
from zoo.nn import ACTIVATIONS, Activation, LayerBlock
from zoo.symmetry import PermutationSpec, PermutationSpecBuilder

__all__ = ["ResNetSpec", "ResNet", "BasicBlock"]


@dataclass(frozen=True, kw_only=True)
class ResNetSpec(ArchSpec):
    """A ResNet of three stages of BasicBlocks (stride 1, 2, 2).

    Attributes:
        depth: ``6n + 2`` (8, 14, 20, 32, ...): ``n`` blocks per stage.
        width: channel multiplier; stage channels are ``round(c · width)`` for ``base_channels``.
        base_channels: channels of the three stages at width 1 (the stem has the first).
        in_channels, image_size: input shape.
        num_classes: outputs of the final Linear.
        activation: elementwise nonlinearity (FiGLU in the σ-Asym variant).
    """

    family: ClassVar[str] = "resnet"
    depth: int = 20
    width: float = 1.0
    base_channels: tuple[int, int, int] = (16, 32, 64)
    in_channels: int = 3
    image_size: int = 32
    num_classes: int = 10
    activation: str = "relu"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.depth < 8 or (self.depth - 2) % 6:
            raise SpecError(f"resnet: depth must be 6n+2 with n >= 1 (8, 14, 20, ...), got {self.depth}")
        if self.width <= 0 or min(self.channels) <= 0:
            raise SpecError(f"resnet: width {self.width} gives no channels")
        if self.activation not in ACTIVATIONS:
            raise SpecError(f"resnet: activation '{self.activation}' is unknown; expected one of {', '.join(ACTIVATIONS)}")
        self._check_size()

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(round(c * self.width) for c in self.base_channels)

    def num_outputs(self) -> int:
        return self.num_classes

    def num_weights(self) -> int:
        figlu = (lambda c: c * c) if self.variant == "sigma_asym" else (lambda c: 0)  # noqa: E731
        c0 = self.channels[0]
        total = self.in_channels * c0 * 9 + 2 * c0 + figlu(c0)  # stem: conv, GroupNorm, activation
        c_in = c0
        for s, c_out in enumerate(self.channels):
            for b in range(self.blocks_per_stage):
                total += c_in * c_out * 9 + c_out * c_out * 9 + 4 * c_out + 2 * figlu(c_out)
                if (s > 0 and b == 0) or c_in != c_out:  # 1×1 conv + GroupNorm shortcut
                    total += c_in * c_out + 2 * c_out
                c_in = c_out
        return total + c_in * self.num_classes + self.num_classes

    @property
    def blocks_per_stage(self) -> int:
        return (self.depth - 2) // 6

    def build_standard(self) -> nn.Module:
        return ResNet(self)

    def input_shape(self) -> tuple[int, ...]:
        return (self.in_channels, self.image_size, self.image_size)


class BasicBlock(nn.Module):
    r"""``act2(norm2(conv2(act1(norm1(conv1(x))))) + shortcut(x))``."""

    def __init__(self, c_in: int, c_out: int, stride: int, activation: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(1, c_out)
        self.act1 = Activation(activation, c_out, conv=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(1, c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.GroupNorm(1, c_out))
        self.act2 = Activation(activation, c_out, conv=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.norm1(self.conv1(x)))
        return self.act2(self.norm2(self.conv2(out)) + self.shortcut(x))

    def add_to_spec(self, b: PermutationSpecBuilder, prefix: str, stream_in: str, stream_out: str) -> None:
        """Declare this block's tensors; ``stream_in``/``stream_out`` are residual-stream perms."""
        inner = b.perm(f"{prefix}.inner", self.conv1.out_channels)
        b.layer(f"{prefix}.conv1", self.conv1, inner, stream_in)
        b.norm(f"{prefix}.norm1", self.norm1, inner)
        b.layer(f"{prefix}.conv2", self.conv2, stream_out, inner)
        b.norm(f"{prefix}.norm2", self.norm2, stream_out)
        if isinstance(self.shortcut, nn.Sequential):
            b.layer(f"{prefix}.shortcut.0", self.shortcut[0], stream_out, stream_in)
            b.norm(f"{prefix}.shortcut.1", self.shortcut[1], stream_out)


class ResNet(nn.Module):
    """``stem`` (conv, norm, act) → ``stages.{s}.{b}`` BasicBlocks → average pool → ``head``."""

    def __init__(self, spec: ResNetSpec) -> None:
        super().__init__()
        channels = spec.channels
        self.stem = LayerBlock(
            nn.Conv2d(spec.in_channels, channels[0], 3, padding=1, bias=False),
            nn.GroupNorm(1, channels[0]),
            Activation(spec.activation, channels[0], conv=True),
        )
        stages, c_in = [], channels[0]
        for s, c_out in enumerate(channels):
            blocks = []
            for b in range(spec.blocks_per_stage):
                stride = 2 if (s > 0 and b == 0) else 1
                blocks.append(BasicBlock(c_in, c_out, stride, spec.activation))
                c_in = c_out
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(channels[-1], spec.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(self.stem(x))
        return self.head(x.mean(dim=(2, 3)))

    def permutation_spec(self) -> PermutationSpec:
        """One permutation per residual stream (it changes only where a 1×1 shortcut maps it) and
        one per block interior."""
        b = PermutationSpecBuilder()
        stream = b.perm("stream.0", self.stem.layer.out_channels)
        b.layer("stem.layer", self.stem.layer, stream, None)
        b.norm("stem.norm", self.stem.norm, stream)
        for s, stage in enumerate(self.stages):
            for i, block in enumerate(stage):
                out = stream
                if isinstance(block.shortcut, nn.Sequential):
                    out = b.perm(f"stream.{s}.{i}", block.conv2.out_channels)
                block.add_to_spec(b, f"stages.{s}.{i}", stream, out)
                stream = out
        b.layer("head", self.head, None, stream)
        return b.build()
