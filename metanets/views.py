"""Input views of zoo rows: what each metanet reads from a network's flat weights."""

from __future__ import annotations

import torch
from torch import Tensor

from zoo.layout import ParamLayout

__all__ = ["STATISTICS", "trainable_view", "statistics_view"]

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
