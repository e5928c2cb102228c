"""Training and evaluating metanets on a zoo: the paper's protocol (docs/PAPER.md §3).

MSE on the target, AdamW (weight decay 1e-2), batch 128, 50 epochs; the learning rate is chosen
from a grid by validation R² (seed 0), then K seeds are trained with it and each reports its test
R² and Kendall τ at its best-validation epoch.

The protocol's settings live in :mod:`metanets.config`, the inputs in :mod:`metanets.features`
and the metrics in :mod:`metanets.metrics`; their names are re-exported here.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from zoo.progress import progress_bar

from metanets.augment import PermutationAugmenter
from metanets.config import ACCURACY_TARGETS, TARGETS, MetanetConfig
from metanets.features import ZooFeatures, load_features
from metanets.metrics import evaluate
from metanets.registry import get_metanet
from zoo.errors import SpecError
from zoo.storage import SPLITS, open_zoo

__all__ = ["MetanetConfig", "MetanetRun", "ZooFeatures", "load_features", "train_metanet", "evaluate", "TARGETS",
           "ACCURACY_TARGETS"]


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
