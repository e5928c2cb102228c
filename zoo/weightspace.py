"""One description of a network's weight space: its unit sets and which tensors connect them.

Metanets that respect hidden-unit symmetries (neural graphs, neural functionals) all need the
same facts about an architecture: which sets of units exist (the network's inputs, one set per
permutation, its outputs), which weight tensor maps which set to which, which 1-D tensors hold one
value per unit of a set, and where each tensor lies in the flat weight vector. This module derives
them once, from the architecture's :class:`~zoo.symmetry.PermutationSpec` (so they are exactly as
symmetric as the network: a ResNet's residual stream, written by the stem, every ``conv2`` and a
shortcut, is *one* set) and the zoo's :class:`~zoo.layout.ParamLayout` (so offsets match the
stored rows, including layouts with extra tensors).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from zoo.layout import ParamLayout
from zoo.nets import ArchSpec
from zoo.symmetry import PermutationSpec, permutation_spec

__all__ = [
    "INPUT",
    "OUTPUT",
    "UnitRole",
    "NodeSet",
    "WeightTensor",
    "UnitTensor",
    "WeightSpace",
    "weight_space",
    "weight_space_from_spec",
]

INPUT = "<input>"
"""Name of the set of the network's input units (pixels, image channels): no permutation acts on it."""
OUTPUT = "<output>"
"""Name of the set of the network's output units (classes): no permutation acts on it."""

UnitRole = Literal["bias", "norm_weight", "norm_bias", "running_mean", "running_var", "other"]
"""What a 1-D per-unit tensor is: a layer's bias, a norm layer's affine parameter or running
statistic, or something else that follows the units (``other``)."""


@dataclass(frozen=True)
class NodeSet:
    """A set of units. ``permuted`` is False for :data:`INPUT` and :data:`OUTPUT`, whose units
    have fixed identities; every other set is the units one hidden-unit permutation acts on."""

    name: str
    size: int
    permuted: bool


@dataclass(frozen=True)
class WeightTensor:
    """A Linear (2-D) or Conv2d (4-D) weight: ``W[o, i, *kernel]`` connects unit ``i`` of
    ``in_set`` to unit ``o`` of ``out_set``; its kernel entries are the per-connection values."""

    name: str
    offset: int
    shape: tuple[int, ...]
    out_set: str
    in_set: str

    @property
    def n_out(self) -> int:
        return self.shape[0]

    @property
    def n_in(self) -> int:
        return self.shape[1]

    @property
    def kernel(self) -> tuple[int, int]:
        """``(kh, kw)``; ``(1, 1)`` for a Linear weight."""
        return (1, 1) if len(self.shape) == 2 else (self.shape[2], self.shape[3])

    @property
    def kernel_size(self) -> int:
        """Entries per connection (``kh · kw``)."""
        return math.prod(self.kernel)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def stop(self) -> int:
        return self.offset + self.numel


