"""Shared test helpers: networks with their hidden-unit permutations, a tiny fitting loop, the MNIST
folder, and a quick digits zoo spec."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from zoo import ArchSpec, ParamLayout, permutation_spec, permute_state_dict, random_permutations

if TYPE_CHECKING:
    from generators.zoospec import ZooSpec


def permuted_networks(spec: ArchSpec, n: int = 3) -> tuple[ParamLayout, Tensor, Tensor]:
    """Flat vectors of ``n`` random networks of ``spec`` and of a random hidden-unit permutation
    of each (the same functions, for standard networks)."""
    layout = ParamLayout.from_module(spec.build())
    originals, permuted = [], []
    for i in range(n):
        model = spec.build(init_seed=i)
        state, perm_spec = model.state_dict(), permutation_spec(model)
        originals.append(layout.flatten(state))
        permuted.append(layout.flatten(permute_state_dict(state, perm_spec, random_permutations(perm_spec, 100 + i))))
    return layout, torch.stack(originals), torch.stack(permuted)


def fit(model: nn.Module, x: Tensor, y: Tensor, steps: int = 60, lr: float = 3e-3) -> list[float]:
    """MSE losses of ``steps`` full-batch AdamW steps."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def mnist_dir() -> Path | None:
    """The folder holding the MNIST files, found as the product finds them (``$SYMZOO_DATA``, then
    ``~/.cache/symzoo/data``, each directly or in ``mnist/``), then the shared data folder beside
    this repository; None if there is none."""
    from generators.data import data_roots

    sibling = Path(__file__).resolve().parents[2] / "shared" / "data"
    for root in [*data_roots(), sibling]:
        for folder in (root, root / "mnist"):
            if (folder / "train-images-idx3-ubyte.gz").is_file():
                return folder
    return None


def digits_zoo_spec(n_models: int, max_epochs: int = 2, **changes: Any) -> ZooSpec:
    """The ``digits-mlp`` preset with its models trained 1 to ``max_epochs`` epochs (the preset's
    1 to 20 only make a test slower): the same spread of learning rates, so accuracies still differ."""
    from generators.zoospec import Dist, get_zoo_spec

    spec = get_zoo_spec("digits-mlp")
    epochs = dataclasses.replace(spec.hyperparameters, epochs=Dist("int_uniform", 1, max_epochs))
    return dataclasses.replace(spec, n_models=n_models, hyperparameters=epochs, **changes)
