"""Masks of W-Asymmetric layers: which weight entries are trainable and which are fixed.

A mask is a boolean tensor shaped like the layer's weight, ``True`` where the entry is trainable and
``False`` where it is fixed to a random constant. Rows (output features or output channels) with
distinct fixed positions are what removes the hidden-unit permutation symmetry (docs/PAPER.md §1), so
the constructions below make rows unique wherever that is possible.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch

from zoo.errors import SpecError

__all__ = ["MASK_TYPES", "make_mask"]

MASK_TYPES = ("random_subsets", "filter_random_subsets", "densest")

# Redraws allowed per row before giving up on finding a row not used yet. Feasibility is checked
# first, so this is only reached when almost every subset is already taken.
_MAX_REDRAWS_PER_ROW = 10_000


def make_mask(
    weight_shape: Sequence[int],
    *,
    mask_type: str,
    n_fix: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Build a mask for a weight of shape ``(out, in)`` (linear) or ``(out, in, kh, kw)`` (conv).

    - ``random_subsets``: each row fixes ``n_fix`` distinct positions of its flattened fan-in
      (``in`` for linear, ``in·kh·kw`` for conv); rows are re-drawn until all are distinct.
    - ``filter_random_subsets`` (conv only): each output channel fixes whole ``kh×kw`` filters of
      ``n_fix`` input channels; with ``n_fix >= in`` the layer is fully fixed. Rows are made
      distinct when there are enough subsets, otherwise repeats are allowed.
    - ``densest``: row 0 is dense, then every row with 1 fixed entry, then with 2, ... in
      lexicographic order; ``n_fix`` and the generator are unused.
    """
    shape = tuple(int(s) for s in weight_shape)
    if len(shape) not in (2, 4):
        raise SpecError(f"weight shape {shape} is not (out, in) or (out, in, kh, kw)")
    out_features, fan_in = shape[0], math.prod(shape[1:])
    if mask_type not in MASK_TYPES:
        raise SpecError(f"unknown mask_type '{mask_type}'; expected one of {', '.join(MASK_TYPES)}")
    if n_fix < 0:
        raise SpecError(f"n_fix must be >= 0, got {n_fix}")

    if mask_type == "densest":
        return _densest(out_features, fan_in).reshape(shape)
    if mask_type == "random_subsets":
        if n_fix > fan_in:
            raise SpecError(f"random_subsets: n_fix={n_fix} exceeds the fan-in {fan_in}")
        available = math.comb(fan_in, n_fix)
        if available < out_features:
            raise SpecError(
                f"random_subsets: only {available} distinct rows exist with n_fix={n_fix} of "
                f"fan-in {fan_in}, but the layer has {out_features} rows; choose n_fix closer to "
                f"{fan_in // 2}"
            )
        fixed = _distinct_subsets(out_features, fan_in, n_fix, generator, require_unique=True)
        return _mask_from_subsets(fixed, out_features, fan_in).reshape(shape)

    # filter_random_subsets
    if len(shape) != 4:
        raise SpecError("filter_random_subsets applies to conv weights only; use random_subsets")
    in_channels, kernel = shape[1], shape[2] * shape[3]
    if n_fix >= in_channels:
        return torch.zeros(shape, dtype=torch.bool)
    unique = math.comb(in_channels, n_fix) >= out_features
    fixed = _distinct_subsets(out_features, in_channels, n_fix, generator, require_unique=unique)
    channel_mask = _mask_from_subsets(fixed, out_features, in_channels)
    return channel_mask[:, :, None].expand(out_features, in_channels, kernel).reshape(shape).clone()


def _distinct_subsets(
    rows: int, population: int, size: int, generator: torch.Generator, *, require_unique: bool
) -> list[list[int]]:
    """``rows`` random ``size``-subsets of ``range(population)``, distinct if ``require_unique``."""
    seen: set[tuple[int, ...]] = set()
    subsets = []
    for row in range(rows):
        for _ in range(_MAX_REDRAWS_PER_ROW):
            subset = tuple(sorted(torch.randperm(population, generator=generator)[:size].tolist()))
            if not require_unique or subset not in seen:
                break
        else:
            raise SpecError(f"could not draw a distinct fixed subset for row {row}; lower n_fix")
        seen.add(subset)
        subsets.append(list(subset))
    return subsets


def _mask_from_subsets(fixed: list[list[int]], rows: int, cols: int) -> torch.Tensor:
    mask = torch.ones(rows, cols, dtype=torch.bool)
    for row, positions in enumerate(fixed):
        mask[row, positions] = False
    return mask


def _densest(rows: int, cols: int) -> torch.Tensor:
    mask = torch.ones(rows, cols, dtype=torch.bool)
    combos = itertools.chain.from_iterable(
        itertools.combinations(range(cols), k) for k in range(1, cols + 1)
    )
    for row, positions in zip(range(1, rows), combos):
        mask[row, list(positions)] = False
    if rows > 1 and mask[rows - 1].all():
        raise SpecError(f"densest: {rows} rows do not fit in a fan-in of {cols}")
    return mask
