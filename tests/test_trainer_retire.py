"""Retiring finished and diverged models (issue 15): the batched trainer drops them from its stacks
at epoch boundaries, and every result stays what the trainer gave when it kept training all of
them to the group's largest epoch count. That trainer is kept here, and only here, as the
reference (``_train_batched_reference``, a verbatim copy of ``train_batched`` before retirement).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext

import pytest
import torch
from torch import Tensor
from torch.func import vmap

import generators.trainer as trainer
from generators.augment import augment_batch
from generators.data import ImageData, load_images
from generators.recipe import Augment, Recipe, TrainJob, learning_rates
from generators.rng import permutations
from generators.trainer import (CURVES, TrainProgress, TrainResult, _adamw, _evaluate, _Stack, smoothed_cross_entropy,
                                train_batched)
from zoo import ArchSpec, ParamLayout, get_arch


@pytest.fixture(scope="module")
def digits():
    return load_images("digits")


def synthetic(shape: tuple[int, ...], n_train: int, n_test: int) -> ImageData:
    g = torch.Generator().manual_seed(0)
    labels = lambda n: torch.randint(0, 10, (n,), generator=g)  # noqa: E731
    return ImageData("synthetic", torch.randn(n_train, *shape, generator=g), labels(n_train),
                     torch.randn(n_test, *shape, generator=g), labels(n_test), 10)


def mixed_jobs(epochs: Sequence[int], lr: float | None = None) -> list[TrainJob]:
    """Jobs with these epochs and varied hyperparameters, plus one that diverges in its first
    epoch (lr 1e25: its weights overflow within a few steps) but would train for 4."""
    good = [TrainJob(i, 1000 + i, lr or 10 ** -(1.5 + 0.5 * (i % 3)), 10 ** -(1 + i % 4), 0.05 * (i % 4), e)
            for i, e in enumerate(epochs)]
    return good[:2] + [TrainJob(99, 7, 1e25, 0.0, 0.0, 4)] + good[2:]


def bits(t: Tensor) -> Tensor:
    return t.contiguous().view(torch.int32)


def same_float(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def assert_identical(new: list[TrainResult], old: list[TrainResult], atol: float = 0.0) -> None:
    """Equal results; ``atol = 0``: bit for bit (NaN entries of diverged models included)."""
    def close(a: Tensor, b: Tensor) -> bool:
        if atol == 0:
            return torch.equal(bits(a), bits(b))
        return bool(torch.isclose(a, b, rtol=0, atol=atol, equal_nan=True).all())

    def close_floats(a: list[float], b: list[float]) -> bool:
        return len(a) == len(b) and all(same_float(x, y) or abs(x - y) <= atol for x, y in zip(a, b))

    assert len(new) == len(old)
    for n, o in zip(new, old):
        assert n.job == o.job and n.status == o.status, n.job
        assert close(n.weights, o.weights), (n.job, float((n.weights - o.weights).abs().max()))
        assert n.metrics.keys() == o.metrics.keys(), n.job
        assert close_floats(list(n.metrics.values()), list(o.metrics.values())), n.job
        assert n.curves.keys() == o.curves.keys() and all(close_floats(n.curves[c], o.curves[c]) for c in CURVES), n.job
        assert list(n.checkpoints) == list(o.checkpoints), n.job
        assert all(close(n.checkpoints[e], o.checkpoints[e]) for e in o.checkpoints), n.job


# -- results -----------------------------------------------------------------------------------------
CHECKPOINTS = (0, 1, 2, 3, 5)


@pytest.mark.parametrize("variant", ["standard", "w_asym"])
def test_retiring_gives_the_same_results_bit_for_bit(digits, variant):
    spec, recipe = get_arch("mlp-digits", variant), Recipe(batch_size=64)
    jobs = mixed_jobs([1, 2, 3, 4, 5, 3, 1])
    new = train_batched(spec, digits, jobs, recipe, checkpoint_epochs=CHECKPOINTS)
    old = _train_batched_reference(spec, digits, jobs, recipe, checkpoint_epochs=CHECKPOINTS)
    assert_identical(new, old)
    assert [r.status for r in new].count("diverged") == 1 and new[2].status == "diverged"
    for r in new:  # checkpoints past a model's own epochs are absent, as they were
        assert list(r.checkpoints) == [e for e in CHECKPOINTS if e <= r.job.epochs]
        assert all(len(r.curves[c]) == r.job.epochs for c in CURVES)
    # the diverged model's later epochs: no training loss, its frozen weights' test metrics
    assert new[2].curves["train_loss"][1:] == [0.0] * 3
    assert torch.equal(bits(new[2].checkpoints[3]), bits(new[2].weights))


def test_w_asym_fixed_entries_stay_exact(digits):
    spec = get_arch("mlp-digits", "w_asym")
    jobs = mixed_jobs([1, 3, 2, 4])
    results = train_batched(spec, digits, jobs, Recipe(batch_size=64), checkpoint_epochs=(0, 1, 2, 3))
    model = spec.build()
    layout = ParamLayout.from_module(model)
    fixed, expected = ~layout.trainable_mask, layout.flatten(model)[~layout.trainable_mask]
    assert fixed.any()
    for r in results:
        for weights in (r.weights, *r.checkpoints.values()):
            assert torch.equal(weights[fixed], expected), r.job


def test_a_group_that_only_diverges_stops_early(digits):
    spec, recipe = get_arch("mlp-digits", "standard"), Recipe(batch_size=64)
    jobs = [TrainJob(i, 7 + i, 1e25, 0.0, 0.0, 3 + i) for i in range(3)]
    epochs: list[tuple[int, int]] = []
    new = train_batched(spec, digits, jobs, recipe, checkpoint_epochs=(0, 1, 4), on_epoch=lambda *a: epochs.append(a))
    assert_identical(new, _train_batched_reference(spec, digits, jobs, recipe, checkpoint_epochs=(0, 1, 4)))
    assert [r.status for r in new] == ["diverged"] * 3 and epochs == [(1, 5)]


@pytest.mark.parametrize("arch", ["cnn-mnist", "resnet8"])
def test_conv_nets_give_the_same_results(arch):
    """The same results bit for bit, also when one or two models are left training: the network
    always runs at least three models (``zoo.interpolation.MIN_ROWS``), since under ``vmap`` oneDNN rounds
    the convolutions of one or two models differently from those of three or more (measured on
    x86: without the padding this test differs by 4e-9 to 1e-7). If only the exact check fails on
    some machine, its kernels round differently for other numbers of models too, and conv-net zoos
    made there depend on ``--batch-models``."""
    spec = get_arch(arch, "w_asym")
    data = synthetic((1, 28, 28) if arch == "cnn-mnist" else (3, 32, 32), 32, 16)
    recipe = Recipe(batch_size=16, augment=Augment(flip=True, translate=2, cutout=4))
    jobs = mixed_jobs([1, 2, 3, 1], lr=1e-3)  # 5 models, then 2, then 1 training
    new = train_batched(spec, data, jobs, recipe, checkpoint_epochs=(0, 1, 2, 3))
    old = _train_batched_reference(spec, data, jobs, recipe, checkpoint_epochs=(0, 1, 2, 3))
    assert_identical(new, old, atol=1e-6)
    assert_identical(new, old)


# -- compute ---------------------------------------------------------------------------------------
def test_finished_and_diverged_models_stop_costing_compute(digits, monkeypatch):
    spec, recipe = get_arch("mlp-digits", "standard"), Recipe(batch_size=64)
    jobs = mixed_jobs([1, 2, 3, 4, 5, 5, 5])  # never fewer than 3 training (the least the network runs)
    rows: list[int] = []

    def counting(logits: Tensor, target: Tensor, smoothing: Tensor | float) -> Tensor:
        rows.append(len(logits))
        return smoothed_cross_entropy(logits, target, smoothing)

    monkeypatch.setattr(trainer, "smoothed_cross_entropy", counting)
    epochs: list[tuple[int, int]] = []
    progress: list[TrainProgress] = []
    results = train_batched(spec, digits, jobs, recipe, on_epoch=lambda *a: epochs.append(a),
                            on_progress=progress.append)
    steps = math.ceil(len(digits.x_train) / recipe.batch_size)
    trained = [1 if r.status == "diverged" else r.job.epochs for r in results]  # the diverged one: its first epoch
    assert len(rows) == 5 * steps  # one forward pass per step, for the longest job's epochs
    assert sum(rows) == sum(trained) * steps < len(jobs) * 5 * steps  # model-steps: 26 x 22, not 8 x 5 x 22
    assert epochs == [(e, 5) for e in range(1, 6)]
    work = sum(j.epochs for j in jobs) * steps  # the diverged model's skipped steps count when it retires
    assert len(progress) == 5 * steps + 5  # after each step, and after each epoch where models retired
    assert progress[-1] == TrainProgress(epoch=5, models_done=8, models=8, model_steps_done=work, model_steps=work)
    done = [p.model_steps_done for p in progress]
    assert done == sorted(done)


def test_data_streams_do_not_depend_on_the_other_models():
    """Data order and augmentation are keyed by each model's seed and the shared step counter, so
    dropping rows leaves every other model's batches as they were."""
    seeds, keep = torch.tensor([11, 12, 13, 14, 15]), torch.tensor([1, 3, 4])
    assert torch.equal(permutations(seeds, 3, 100)[keep], permutations(seeds[keep], 3, 100))
    x = torch.randn(5, 8, 3, 12, 12)
    augment = Augment(flip=True, translate=2, cutout=4)
    assert torch.equal(augment_batch(x, augment, seeds, 17)[keep], augment_batch(x[keep], augment, seeds[keep], 17))


