"""Small real zoos for storage tests: digits MLPs, briefly trained, with measured accuracies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from zoo import ParamLayout, get_arch
from zoo.storage import ModelRecord, ZooMetadata, ZooSchema, ZooWriter

SCHEMA = ZooSchema(hyperparameters={"lr": "float", "steps": "int"}, curves=("train_loss",), checkpoint_epochs=(0,))


def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    return x[:1200], y[:1200], x[1200:], y[1200:]


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model(x).argmax(1) == y).float().mean())


def train_records(variant: str, indices: range, steps: int = 15) -> list[ModelRecord]:
    """Models trained for a few full-batch AdamW steps; test_acc measured on the digits test split."""
    spec = get_arch("mlp-digits", variant)
    x_train, y_train, x_test, y_test = digits()
    records = []
    for i in indices:
        model = spec.build(init_seed=i)
        layout = ParamLayout.from_module(model)
        initial = layout.flatten(model)
        lr = 10 ** (-3 + (i % 3))
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        losses = []
        for _ in range(steps):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x_train), y_train)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        metrics = {"train_acc": accuracy(model, x_train, y_train), "test_acc": accuracy(model, x_test, y_test),
                   "train_loss": losses[-1], "test_loss": F.cross_entropy(model(x_test), y_test).item()}
        records.append(ModelRecord(
            index=i, seed=i, weights=layout.flatten(model), metrics=metrics,
            status="ok" if np.isfinite(losses[-1]) else "diverged",
            hyperparameters={"lr": lr, "steps": steps}, curves={"train_loss": losses}, checkpoints={0: initial},
        ))
    return records


def make_zoo(path: Path, variant: str = "w_asym", n: int = 24, shard: int = 8) -> list[ModelRecord]:
    """Write ``n`` models in shards of ``shard``; returns the records written."""
    records = train_records(variant, range(n))
    with ZooWriter(path, get_arch("mlp-digits", variant), SCHEMA,
                   ZooMetadata(name="digits-test", dataset={"name": "digits"})) as writer:
        for start in range(0, n, shard):
            writer.write(records[start : start + shard])
    return records