@dataclass(frozen=True)
class UnitTensor:
    """A 1-D tensor with one value per unit of ``unit_set`` (bias, norm parameter, statistic)."""

    name: str
    offset: int
    size: int
    unit_set: str
    role: UnitRole

    @property
    def stop(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class WeightSpace:
    """A network's weight space, as metanets that respect its symmetries read it.

    Attributes:
        sets: unit sets in a fixed order: :data:`INPUT`, every permutation (spec order), :data:`OUTPUT`.
        weights: the weight tensors, in spec order.
        units: the 1-D per-unit tensors, in spec order.
        ignored: layout tensors no permutation acts on (σ-Asym's fixed FiGLU matrices): they carry
            no per-unit information, and metanets built on this description do not read them.
        size: length of the flat vectors the offsets index.
    """

    sets: tuple[NodeSet, ...]
    weights: tuple[WeightTensor, ...]
    units: tuple[UnitTensor, ...]
    ignored: tuple[str, ...]
    size: int

    @property
    def sizes(self) -> dict[str, int]:
        """Set name -> number of units, in set order."""
        return {s.name: s.size for s in self.sets}

    @property
    def hidden(self) -> tuple[NodeSet, ...]:
        """The permuted sets (hidden units, residual streams)."""
        return tuple(s for s in self.sets if s.permuted)

    def node_set(self, name: str) -> NodeSet:
        for s in self.sets:
            if s.name == name:
                return s
        raise KeyError(name)

    def units_of(self, name: str) -> tuple[UnitTensor, ...]:
        """The 1-D tensors on set ``name``, in spec order."""
        return tuple(u for u in self.units if u.unit_set == name)

    def weights_on(self, name: str) -> tuple[tuple[WeightTensor, int], ...]:
        """``(weight, axis)`` for every weight axis (0 = output, 1 = input) indexed by set ``name``."""
        return tuple((w, axis) for w in self.weights for axis, s in enumerate((w.out_set, w.in_set)) if s == name)

    @property
    def max_kernel(self) -> tuple[int, int]:
        """Largest ``(kh, kw)`` over the weights (``(1, 1)`` for Linear-only networks)."""
        return (max((w.kernel[0] for w in self.weights), default=1),
                max((w.kernel[1] for w in self.weights), default=1))


def weight_space(layout: ParamLayout, arch: ArchSpec) -> WeightSpace:
    """The weight space of ``arch`` for flat vectors of ``layout``.

    The spec comes from the *standard* network of ``arch``: W-Asym and σ-Asym variants have the
    same tensor names, and their fixed entries are weights like any other. Offsets come from
    ``layout``, which may hold extra tensors (FiGLU matrices), listed as ignored.
    """
    return weight_space_from_spec(permutation_spec(arch.with_variant("standard").build()), layout)


def weight_space_from_spec(spec: PermutationSpec, layout: ParamLayout) -> WeightSpace:
    """The weight space a permutation spec describes, placed by ``layout``.

    Tensors with two or more axes are weights (2-D or 4-D; their first two axes are output and
    input units), 1-D ones per-unit tensors. An axis no permutation acts on is the network's
    output units (axis 0) or input units (axis 1); the sizes of those sets are read off the
    weights, and weights that disagree on them are rejected.
    """
    names = {slot.name for slot in layout.slots}
    missing = [k for k in spec.axes if k not in names]
    if missing:
        raise ValueError(f"the layout lacks {len(missing)} tensors of the permutation spec, e.g. '{missing[0]}'")
    weights: list[WeightTensor] = []
    units: list[UnitTensor] = []
    for key, axes in spec.axes.items():
        slot = layout[key]
        if len(axes) >= 2:
            if len(slot.shape) not in (2, 4):
                raise ValueError(f"weights must be 2-D or 4-D, got shape {slot.shape} for '{key}'")
            weights.append(WeightTensor(key, slot.offset, slot.shape, _set_of(axes[0], 0), _set_of(axes[1], 1)))
        elif len(axes) == 1:
            units.append(UnitTensor(key, slot.offset, slot.numel, _set_of(axes[0], 0), "other"))
    weight_names = {w.name for w in weights}
    units = [UnitTensor(u.name, u.offset, u.size, u.unit_set, _role(u.name, weight_names)) for u in units]
    sizes = {INPUT: _end_size(weights, INPUT), **spec.sizes, OUTPUT: _end_size(weights, OUTPUT)}
    sets = tuple(NodeSet(name, size, name not in (INPUT, OUTPUT)) for name, size in sizes.items())
    ignored = tuple(slot.name for slot in layout.slots if slot.name not in spec.axes)
    return WeightSpace(sets, tuple(weights), tuple(units), ignored, layout.size)


# -- helpers ------------------------------------------------------------------------------------


def _set_of(perm: str | None, axis: int) -> str:
    """Set of a tensor axis: ``None`` on the output (0) axis means the network's outputs, on the
    input (1) axis its inputs."""
    if perm is not None:
        return perm
    return OUTPUT if axis == 0 else INPUT


def _end_size(weights: list[WeightTensor], side: str) -> int:
    """Number of input (output) units, from the weights reading (writing) them; 0 if none does."""
    found = {w.n_in if side == INPUT else w.n_out for w in weights
             if (w.in_set if side == INPUT else w.out_set) == side}
    if len(found) > 1:
        raise ValueError(f"weights disagree on the number of {side} units: {sorted(found)}")
    return found.pop() if found else 0


def _role(name: str, weight_names: set[str]) -> UnitRole:
    """A layer's ``bias`` sits next to its weight; other ``weight``/``bias`` leaves are a norm
    layer's affine parameters."""
    prefix, _, leaf = name.rpartition(".")
    if leaf == "bias" and f"{prefix}.weight" in weight_names:
        return "bias"
    roles: dict[str, UnitRole] = {"weight": "norm_weight", "bias": "norm_bias",
                                  "running_mean": "running_mean", "running_var": "running_var"}
    return roles.get(leaf, "other")
