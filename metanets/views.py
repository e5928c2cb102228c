"""Input views of zoo rows: what each metanet reads from a network's flat weights."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from zoo.layout import ParamLayout

__all__ = ["STATISTICS", "trainable_view", "statistics_view", "tensor_ids", "per_tensor_standardizer"]

STATISTICS = ("mean", "var", "min", "max", "q25", "q50", "q75")
_QUANTILES = torch.tensor([0.25, 0.5, 0.75])


def trainable_view(weights: Tensor, layout: ParamLayout) -> Tensor:
    """``(B, P) -> (B, trainable)``: W-Asym fixed entries and FiGLU matrices dropped (the paper's
    setting: they are the same in every model of a zoo and carry no information)."""
    return weights[:, layout.trainable_mask.to(weights.device)]


def statistics_view(weights: Tensor, layout: ParamLayout, chunk: int = 256) -> Tensor:
    """``(B, P) -> (B, 7·T)``: per tensor mean, variance, min, max and 25/50/75% quantiles
    (Unterthiner et al.'s StatNN features; 203 for ResNet8's 29 tensors).

    Statistics are over a tensor's trainable entries; tensors that are entirely fixed (a W-Asym
    ResNet8 stem, FiGLU matrices) are skipped, as they are constant across a zoo.
    """
    mask = layout.trainable_mask.to(weights.device)
    if not len(weights):  # e.g. an empty split; torch.quantile refuses empty input
        tensors = sum(bool(mask[slot.offset : slot.stop].any()) for slot in layout.slots)
        return weights.new_zeros((0, len(STATISTICS) * tensors))
    features = []
    for slot in layout.slots:
        keep = mask[slot.offset : slot.stop]
        if not keep.any():
            continue
        values = weights[:, slot.offset : slot.stop][:, keep]
        quantiles = torch.cat(
            [torch.quantile(values[i : i + chunk], _QUANTILES.to(values), dim=1).T for i in range(0, len(values), chunk)]
        )
        features.append(torch.stack([values.mean(1), values.var(1, unbiased=False), values.amin(1), values.amax(1)], 1))
        features.append(quantiles)
    return torch.cat(features, dim=1)


def tensor_ids(layout: ParamLayout) -> Tensor:
    """``(P,)``: the index of the layout tensor (slot) each flat entry belongs to."""
    return torch.cat([torch.full((slot.numel,), i, dtype=torch.long) for i, slot in enumerate(layout.slots)])


def per_tensor_standardizer(batches: Iterable[Tensor], ids: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and std of each tensor's entries over all rows of ``batches`` (each ``(b, D)``, in a
    view whose entry ``d`` belongs to tensor ``ids[d]``), broadcast back to ``(D,)`` vectors.

    One scale per tensor, not per entry: a per-entry standardisation would differ between units
    that hidden-unit permutations exchange, and so break a metanet's invariance; a per-tensor one
    commutes with every permutation. A tensor with no spread (e.g. constant fixed entries) keeps
    std 1."""
    count = torch.bincount(ids).double()
    total = torch.zeros_like(count)
    squares = torch.zeros_like(count)
    rows = 0
    for batch in batches:
        batch = batch.double()
        rows += len(batch)
        total.index_add_(0, ids, batch.sum(0))
        squares.index_add_(0, ids, batch.square().sum(0))
    n = (count * max(rows, 1)).clamp_min(1)
    mean = total / n
    std = (squares / n - mean.square()).clamp_min(0).sqrt()
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    return mean[ids].float(), std[ids].float()
