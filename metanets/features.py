"""A zoo's splits as a metanet reads them: each split's inputs, in the metanet's view, and targets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from metanets.registry import MetanetContext, MetanetEntry
from metanets.views import per_tensor_standardizer, statistics_view, tensor_ids, trainable_view
from zoo.errors import SpecError
from zoo.layout import ParamLayout
from zoo.nets import ArchSpec
from zoo.storage import SPLITS, Zoo

__all__ = ["ZooFeatures", "load_features"]


@dataclass
class ZooFeatures:
    """Per split: the inputs a metanet reads (weights stay memory-mapped and are viewed per batch;
    statistics are computed once and standardised with the train split's mean and std) and targets."""

    entry: MetanetEntry
    layout: ParamLayout
    inputs: dict[str, Tensor]
    targets: dict[str, Tensor]
    excluded: int
    normalizer: tuple[Tensor, Tensor] | None = None

    arch: ArchSpec | None = None
    augmenter: Callable[[Tensor, torch.Generator], Tensor] | None = None

    @property
    def input_dim(self) -> int:
        if self.entry.view == "statistics":
            return self.inputs["train"].shape[1]
        return self.layout.num_trainable if self.entry.view == "weights" else self.layout.size

    def context(self) -> MetanetContext:
        return MetanetContext(self.input_dim, self.layout, self.arch)

    def build(self, sigmoid: bool = False) -> nn.Module:
        model = self.entry.build(self.context())
        return nn.Sequential(model, nn.Sigmoid()) if sigmoid else model

    def batch(self, split: str, index: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Inputs of rows ``index`` of ``split``; with a ``generator``, each network is first
        permuted at random (the ``augment`` option; flat rows, before the view and scaling)."""
        x = self.inputs[split][index].float()
        if generator is not None and self.augmenter is not None:
            x = self.augmenter(x, generator)
        if self.entry.view == "weights":
            x = trainable_view(x, self.layout)
        if self.normalizer is not None:
            mean, std = self.normalizer
            x = (x - mean) / std
        return x


def load_features(zoo: Zoo, entry: MetanetEntry, target: str, include_diverged: bool = False,
                  normalizer: tuple[Tensor, Tensor] | None = None, normalize: bool | None = None) -> ZooFeatures:
    """The splits' inputs and targets. Inputs are standardised with ``normalizer`` when given (a
    trained metanet's), else, if ``normalize`` (default: the metanet's protocol), with the train
    split's statistics (:func:`per_tensor_standardizer`, or per feature for ``statistics``)."""
    normalize = entry.normalize if normalize is None else normalize
    if target not in zoo.columns():
        raise SpecError(f"{zoo.path}: the zoo has no column '{target}' to predict")
    layout = zoo.layout
    inputs, targets, excluded = {}, {}, 0
    for split in SPLITS:
        data = zoo.load(split, ["weights", target, "status"], format="numpy")
        keep = np.array([include_diverged or s == "ok" for s in data["status"]], dtype=bool)
        y = np.asarray(data[target], dtype=np.float64)
        keep &= np.isfinite(y)
        excluded += int((~keep).sum())
        rows = np.flatnonzero(keep)
        weights = torch.from_numpy(data["weights"])  # memory-mapped: rows are read when indexed
        if entry.view == "statistics":
            blocks = [statistics_view(weights[torch.from_numpy(rows[i : i + 512])], layout)
                      for i in range(0, max(len(rows), 1), 512)]
            inputs[split] = torch.cat(blocks)
        else:
            inputs[split] = weights[torch.from_numpy(rows)] if len(rows) < 4096 else _RowView(weights, rows)
        targets[split] = torch.from_numpy(y[rows]).float()
    features = ZooFeatures(entry, layout, inputs, targets, excluded, normalizer, zoo.spec)
    if normalize and normalizer is None:
        train = inputs["train"]
        if entry.view == "statistics":
            std = train.std(0) if len(train) > 1 else torch.ones(train.shape[1])  # fewer than 2 rows: no spread
            features.normalizer = (train.mean(0), std.clamp_min(1e-8))
        else:  # the metanet's own view of the train rows (not yet scaled), read in blocks
            ids = tensor_ids(layout)
            ids = ids[layout.trainable_mask] if entry.view == "weights" else ids
            n = len(train)
            blocks = (features.batch("train", torch.arange(i, min(i + 512, n))) for i in range(0, n, 512))
            features.normalizer = per_tensor_standardizer(blocks, ids)
    return features


class _RowView:
    """Selected rows of a memory-mapped weight matrix, read only when a batch asks for them."""

    def __init__(self, weights: Tensor, rows: np.ndarray) -> None:
        self.weights, self.rows = weights, torch.from_numpy(rows)

    def __getitem__(self, index: Tensor) -> Tensor:
        return self.weights[self.rows[index]]

    def __len__(self) -> int:
        return len(self.rows)
