"""The sequential reference trainer: one ``nn.Module``, ``torch.optim.AdamW``, the same recipe.

Deliberately plain, so that the batched trainer can be checked against it: same init, same data
order, same augmentation, same schedule, same metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from generators.augment import augment_batch
from generators.data import ImageData
from generators.recipe import Recipe, TrainJob, learning_rates
from generators.rng import permutations
from generators.trainer import CURVES, TrainResult, fill_untrained_epochs
from zoo.layout import ParamLayout
from zoo.nets import ArchSpec

__all__ = ["train_sequential"]


@torch.no_grad()
def _evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 2048) -> tuple[float, float]:
    loss = correct = 0.0
    for start in range(0, len(x), chunk):
        logits = model(x[start : start + chunk])
        loss += float(F.cross_entropy(logits, y[start : start + chunk], reduction="sum"))
        correct += float((logits.argmax(1) == y[start : start + chunk]).sum())
    return loss / len(x), correct / len(x)


def train_sequential(spec: ArchSpec, data: ImageData, job: TrainJob, recipe: Recipe, *,
                     device: torch.device | str = "cpu", checkpoint_epochs: tuple[int, ...] = (0,),
                     on_step: Callable[[], None] | None = None) -> TrainResult:
    """Train one model; ``on_step()`` is called after each optimiser step.

    A model whose loss turns non-finite stops there and is marked ``diverged``, with the same
    record shape as :func:`~generators.trainer.train_batched` gives it: the epoch it diverged in
    is evaluated and logged (training loss averaged over its finite steps), the later epochs
    repeat its test metrics with training loss 0.0, and every checkpoint from that epoch on
    holds its final weights; so every curve has ``job.epochs`` entries.
    """
    device = torch.device(device)
    data = data.to(device)
    model = spec.build(init_seed=job.seed).to(device)
    layout = ParamLayout.from_module(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0, weight_decay=job.weight_decay,
                                  betas=recipe.betas, eps=recipe.eps, foreach=False)
    seed = torch.tensor([job.seed], device=device)
    n, steps_per_epoch = len(data.x_train), math.ceil(len(data.x_train) / recipe.batch_size)
    curves: dict[str, list[float]] = {c: [] for c in CURVES}
    checkpoints = {0: layout.flatten(model).cpu()} if 0 in checkpoint_epochs else {}
    status, step = "ok", 0
    for epoch in range(job.epochs):
        order = permutations(seed, epoch, n)[0]
        running = 0.0
        for b in range(steps_per_epoch):
            index = order[b * recipe.batch_size : (b + 1) * recipe.batch_size]
            x = augment_batch(data.x_train[index][None], recipe.augment, seed, step)[0]
            lr = learning_rates(recipe, torch.tensor([job.lr]), torch.tensor([job.epochs]), steps_per_epoch, step)
            for group in optimizer.param_groups:
                group["lr"] = float(lr[0])
            model.train()
            loss = F.cross_entropy(model(x), data.y_train[index], label_smoothing=job.label_smoothing)
            step += 1
            if not torch.isfinite(loss):
                status = "diverged"
                break
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running += loss.item()
            if on_step is not None:
                on_step()
        model.eval()
        test_loss, test_acc = _evaluate(model, data.x_test, data.y_test)
        curves["train_loss"].append(running / steps_per_epoch)
        curves["test_loss"].append(test_loss)
        curves["test_acc"].append(test_acc)
        if epoch + 1 in checkpoint_epochs:
            checkpoints[epoch + 1] = layout.flatten(model).cpu()
        if status == "diverged":
            break
    train_loss, train_acc = _evaluate(model, data.x_train, data.y_train)
    weights = layout.flatten(model).cpu()
    fill_untrained_epochs(curves, checkpoints, job.epochs, checkpoint_epochs, weights)  # only after a divergence
    if not (torch.isfinite(weights).all() and math.isfinite(train_loss)):
        status = "diverged"
    return TrainResult(
        job=job, weights=weights, status=status, curves=curves, checkpoints=checkpoints,
        metrics={"train_acc": train_acc, "train_loss": train_loss,
                 "test_acc": curves["test_acc"][-1] if curves["test_acc"] else math.nan,
                 "test_loss": curves["test_loss"][-1] if curves["test_loss"] else math.nan},
    )
