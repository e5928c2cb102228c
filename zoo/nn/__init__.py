"""Layers of symzoo networks: W-Asym linear/conv, FiGLU, and the shared building blocks.

Modules holding fixed (non-trainable) entries in their ``state_dict`` implement
``fixed_entries() -> dict[str, BoolTensor]`` (local tensor name -> True where fixed); the
parameter layout collects these to build a zoo's trainable mask.
"""

from zoo.nn.activation import ACTIVATIONS, Activation
from zoo.nn.block import LayerBlock
from zoo.nn.figlu import FiGLU
from zoo.nn.wasym import WAsymConv2d, WAsymLinear, is_w_asym

__all__ = ["ACTIVATIONS", "Activation", "FiGLU", "LayerBlock", "WAsymConv2d", "WAsymLinear", "is_w_asym"]
