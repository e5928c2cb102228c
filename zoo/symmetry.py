"""Hidden-unit permutation symmetries: specs, actions and functional-equivalence checks.

A :class:`PermutationSpec` says which axes of which ``state_dict`` tensors are permuted together
(a layer's output units, the next layer's inputs, the norm parameters in between, and for ResNets
the whole residual stream of a stage). Applying the same permutations to all of them leaves a
standard network's function unchanged; W-Asym and σ-Asym networks keep their fixed entries and
FiGLU matrices where they are, which is exactly why the symmetry breaks for them. Git Re-Basin,
metanet invariance tests and users' own checks build on these functions.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

__all__ = [
    "PermutationSpec",
    "PermutationSpecBuilder",
    "permutation_spec",
    "random_permutations",
    "identity_permutations",
    "invert_permutations",
    "permute_state_dict",
    "permute_model",
    "symmetry_deviation",
]

Perms = dict[str, Tensor]


@dataclass(frozen=True)
class PermutationSpec:
    """Which tensor axes each permutation acts on.

    Attributes:
        sizes: permutation name -> number of units it permutes.
        axes: ``state_dict`` key -> one permutation name (or ``None``) per tensor axis. Tensors not
            listed (fixed FiGLU matrices, for instance) are not touched by any permutation.
    """

    sizes: dict[str, int]
    axes: dict[str, tuple[str | None, ...]]

    def perm_to_axes(self) -> dict[str, list[tuple[str, int]]]:
        """Permutation name -> the (tensor, axis) pairs it acts on."""
        out: dict[str, list[tuple[str, int]]] = {p: [] for p in self.sizes}
        for key, perms in self.axes.items():
            for axis, p in enumerate(perms):
                if p is not None:
                    out[p].append((key, axis))
        return out


@dataclass
class PermutationSpecBuilder:
    """Builds a spec from a network's own modules, so names and shapes cannot drift apart."""

    sizes: dict[str, int] = field(default_factory=dict)
    axes: dict[str, tuple[str | None, ...]] = field(default_factory=dict)

    def perm(self, name: str, size: int) -> str:
        """Declare a permutation of ``size`` units and return its name."""
        if self.sizes.setdefault(name, size) != size:
            raise ValueError(f"permutation '{name}' declared with sizes {self.sizes[name]} and {size}")
        return name

    def layer(self, prefix: str, module: nn.Module, out_perm: str | None, in_perm: str | None) -> None:
        """A Linear/Conv2d (or W-Asym) layer: weight axes (out, in, ...), bias axis (out)."""
        ndim = module.weight.ndim
        self.axes[f"{prefix}.weight"] = (out_perm, in_perm, *([None] * (ndim - 2)))
        if getattr(module, "bias", None) is not None:
            self.axes[f"{prefix}.bias"] = (out_perm,)

    def norm(self, prefix: str, module: nn.Module, perm: str) -> None:
        """A LayerNorm/GroupNorm(1, C)/BatchNorm over the permuted units: affine parameters and
        running statistics follow the units. Modules without parameters add nothing."""
        for name, tensor in module.state_dict().items():
            if tensor.ndim == 1:
                self.axes[f"{prefix}.{name}"] = (perm,)

    def chain(self, prefix: str, blocks: nn.ModuleList, in_perm: str | None = None) -> str | None:
        """Consecutive :class:`LayerBlock` s, each with its own output permutation named
        ``{prefix}.{i}``; returns the last one (what the next layer's input axis follows)."""
        previous = in_perm
        for i, block in enumerate(blocks):
            p = self.perm(f"{prefix}.{i}", block.layer.weight.shape[0])
            self.layer(f"{prefix}.{i}.layer", block.layer, p, previous)
            self.norm(f"{prefix}.{i}.norm", block.norm, p)
            previous = p
        return previous

    def build(self) -> PermutationSpec:
        return PermutationSpec(dict(self.sizes), dict(self.axes))


def permutation_spec(model: nn.Module) -> PermutationSpec:
    """The permutation spec of a symzoo network (any family and variant)."""
    method = getattr(model, "permutation_spec", None)
    if method is None:
        raise TypeError(f"{type(model).__name__} does not define permutation_spec()")
    return method()


def random_permutations(spec: PermutationSpec, generator: torch.Generator | int) -> Perms:
    """One uniformly random permutation per spec entry (``int`` seeds are accepted)."""
    if isinstance(generator, int):
        seed, generator = generator, torch.Generator()
        generator.manual_seed(seed)
    return {p: torch.randperm(n, generator=generator) for p, n in spec.sizes.items()}


def identity_permutations(spec: PermutationSpec) -> Perms:
    return {p: torch.arange(n) for p, n in spec.sizes.items()}


def invert_permutations(perms: Mapping[str, Tensor]) -> Perms:
    return {p: torch.argsort(perm) for p, perm in perms.items()}


def permute_state_dict(
    state_dict: Mapping[str, Tensor], spec: PermutationSpec, perms: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Apply ``perms``: along each listed axis, new[i] = old[perm[i]]. Other tensors are copied."""
    out = {}
    for key, tensor in state_dict.items():
        for axis, p in enumerate(spec.axes.get(key, ())):
            if p is not None:
                tensor = tensor.index_select(axis, perms[p].to(tensor.device))
        out[key] = tensor.clone() if key not in spec.axes else tensor
    return out


def permute_model(model: nn.Module, perms: Mapping[str, Tensor]) -> nn.Module:
    """A copy of ``model`` with its units permuted. For W-Asym layers the fixed entries stay put:
    the permuted weight is loaded and the layer's own fixed values apply where its mask is 0."""
    permuted = copy.deepcopy(model)
    state = permute_state_dict(model.state_dict(), permutation_spec(model), perms)
    permuted.load_state_dict(state)
    return permuted


@torch.no_grad()
def symmetry_deviation(
    model: nn.Module, inputs: Tensor, *, trials: int = 3, seed: int = 0, dtype: torch.dtype = torch.float64
) -> list[float]:
    """Relative output change under ``trials`` random hidden-unit permutations.

    Each value is ``max|f_P(x) − f(x)| / max|f(x)|`` over the batch, computed in ``dtype``
    (float64 by default, so that a symmetry that holds shows as ~1e-15, not as float32 noise).
    """
    reference = copy.deepcopy(model).to(dtype).eval()
    x = inputs.to(dtype)
    y = reference(x)
    scale = y.abs().max().clamp_min(torch.finfo(dtype).tiny)
    spec = permutation_spec(reference)
    generator = torch.Generator()
    generator.manual_seed(seed)
    deviations = []
    for _ in range(trials):
        y_perm = permute_model(reference, random_permutations(spec, generator))(x)
        deviations.append(float((y_perm - y).abs().max() / scale))
    return deviations
