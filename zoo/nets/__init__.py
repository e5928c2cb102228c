"""Architecture families (MLP, CNN, ResNet), their typed specs, variants and presets."""

from zoo.nets.cnn import CNN, CNNSpec
from zoo.nets.mlp import MLP, MLPSpec
from zoo.nets.presets import PRESETS, ArchPreset, get_arch, preset_names
from zoo.nets.resnet import BasicBlock, ResNet, ResNetSpec
from zoo.nets.spec import (
    FAMILIES,
    VARIANTS,
    ArchSpec,
    LayerAsym,
    SigmaAsymSpec,
    WAsymSpec,
    check_variant,
    load_spec,
    spec_from_dict,
)
from zoo.nets.variants import apply_sigma_asym, apply_variant, apply_w_asym

__all__ = [
    "ArchPreset", "ArchSpec", "BasicBlock", "CNN", "CNNSpec", "FAMILIES", "LayerAsym", "MLP", "MLPSpec",
    "PRESETS", "ResNet", "ResNetSpec", "SigmaAsymSpec", "VARIANTS", "WAsymSpec", "apply_sigma_asym",
    "apply_variant", "apply_w_asym", "check_variant", "get_arch", "load_spec", "preset_names", "spec_from_dict",
]
