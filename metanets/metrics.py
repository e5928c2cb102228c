"""How well a metanet predicts: R² and Kendall τ of its predictions on a split."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from metanets.features import ZooFeatures

__all__ = ["evaluate"]


def _metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    # Imported here: scipy.stats and sklearn take ~1.5 s to import, which every symzoo command
    # (they all load the metanet trainer to register the metanet commands) would otherwise pay.
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
