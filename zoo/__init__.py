"""symzoo's weight-space core: architectures, W-Asym/σ-Asym layers, parameter layout, symmetries."""

from zoo.errors import SpecError, SymzooError
from zoo.layout import ParamLayout, TensorSlot, fixed_entry_masks
from zoo.nets import (
    PRESETS,
    VARIANTS,
    ArchSpec,
    CNNSpec,
    LayerAsym,
    MLPSpec,
    ResNetSpec,
    SigmaAsymSpec,
    WAsymSpec,
    get_arch,
    load_spec,
    spec_from_dict,
)
from zoo.nn import FiGLU, WAsymConv2d, WAsymLinear
from zoo.symmetry import (
    PermutationSpec,
    permutation_spec,
    permute_model,
    permute_state_dict,
    random_permutations,
    symmetry_deviation,
)

__version__ = "0.1.0"

__all__ = [
    "ArchSpec", "CNNSpec", "FiGLU", "LayerAsym", "MLPSpec", "PRESETS", "ParamLayout", "PermutationSpec",
    "ResNetSpec", "SigmaAsymSpec", "SpecError", "SymzooError", "TensorSlot", "VARIANTS", "WAsymConv2d",
    "WAsymLinear", "WAsymSpec", "fixed_entry_masks", "get_arch", "load_spec", "permutation_spec",
    "permute_model", "permute_state_dict", "random_permutations", "spec_from_dict", "symmetry_deviation",
    "__version__",
]
