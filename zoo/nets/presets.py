"""Named architectures: the paper's networks (exact parameter counts) and small CPU-scale ones.

Each preset holds the standard spec together with its W-Asym and σ-Asym settings; pick the
variant with :func:`get_arch`. The settings are tabulated in ``docs/ARCHITECTURES.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from zoo.errors import SpecError
from zoo.nets.cnn import CNNSpec
from zoo.nets.mlp import MLPSpec
from zoo.nets.resnet import ResNetSpec
from zoo.nets.spec import ArchSpec, LayerAsym, WAsymSpec, check_variant, load_spec

__all__ = ["ArchPreset", "PRESETS", "get_arch", "preset_names"]


@dataclass(frozen=True)
class ArchPreset:
    name: str
    spec: ArchSpec
    description: str


def _subsets(n_fix: int, kappa: float) -> LayerAsym:
    return LayerAsym(n_fix=n_fix, kappa=kappa, mask_type="random_subsets")


# ResNet8 of the paper's zoo: convs fix whole filters of 8 input channels (the 3-channel stem is
# therefore fully fixed), the classifier fixes 8 entries per row; kappa = 2 throughout.
_RESNET8_W_ASYM = WAsymSpec(
    default=LayerAsym(n_fix=8, kappa=2.0, mask_type="filter_random_subsets"),
    layers={"head": _subsets(8, 2.0)},
)

# resnet8's topology on scikit-learn's 8x8 digits at stage widths 4/8/16. n_fix = 2 everywhere
# fixes the same *fraction* of each layer as resnet8's n_fix = 8 at 16/32/64 (1/2, 1/4, 1/8 of a
# conv's input channels; 2 of the head's 16 inputs); the 1-channel stem is fully fixed, as
# resnet8's 3-channel one is. kappa = 2 as in the paper.
_RESNET8_DIGITS_W_ASYM = WAsymSpec(
    default=LayerAsym(n_fix=2, kappa=2.0, mask_type="filter_random_subsets"),
    layers={"head": _subsets(2, 2.0)},
)
_RESNET8_DIGITS = dict(depth=8, base_channels=(4, 8, 16), in_channels=1, image_size=8, w_asym=_RESNET8_DIGITS_W_ASYM)

# ResNet20 of the paper's LMC experiment (docs/PAPER.md §2).
_RESNET20_W_ASYM = WAsymSpec(
    layers={
        "stem.layer": _subsets(12, 2.0),
        "stages.0.*.conv*": _subsets(36, 2.0),
        "stages.1.*.conv*": _subsets(54, 2.0),
        "stages.1.*.shortcut.0": _subsets(6, 2.0),
        "stages.2.*.conv*": _subsets(72, 2.0),
        "stages.2.*.shortcut.0": _subsets(8, 2.0),
        "head": _subsets(8, 2.0),
    }
)


def _mlp_w_asym(*rules: tuple[int, float]) -> WAsymSpec:
    """Per-layer (n_fix, kappa) for blocks.0, blocks.1, ..., and the head last."""
    names = [f"blocks.{i}.layer" for i in range(len(rules) - 1)] + ["head"]
    return WAsymSpec(layers={name: _subsets(n, k) for name, (n, k) in zip(names, rules)})


_PRESET_LIST = [
    ArchPreset(
        "resnet8",
        ResNetSpec(depth=8, w_asym=_RESNET8_W_ASYM),
        "ResNet8 of the paper's CIFAR-10 zoo: 78,042 params (W-Asym: 60,634 trainable)",
    ),
    ArchPreset(
        "resnet8-small",
        ResNetSpec(depth=8, width=0.875, w_asym=_RESNET8_W_ASYM),
        "ResNet8 at width 0.875 (14/28/56 channels): 59,944 params, the parameter-matched baseline",
    ),
    ArchPreset(
        "resnet20",
        ResNetSpec(depth=20, w_asym=_RESNET20_W_ASYM),
        "ResNet20 x1 of the paper's CIFAR-10 LMC runs: 272,474 params (W-Asym: 230,026 trainable)",
    ),
    ArchPreset(
        "mlp-mnist-lmc",
        MLPSpec(in_features=784, widths=(512, 512, 512), out_features=10, layer_norm=True,
                activation="gelu", w_asym=_mlp_w_asym((64, 1.0), (64, 1.0), (64, 0.5), (256, 0.25))),
        "MLP 784-512-512-512-10, LayerNorm + GELU, of the paper's MNIST LMC runs: 935,434 params",
    ),
    ArchPreset(
        "resnet8-digits",
        ResNetSpec(**_RESNET8_DIGITS),
        "resnet8's topology (GroupNorm, one BasicBlock per stage) for 8x8 digits, stage channels "
        "4/8/16: 5,142 params (W-Asym: 4,030 trainable)",
    ),
    ArchPreset(
        "resnet8-digits-small",
        ResNetSpec(**_RESNET8_DIGITS, width=0.875),
        "resnet8-digits at width 0.875 (4/7/14 channels): 4,089 params, about the W-Asym trainable count",
    ),
    ArchPreset(
        "mlp-digits",
        MLPSpec(in_features=64, widths=(32, 32), out_features=10,
                w_asym=_mlp_w_asym((8, 0.5), (8, 0.5), (16, 0.5))),
        "MLP 64-32-32-10, ReLU, for scikit-learn's 8x8 digits (offline default): 3,466 params",
    ),
    ArchPreset(
        "mlp-mnist",
        MLPSpec(in_features=784, widths=(64, 64), out_features=10,
                w_asym=_mlp_w_asym((64, 0.5), (16, 0.5), (32, 0.5))),
        "MLP 784-64-64-10, ReLU, for MNIST: 55,050 params",
    ),
    ArchPreset(
        "cnn-mnist",
        CNNSpec(in_channels=1, image_size=28, channels=(16, 16, 16), strides=(2, 2, 2), num_classes=10,
                w_asym=WAsymSpec(layers={"blocks.0.layer": _subsets(3, 0.5), "blocks.*.layer": _subsets(24, 0.5),
                                         "head": _subsets(4, 0.5)})),
        "Small CNN Zoo-style CNN for MNIST: three 3x3 stride-2 convs of 16 channels, GAP, linear: 4,970 params",
    ),
]

PRESETS: dict[str, ArchPreset] = {p.name: p for p in _PRESET_LIST}


def preset_names() -> list[str]:
    return list(PRESETS)


def get_arch(name: str, variant: str | None = "standard") -> ArchSpec:
    """The spec of a preset name, or of a ``.json``/``.yaml`` spec file, in ``variant``.

    A spec file's own variant is kept when ``variant`` is None.
    """
    if variant is not None:
        check_variant(variant)
    if name in PRESETS:
        spec = PRESETS[name].spec
    elif Path(name).suffix in (".json", ".yaml", ".yml"):
        spec = load_spec(name)
    else:
        raise SpecError(
            f"unknown architecture '{name}'; valid architectures: {', '.join(PRESETS)} "
            "(or a .yaml/.json spec file)"
        )
    return spec if variant is None else spec.with_variant(variant)
