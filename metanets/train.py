"""Training and evaluating metanets on a zoo: the paper's protocol (docs/PAPER.md §3).

MSE on the target, AdamW (weight decay 1e-2), batch 128, 50 epochs; the learning rate is chosen
from a grid by validation R² (seed 0), then K seeds are trained with it and each reports its test
R² and Kendall τ at its best-validation epoch.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from zoo.progress import progress_bar

from metanets.augment import AUGMENTABLE_VIEWS, PermutationAugmenter
from metanets.models import MetanetContext, MetanetEntry, get_metanet
from metanets.views import per_tensor_standardizer, statistics_view, tensor_ids, trainable_view
from zoo.errors import SpecError
from zoo.layout import ParamLayout
from zoo.nets import ArchSpec
from zoo.storage import SPLITS, Zoo, open_zoo

__all__ = ["MetanetConfig", "MetanetRun", "ZooFeatures", "load_features", "train_metanet", "evaluate"]

TARGETS = ("test_acc", "train_acc", "lr", "weight_decay", "label_smoothing", "epochs")
ACCURACY_TARGETS = ("test_acc", "train_acc")


@dataclass(frozen=True)
class MetanetConfig:
    """One cell's protocol. ``normalize``: standardise the inputs with train-split statistics (per
    feature for ``statistics``, per weight tensor otherwise; default: the metanet's own protocol,
    on for StatNN and GMN, off for NFN and the paper's other baselines). ``sigmoid``: bound the
    prediction to (0, 1), the head the NFN and neural-graph authors use for accuracy targets
    (default: on for NFN and GMN when the target is an accuracy).
    ``augment``: apply a random hidden-unit permutation to each network of each training batch
    (meant for standard zoos). ``warmup_steps``: raise the learning rate linearly over the first
    steps (the NFN authors' trainer does; at lr ≥ 5e-3 NFN's first Adam steps otherwise saturate
    its sigmoid for good)."""

    model: str
    target: str = "test_acc"
    epochs: int = 50
    batch_size: int = 128
    weight_decay: float = 1e-2
    lrs: tuple[float, ...] = (1e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2)
    seeds: int = 5
    include_diverged: bool = False
    normalize: bool | None = None
    sigmoid: bool | None = None
    augment: bool = False
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        entry = get_metanet(self.model)
        if self.normalize is None:  # unset: the metanet's own protocol (see register_metanet)
            object.__setattr__(self, "normalize", entry.normalize)
        if self.sigmoid is None:  # the authors' bounded head is for accuracies only
            object.__setattr__(self, "sigmoid", entry.sigmoid and self.target in ACCURACY_TARGETS)
        if self.augment and entry.view not in AUGMENTABLE_VIEWS:
            raise SpecError(f"augment: {self.model} reads per-tensor statistics, which permutations do not change; "
                            f"expected a metanet reading weights ({', '.join(AUGMENTABLE_VIEWS)} view)")
        if self.target not in TARGETS:
            raise SpecError(f"unknown target '{self.target}'; expected one of {', '.join(TARGETS)}")
        if self.epochs <= 0 or self.seeds <= 0 or self.batch_size <= 0 or not self.lrs:
            raise SpecError("epochs, seeds, batch_size must be positive and lrs non-empty")
        if self.warmup_steps < 0:
            raise SpecError(f"warmup_steps {self.warmup_steps}: expected a number of steps >= 0")
        if not all(math.isfinite(lr) and lr > 0 for lr in self.lrs):
            raise SpecError(f"lrs {list(self.lrs)}: expected learning rates > 0 (e.g. 1e-3)")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise SpecError(f"weight_decay {self.weight_decay}: expected a number >= 0")


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


def _metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    # Imported here: scipy.stats and sklearn take ~1.5 s to import, which every symzoo command
    # (they all load this module to register) would otherwise pay.
    from scipy.stats import kendalltau
    from sklearn.metrics import r2_score

    if len(true) < 2:
        return {"r2": math.nan, "kendall_tau": math.nan}
    tau = kendalltau(pred, true).statistic
    return {"r2": float(r2_score(true, pred)), "kendall_tau": float(tau) if np.isfinite(tau) else math.nan}


@torch.no_grad()
def evaluate(model: nn.Module, features: ZooFeatures, split: str, batch_size: int = 512) -> tuple[np.ndarray, dict[str, float]]:
    model.eval()
    n = len(features.targets[split])
    preds = [model(features.batch(split, torch.arange(i, min(n, i + batch_size)))) for i in range(0, n, batch_size)]
    pred = torch.cat(preds).numpy() if preds else np.zeros(0)
    return pred, _metrics(pred, features.targets[split].numpy())


def _fit(features: ZooFeatures, config: MetanetConfig, lr: float, seed: int) -> dict[str, Any]:
    """One training run; returns the best-validation epoch's metrics and model state."""
    torch.manual_seed(seed)
    model = features.build(config.sigmoid)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.weight_decay)
    warmup = max(config.warmup_steps, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    n = len(features.targets["train"])
    generator = torch.Generator().manual_seed(seed)
    permuting = torch.Generator().manual_seed(seed) if config.augment else None
    best: dict[str, Any] = {"val": {"r2": -math.inf}}
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, config.batch_size):
            index = order[start : start + config.batch_size]
            if len(index) < 2:  # BatchNorm (DMC) needs two examples
                continue
            inputs = features.batch("train", index, permuting)
            loss = nn.functional.mse_loss(model(inputs), features.targets["train"][index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        _, val = evaluate(model, features, "validation")
        if not np.isfinite(val["r2"]):
            val["r2"] = -math.inf
        if val["r2"] > best["val"]["r2"]:
            _, test = evaluate(model, features, "test")
            best = {"val": val, "test": test, "epoch": epoch + 1,
                    "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    return best


@dataclass
class MetanetRun:
    """A finished run: the JSON-ready ``summary``, the best seed's weights, and the features."""

    summary: dict[str, Any]
    best_state: dict[str, Tensor]
    features: ZooFeatures


def train_metanet(zoo_path: str | Path, config: MetanetConfig, quiet: bool = False) -> MetanetRun:
    """Learning-rate search, then ``config.seeds`` runs; returns results and the best model."""
    zoo = open_zoo(zoo_path)
    entry = get_metanet(config.model)
    features = load_features(zoo, entry, config.target, config.include_diverged, normalize=config.normalize)
    if config.augment:
        features.augmenter = PermutationAugmenter(zoo.layout, zoo.spec)
    counts = {s: len(features.targets[s]) for s in SPLITS}
    if min(counts.values()) < 2:
        raise SpecError(f"{zoo_path}: each split needs at least 2 usable models to train and evaluate a metanet, "
                        f"found {', '.join(f'{s} {n}' for s, n in counts.items())}; generate more models")
    runs = len(config.lrs) + config.seeds
    with progress_bar(total=runs, desc=f"{config.model} on {Path(zoo_path).name}", unit="run", quiet=quiet,
                      file=sys.stderr) as bar:
        search = {}
        for lr in config.lrs:
            search[lr] = _fit(features, config, lr, seed=0)
            bar.update()
        lr = max(search, key=lambda k: search[k]["val"]["r2"])
        per_seed = []
        for seed in range(config.seeds):
            per_seed.append(search[lr] if seed == 0 else _fit(features, config, lr, seed))
            bar.update()
    mean = lambda split, key: float(np.mean([r[split][key] for r in per_seed]))  # noqa: E731
    best = max(per_seed, key=lambda r: r["val"]["r2"])
    summary = {
        "model": config.model,
        "zoo": str(zoo_path),
        "target": config.target,
        "view": entry.view,
        "input_dim": features.input_dim,
        "params": sum(p.numel() for p in features.build(config.sigmoid).parameters()),
        "lr": lr,
        "lr_search": {str(k): v["val"]["r2"] for k, v in search.items()},
        "val": {"r2": mean("val", "r2"), "kendall_tau": mean("val", "kendall_tau")},
        "test": {"r2": mean("test", "r2"), "kendall_tau": mean("test", "kendall_tau")},
        "per_seed": [{"seed": i, "epoch": r["epoch"], "val": r["val"], "test": r["test"]} for i, r in enumerate(per_seed)],
        "excluded_diverged": features.excluded,
        "models": counts,
        "config": asdict(config),
    }
    return MetanetRun(summary, best["state"], features)

