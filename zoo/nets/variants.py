"""Turn a standard network into its W-Asym or σ-Asym variant, in place of its layers.

Variants are conversions of the one standard network of a family, never separate copies of it:
Linear/Conv2d layers selected by the W-Asym rules become :class:`WAsymLinear` /
:class:`WAsymConv2d`, and every :class:`Activation` becomes a :class:`FiGLU`. Each layer's seed is
derived from ``asym_seed`` and its qualified name.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import nn

from zoo.errors import SpecError
from zoo.nn import Activation, FiGLU, WAsymConv2d, WAsymLinear
from zoo.seeding import derive_seed

if TYPE_CHECKING:  # the specs import this module to build their variants
    from zoo.nets.spec import ArchSpec, SigmaAsymSpec, WAsymSpec

__all__ = ["apply_variant", "apply_w_asym", "apply_sigma_asym"]

_W_ASYM_OF: dict[type[nn.Module], type] = {nn.Linear: WAsymLinear, nn.Conv2d: WAsymConv2d}


def apply_variant(model: nn.Module, spec: ArchSpec) -> nn.Module:
    if spec.variant == "w_asym":
        assert spec.w_asym is not None
        return apply_w_asym(model, spec.w_asym, spec.asym_seed)
    if spec.variant == "sigma_asym":
        return apply_sigma_asym(model, spec.sigma_asym, spec.asym_seed)
    return model


def apply_w_asym(model: nn.Module, settings: WAsymSpec, asym_seed: int) -> nn.Module:
    """Replace the Linear/Conv2d layers that ``settings`` selects by their W-Asym versions."""
    weight_layers = [name for name, m in model.named_modules() if type(m) in _W_ASYM_OF]
    for pattern in settings.layers:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in weight_layers):
            raise SpecError(
                f"w_asym.layers: pattern '{pattern}' matches no Linear/Conv2d layer; layers are "
                f"{', '.join(weight_layers)}"
            )

    def convert(name: str, layer: nn.Module) -> nn.Module | None:
        rule = settings.rule_for(name)
        if rule is None or (rule.n_fix == 0 and rule.mask_type != "densest"):
            return None
        try:
            return _W_ASYM_OF[type(layer)].from_dense(
                layer, n_fix=rule.n_fix, kappa=rule.kappa, mask_type=rule.mask_type,
                seed=derive_seed(asym_seed, name),
            )
        except (SpecError, ValueError) as err:
            raise SpecError(f"w_asym layer '{name}': {err}") from None

    _replace(model, lambda m: type(m) in _W_ASYM_OF, convert)
    return model


def apply_sigma_asym(model: nn.Module, settings: SigmaAsymSpec, asym_seed: int) -> nn.Module:
    """Replace every :class:`Activation` by a :class:`FiGLU` of the same width."""

    def convert(name: str, act: nn.Module) -> nn.Module:
        assert isinstance(act, Activation)
        return FiGLU(act.features, conv=act.conv, std=settings.std, seed=derive_seed(asym_seed, name))

    _replace(model, lambda m: isinstance(m, Activation), convert)
    return model


def _replace(
    model: nn.Module,
    select: Callable[[nn.Module], bool],
    convert: Callable[[str, nn.Module], nn.Module | None],
) -> None:
    for name, module in list(model.named_modules()):
        if not name or not select(module):
            continue
        new = convert(name, module)
        if new is not None:
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, new)