# -- the reference: train_batched before retirement ---------------------------------------------------


def _train_batched_reference(
    spec: ArchSpec,
    data: ImageData,
    jobs: Sequence[TrainJob],
    recipe: Recipe,
    *,
    device: torch.device | str = "cpu",
    checkpoint_epochs: Sequence[int] = (0,),
    eval_chunk: int = 2048,
    autocast_bf16: bool = False,
    on_epoch: Callable[[int, int], None] | None = None,
) -> list[TrainResult]:
    """The trainer before retirement: every model steps (lr 0 once finished or diverged) until the
    group's largest epoch count. Verbatim but for its name."""
    device = torch.device(device)
    data = data.to(device)
    stack = _Stack(spec, jobs, device)
    m = len(jobs)
    n = len(data.x_train)
    steps_per_epoch = math.ceil(n / recipe.batch_size)
    col = lambda values, dtype=torch.float32: torch.tensor(values, dtype=dtype, device=device)  # noqa: E731
    seeds = col([j.seed for j in jobs], torch.int64)
    peak_lr, wd = col([j.lr for j in jobs]), col([j.weight_decay for j in jobs])
    smoothing, epochs = col([j.label_smoothing for j in jobs]), col([j.epochs for j in jobs], torch.int64)
    beta1, beta2 = recipe.betas
    exp_avg, exp_avg_sq = torch.zeros_like(stack.flat_params), torch.zeros_like(stack.flat_params)
    steps_done = torch.zeros(m, dtype=torch.float64, device=device)
    alive = torch.ones(m, dtype=torch.bool, device=device)

    forward = vmap(stack.forward)

    def grad_step(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Per-model gradients ``(M, P_trainable)`` and losses ``(M,)``: the models' parameters
        are disjoint, so one backward pass of the summed losses gives every model's gradient."""
        # Each tensor is its own leaf: differentiating through views of the flat buffer would
        # make autograd zero-fill and add a whole (M, P) gradient per tensor.
        leaves = {name: view.detach().requires_grad_() for name, view in stack.params.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16) if autocast_bf16 else nullcontext():
            logits = forward(leaves, x)
        losses = smoothed_cross_entropy(logits.float(), y, smoothing[:, None])
        grads = torch.autograd.grad(losses.sum(), list(leaves.values()))
        return torch.cat([g.reshape(m, -1) for g in grads], 1), losses.detach()

    curves: dict[str, list[list[float]]] = {c: [[] for _ in jobs] for c in CURVES}
    checkpoints: dict[int, Tensor] = {0: stack.flat().cpu()} if 0 in checkpoint_epochs else {}
    max_epochs = int(epochs.max())
    step = 0
    for epoch in range(max_epochs):
        order = permutations(seeds, epoch, n)
        running = torch.zeros(m, dtype=torch.float64, device=device)
        for b in range(steps_per_epoch):
            index = order[:, b * recipe.batch_size : (b + 1) * recipe.batch_size]
            x = augment_batch(data.x_train[index], recipe.augment, seeds, step)
            grads, losses = grad_step(x, data.y_train[index])
            lr = learning_rates(recipe, peak_lr, epochs, steps_per_epoch, step)
            active = alive & (epoch < epochs)
            alive &= torch.isfinite(losses) | ~active
            active &= alive
            steps_done += active
            _adamw(stack.flat_params, grads, exp_avg, exp_avg_sq, lr * active, wd, steps_done, beta1, beta2, recipe.eps)
            running += torch.where(active, losses.double(), 0.0)
            step += 1
        test_loss, test_acc = _evaluate(stack, data.x_test, data.y_test, eval_chunk)
        for i in range(m):
            if epoch < jobs[i].epochs:
                curves["train_loss"][i].append(float(running[i] / steps_per_epoch))
                curves["test_loss"][i].append(float(test_loss[i]))
                curves["test_acc"][i].append(float(test_acc[i]))
        if epoch + 1 in checkpoint_epochs:
            checkpoints[epoch + 1] = stack.flat().cpu()
        if on_epoch is not None:
            on_epoch(epoch + 1, max_epochs)

    train_loss, train_acc = _evaluate(stack, data.x_train, data.y_train, eval_chunk)
    final = stack.flat().cpu()
    results = []
    for i, job in enumerate(jobs):
        ok = bool(alive[i]) and bool(torch.isfinite(final[i]).all()) and math.isfinite(float(train_loss[i]))
        results.append(TrainResult(
            job=job,
            weights=final[i],
            metrics={"train_acc": float(train_acc[i]), "train_loss": float(train_loss[i]),
                     "test_acc": float(curves["test_acc"][i][-1]), "test_loss": float(curves["test_loss"][i][-1])},
            status="ok" if ok else "diverged",
            curves={c: curves[c][i] for c in CURVES},
            checkpoints={e: w[i] for e, w in checkpoints.items() if e <= job.epochs},
        ))
    return results
