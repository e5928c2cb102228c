"""Permutation augmentation of flat weight rows: the alternative to removing the symmetry.

Issue 16 compares two ways of dealing with hidden-unit permutation symmetry when a metanet
predicts accuracy from weights: *remove* it (train on a W-Asym/σ-Asym zoo, where permuting hidden
units changes the function) or *augment* it away (train on a standard zoo, showing the metanet each
network under a fresh random hidden-unit permutation in every batch, so that it learns the
invariance from data). This module does the augmentation.

It works on the zoo's flat rows, ``(B, P)`` in :class:`~zoo.layout.ParamLayout` order, because
that is what a training loop has in hand, and it must be cheap: a batch of 128 rows gets 128
independent permutations through **one** ``torch.gather`` whose ``(B, P)`` index is composed from
precomputed per-tensor index arithmetic (no Python loop over rows). Per row the result is exactly
:func:`zoo.symmetry.permute_state_dict` (``new[i] = old[perm[i]]`` along each listed axis) of the
unflattened row, flattened again, so a standard network rebuilt from an augmented row computes the
same function as the original.

Order in a training loop: read the flat rows, **augment them, then apply the view**
(``trainable_view`` for metanets reading ``weights``); :func:`augment_view` does both in that
order. Augment training batches only, never validation or test batches.

Asymmetric zoos. The spec comes from the *standard* network of the architecture, so on a W-Asym
row the fixed entries are moved like any other weight: the augmented row no longer has the zoo's
fixed values at the zoo's fixed positions (the ``weights`` view, which drops the layout's fixed
positions, then reads some moved fixed values and loses some trainable ones), and a network rebuilt
from it computes a different function. On a σ-Asym row the FiGLU matrices stay put while the units
around them move, which also changes the function. Neither is a symmetry: the option is meant for
standard zoos, and :class:`PermutationAugmenter` refuses asymmetric architectures or layouts with
fixed entries unless ``allow_asymmetric=True`` (for ablations that want exactly that).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from metanets.views import trainable_view
from zoo.errors import SpecError
from zoo.layout import ParamLayout
from zoo.nets import ArchSpec
from zoo.symmetry import PermutationSpec, permutation_spec

__all__ = ["AUGMENTABLE_VIEWS", "PermutationAugmenter", "augment_view"]

AUGMENTABLE_VIEWS = ("flat", "weights")


@dataclass(frozen=True)
class _SlotPlan:
    """The gather index of one permuted tensor, as index arithmetic.

    Entry ``(i_0, ..., i_k)`` of a tensor lives at ``offset + Σ_a i_a·stride_a``; permuting axis
    ``a`` by ``perm`` (``new[i] = old[perm[i]]``) reads it from ``i_a -> perm[i_a]``. So a row's
    source index is ``static`` (offset plus the unpermuted axes' terms, broadcastable to the
    tensor's shape) plus, per permuted axis, ``perm[i_a]·stride_a`` broadcast along that axis:
    a few broadcasting adds per tensor build the ``(B, numel)`` index of all B rows at once.
    """

    offset: int
    shape: tuple[int, ...]
    static: Tensor  # int64, shape with 1 at permuted axes
    axes: tuple[tuple[str, int, int], ...]  # (permutation name, axis, stride) per permuted axis

    def to(self, device: torch.device) -> "_SlotPlan":
        return _SlotPlan(self.offset, self.shape, self.static.to(device), self.axes)


class PermutationAugmenter:
    """Random hidden-unit permutations of flat weight rows, one independent draw per row.

    Args:
        layout: the zoo's layout (the rows' order).
        arch: the zoo's architecture; its *standard* network defines the permutation spec.
        allow_asymmetric: accept W-Asym/σ-Asym architectures and layouts with fixed entries
            (the permutation is then not a symmetry; see the module docstring).

    ``augmenter(weights, generator)`` permutes a ``(B, P)`` batch; :meth:`draw` and :meth:`apply`
    split that into drawing the ``(B, n)`` permutations and applying given ones.
    """

    def __init__(self, layout: ParamLayout, arch: ArchSpec, *, allow_asymmetric: bool = False) -> None:
        if not allow_asymmetric and (arch.variant != "standard" or layout.num_fixed):
            raise SpecError(
                f"permutation augmentation is a symmetry only of standard networks; this zoo is "
                f"'{arch.variant}' with {layout.num_fixed:,} fixed entries (use a standard zoo, or "
                "allow_asymmetric=True for an ablation)"
            )
        self.layout = layout
        self.spec: PermutationSpec = permutation_spec(arch.with_variant("standard").build())
        self._plans = _plans(self.spec, layout)
        self._on_device: dict[torch.device, tuple[_SlotPlan, ...]] = {torch.device("cpu"): self._plans}

    @property
    def sizes(self) -> dict[str, int]:
        """Permutation name -> number of units it permutes (the ``n`` of :meth:`draw`)."""
        return dict(self.spec.sizes)

    def draw(self, batch: int, generator: torch.Generator) -> dict[str, Tensor]:
        """``batch`` independent uniform permutations per spec entry: name -> ``(batch, n)`` int64,
        on the generator's device, drawn in spec order (reproducible from the generator's state)."""
        return {
            name: torch.argsort(torch.rand(batch, n, generator=generator, device=generator.device), dim=1)
            for name, n in self.spec.sizes.items()
        }

    def apply(self, weights: Tensor, perms: Mapping[str, Tensor]) -> Tensor:
        """Row ``b`` of the result is row ``b`` permuted by ``perms[name][b]`` for every name:
        ``new[i] = old[perm[i]]`` along each axis the spec lists, as in ``permute_state_dict``.
        Entries of tensors the spec does not list (FiGLU matrices) and unpermuted axes stay put."""
        if weights.ndim != 2 or weights.shape[1] != self.layout.size:
            raise SpecError(f"weights have shape {tuple(weights.shape)}; expected (batch, {self.layout.size})")
        batch, device = weights.shape[0], weights.device
        missing = [name for name in self.spec.sizes if name not in perms]
        if missing:
            raise SpecError(f"no permutation given for {missing[:3]} (expected one per spec entry)")
        given = {}
        for name, n in self.spec.sizes.items():
            given[name] = perms[name].to(device=device, dtype=torch.long)
            if given[name].shape != (batch, n):
                raise SpecError(f"permutation '{name}' has shape {tuple(given[name].shape)}; expected ({batch}, {n})")
        # The plans cover the flat vector exactly once (stretches outside the permuted tensors
        # read themselves), so the uninitialised index is fully written, each entry once.
        index = torch.empty(batch, self.layout.size, dtype=torch.long, device=device)
        for plan in self._plans_on(device):
            block = index[:, plan.offset : plan.offset + math.prod(plan.shape)].view(batch, *plan.shape)
            if not plan.axes:
                block.copy_(plan.static.expand(batch, *plan.shape))
                continue
            # Fold all but the last axis into a small partial sum; the last add writes the block
            # in one pass (the index is B·P int64s: passes over it are what costs).
            terms = [(given[name] * stride).view([batch] + [n if a == axis else 1 for a, n in enumerate(plan.shape)])
                     for name, axis, stride in plan.axes]
            partial = plan.static
            for term in terms[:-1]:
                partial = partial + term
            torch.add(partial, terms[-1], out=block)
        return weights.gather(1, index)

    def __call__(self, weights: Tensor, generator: torch.Generator) -> Tensor:
        """``(B, P) -> (B, P)``: each row under its own random hidden-unit permutation."""
        return self.apply(weights, self.draw(weights.shape[0], generator))

    def _plans_on(self, device: torch.device) -> tuple[_SlotPlan, ...]:
        if device not in self._on_device:  # copied once per device, not once per batch
            self._on_device[device] = tuple(plan.to(device) for plan in self._plans)
        return self._on_device[device]


def augment_view(rows: Tensor, view: str, layout: ParamLayout, augmenter: PermutationAugmenter,
                 generator: torch.Generator) -> Tensor:
    """Flat rows ``(B, P)`` -> augmented metanet input: permute the flat rows first, *then* take
    the view (``flat``: all entries; ``weights``: :func:`~metanets.views.trainable_view`).

    The order matters: the view indexes the layout's positions, so permuting after it would
    scramble entries across tensors. The ``statistics`` view is refused: per-tensor statistics of a
    standard network do not change under permutations (augmenting them is a no-op), and they are
    computed once per zoo, not per batch.
    """
    if view not in AUGMENTABLE_VIEWS:
        raise SpecError(f"view '{view}' cannot be augmented; expected one of {', '.join(AUGMENTABLE_VIEWS)}")
    permuted = augmenter(rows, generator)
    return permuted if view == "flat" else trainable_view(permuted, layout)


def _plans(spec: PermutationSpec, layout: ParamLayout) -> tuple[_SlotPlan, ...]:
    """One plan per tensor that some permutation acts on (checked against the layout), plus one
    identity plan per stretch of the flat vector between them: together they cover it once."""
    plans = []
    for key, axes in spec.axes.items():
        if all(p is None for p in axes):
            continue
        try:
            slot = layout[key]
        except KeyError:
            raise SpecError(f"the layout has no tensor '{key}' of the architecture's permutation spec "
                            "(layout and architecture do not match)") from None
        if len(slot.shape) != len(axes):
            raise SpecError(f"tensor '{key}' has shape {slot.shape} in the layout; the architecture's spec expects "
                            f"{len(axes)} axes (layout and architecture do not match)")
        strides = [math.prod(slot.shape[a + 1 :]) for a in range(len(slot.shape))]
        static = torch.full([1] * len(slot.shape), slot.offset, dtype=torch.long)
        permuted = []
        for axis, (p, n, stride) in enumerate(zip(axes, slot.shape, strides)):
            if p is None:
                static = static + (torch.arange(n) * stride).view([n if a == axis else 1 for a in range(len(axes))])
                continue
            if n != spec.sizes[p]:
                raise SpecError(f"axis {axis} of '{key}' has {n} units in the layout; permutation "
                                f"'{p}' permutes {spec.sizes[p]} (layout and architecture do not match)")
            permuted.append((p, axis, stride))
        plans.append(_SlotPlan(slot.offset, slot.shape, static, tuple(permuted)))
    covered = sorted((plan.offset, plan.offset + math.prod(plan.shape)) for plan in plans)
    start = 0
    for begin, end in [*covered, (layout.size, layout.size)]:  # the stretches in between read themselves
        if begin > start:
            plans.append(_SlotPlan(start, (begin - start,), torch.arange(start, begin), ()))
        start = end
    return tuple(sorted(plans, key=lambda plan: plan.offset))
