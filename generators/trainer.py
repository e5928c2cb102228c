"""The batched trainer: M models per step with ``torch.func`` (stacked parameters, ``vmap`` of
``grad`` over ``functional_call``), each with its own hyperparameters, init, data order and
augmentation, and AdamW written functionally with per-model coefficients.

A model's result depends only on its :class:`TrainJob`, never on the other models of its group:
data order and augmentation come from counter-based streams keyed by the model's seed (and the
global step, which every model shares), and the models only share the masks and FiGLU matrices of
the zoo's architecture. So a model that has finished its own epochs, or diverged, is *retired* at
the end of that epoch (its results recorded, its rows dropped from every stacked tensor), and the
later epochs cost only the models still training.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, fields

import torch
from torch import Tensor
from torch.func import functional_call, stack_module_state, vmap

from generators.augment import augment_batch
from generators.data import ImageData
from generators.recipe import Recipe, TrainJob, learning_rates
from generators.rng import permutations
from zoo.interpolation import MIN_ROWS, evaluate_stacked, pad_rows
from zoo.layout import ParamLayout
from zoo.nets import ArchSpec

__all__ = ["TrainProgress", "TrainResult", "fill_untrained_epochs", "train_batched", "smoothed_cross_entropy", "CURVES"]

CURVES = ("train_loss", "test_loss", "test_acc")
# The network always runs at least MIN_ROWS models, padded with copies of the first one
# (zoo.interpolation.pad_rows: on CPU, vmap rounds the convolutions of one or two models
# differently), so a model's result does not depend on how many others share its shard or are
# still training.


@dataclass
class TrainResult:
    """What one trained model becomes: effective flat weights, metrics, curves, checkpoints."""

    job: TrainJob
    weights: Tensor
    metrics: dict[str, float]
    status: str
    curves: dict[str, list[float]] = field(default_factory=dict)
    checkpoints: dict[int, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainProgress:
    """Where a :func:`train_batched` call stands, after each step: ``models_done`` of ``models``
    have finished (or diverged), and ``model_steps_done`` of ``model_steps`` (every job's epochs
    times the steps per epoch) are behind; the steps a diverged model no longer takes count as
    done when it retires."""

    epoch: int
    models_done: int
    models: int
    model_steps_done: int
    model_steps: int


def smoothed_cross_entropy(logits: Tensor, target: Tensor, smoothing: Tensor | float) -> Tensor:
    """``F.cross_entropy(..., label_smoothing=ε)`` averaged over the last batch dimension, with ε
    a tensor broadcast against ``target`` (so each model has its own): ``(M, B, C) -> (M,)``."""
    # Over a strided class dimension, PyTorch's CPU kernel vectorises across the batch instead of
    # along ~10 classes: 3-4x faster. Equal up to rounding to log_softmax(logits, -1).
    logp = torch.log_softmax(logits.transpose(-1, -2), dim=-2).transpose(-1, -2)
    nll = -logp.gather(-1, target[..., None]).squeeze(-1)
    return ((1 - smoothing) * nll - smoothing * logp.mean(dim=-1)).mean(dim=-1)


class _Stack:
    """M models of one architecture as stacked parameters over a shared template."""

    def __init__(self, spec: ArchSpec, jobs: Sequence[TrainJob], device: torch.device) -> None:
        self.template = spec.build(init_seed=jobs[0].seed).to(device)
        # The variants share the standard network's parameter names and initial values (fixed
        # W-Asym entries are re-imposed by the layers' forward and by flat()), so the per-model
        # inits come from the cheap standard build; masks and FiGLU matrices live in the template.
        standard = spec.with_variant("standard")
        models = [standard.build(init_seed=job.seed) for job in jobs]
        params, _ = stack_module_state(models)
        # One contiguous (M, P_trainable) buffer, with every parameter a view into it, so the
        # optimiser updates all tensors of all models in a handful of kernels.
        self.flat_params = torch.cat([v.detach().reshape(len(models), -1) for v in params.values()], 1).to(device)
        self.shapes = {name: tuple(value.shape[1:]) for name, value in params.items()}  # one model's
        self.params = self.views(self.flat_params)
        self.buffers = {k: v for k, v in self.template.named_buffers()}
        self.layout = ParamLayout.from_module(self.template)
        self.mask = self.layout.trainable_mask.to(device)
        self.fixed = torch.where(self.mask, 0.0, self.layout.flatten(self.template).to(device))

    def views(self, flat: Tensor) -> dict[str, Tensor]:
        """Per-parameter views ``(M, *shape)`` into a flat ``(M, P_trainable)`` buffer."""
        views, offset = {}, 0
        for name, shape in self.shapes.items():
            numel = math.prod(shape)
            views[name] = flat[:, offset : offset + numel].view(len(flat), *shape)
            offset += numel
        return views

    def forward(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(self.template, (params, self.buffers), (x,))

    def flat(self) -> Tensor:
        """Effective weights ``(M, P)`` in state_dict order (fixed entries re-imposed)."""
        m = next(iter(self.params.values())).shape[0]
        parts = []
        for slot in self.layout.slots:
            tensor = self.params.get(slot.name)
            if tensor is None:
                tensor = self.buffers[slot.name].expand(m, *slot.shape)
            parts.append(tensor.detach().reshape(m, -1).float())
        return torch.where(self.mask, torch.cat(parts, dim=1), self.fixed)

    def padded_params(self) -> dict[str, Tensor]:
        """``params``, with copies of the first model appended up to ``MIN_ROWS`` models."""
        return self.params if len(self.flat_params) >= MIN_ROWS else self.views(pad_rows(self.flat_params))

    def subset(self, rows: Tensor) -> _Stack:
        """The models at ``rows`` only, in that order (template, masks and fixed entries shared)."""
        kept = copy.copy(self)
        kept.flat_params = self.flat_params.index_select(0, rows)
        kept.params = kept.views(kept.flat_params)
        return kept


@dataclass
class _Live:
    """Per-model tensors of the models still training, one row each (row ``r`` trains
    ``jobs[index[r]]``): hyperparameter columns and AdamW state."""

    index: Tensor
    seeds: Tensor
    peak_lr: Tensor
    weight_decay: Tensor
    smoothing: Tensor
    epochs: Tensor
    steps_done: Tensor
    alive: Tensor
    exp_avg: Tensor
    exp_avg_sq: Tensor

    def subset(self, rows: Tensor) -> _Live:
        return _Live(**{f.name: getattr(self, f.name).index_select(0, rows) for f in fields(self)})


def _evaluate(stack: _Stack, x: Tensor, y: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
    """Per-model mean cross-entropy and accuracy on (x, y) (:func:`~zoo.interpolation.evaluate_stacked`).
    The losses are summed in float32, as the zoos made so far were: float64 would change the low
    bits of their stored losses."""
    return evaluate_stacked(stack.template, stack.padded_params(), x, y, rows=len(stack.flat_params), batch_size=chunk,
                            loss_dtype=torch.float32)


def train_batched(
    spec: ArchSpec,
    data: ImageData,
    jobs: Sequence[TrainJob],
    recipe: Recipe,
    *,
    device: torch.device | str = "cpu",
    checkpoint_epochs: Sequence[int] = (0,),
    eval_chunk: int = 2048,
    autocast_bf16: bool = False,
    compile_step: bool = False,
    on_epoch: Callable[[int, int], None] | None = None,
    on_progress: Callable[[TrainProgress], None] | None = None,
) -> list[TrainResult]:
    """Train ``jobs`` together; returns one result per job, in order.

    ``on_epoch(epoch, max_epochs)`` is called after each epoch (the last may come before
    ``max_epochs`` when every model left has diverged); ``on_progress`` after each step.
    ``compile_step`` runs the step's forward and loss (and so their backward) through
    ``torch.compile``: off by default, since on CPU it is slower (mnist-cnn, M = 16, one thread:
    133 ms a step against 64 ms eager, after 25 s of compiling; docs/BENCHMARKS.md, issue 15).
    """
    if any(job.epochs < 1 for job in jobs):
        raise ValueError("every job needs epochs >= 1")
    device = torch.device(device)
    data = data.to(device)
    stack = _Stack(spec, jobs, device)
    n = len(data.x_train)
    steps_per_epoch = math.ceil(n / recipe.batch_size)
    col = lambda values, dtype=torch.float32: torch.tensor(values, dtype=dtype, device=device)  # noqa: E731
    live = _Live(
        index=torch.arange(len(jobs), device=device), seeds=col([j.seed for j in jobs], torch.int64),
        peak_lr=col([j.lr for j in jobs]), weight_decay=col([j.weight_decay for j in jobs]),
        smoothing=col([j.label_smoothing for j in jobs]), epochs=col([j.epochs for j in jobs], torch.int64),
        steps_done=torch.zeros(len(jobs), dtype=torch.float64, device=device),
        alive=torch.ones(len(jobs), dtype=torch.bool, device=device),
        exp_avg=torch.zeros_like(stack.flat_params), exp_avg_sq=torch.zeros_like(stack.flat_params),
    )
    beta1, beta2 = recipe.betas
    forward = vmap(stack.forward)  # the template and buffers are those of every subset of the stack

    def losses_of(params: dict[str, Tensor], x: Tensor, y: Tensor, smoothing: Tensor) -> Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16) if autocast_bf16 else nullcontext():
            logits = forward(params, x)
        return smoothed_cross_entropy(logits.float(), y, smoothing)

    if compile_step:
        losses_of = torch.compile(losses_of)

    def grad_step(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Per-model gradients ``(M, P_trainable)`` and losses ``(M,)``: the models' parameters
        are disjoint, so one backward pass of the summed losses gives every model's gradient."""
        # Each tensor is its own leaf: differentiating through views of the flat buffer would
        # make autograd zero-fill and add a whole (M, P) gradient per tensor.
        m = len(x)
        leaves = {name: view.detach().requires_grad_() for name, view in stack.padded_params().items()}
        losses = losses_of(leaves, pad_rows(x), pad_rows(y), pad_rows(live.smoothing)[:, None])
        grads = torch.autograd.grad(losses.sum(), list(leaves.values()))
        return torch.cat([g[:m].reshape(m, -1) for g in grads], 1), losses.detach()[:m]

    results = [TrainResult(job, torch.empty(0), {}, "", {c: [] for c in CURVES}, {}) for job in jobs]
    if 0 in checkpoint_epochs:
        for result, weights in zip(results, stack.flat().cpu()):
            result.checkpoints[0] = weights
    max_epochs = max(job.epochs for job in jobs)
    work = sum(job.epochs for job in jobs) * steps_per_epoch
    work_done = models_done = step = epoch = 0
    while len(live.index):
        order = permutations(live.seeds, epoch, n)
        running = torch.zeros(len(live.index), dtype=torch.float64, device=device)
        for b in range(steps_per_epoch):
            index = order[:, b * recipe.batch_size : (b + 1) * recipe.batch_size]
            x = augment_batch(data.x_train[index], recipe.augment, live.seeds, step)
            grads, losses = grad_step(x, data.y_train[index])
            lr = learning_rates(recipe, live.peak_lr, live.epochs, steps_per_epoch, step)
            live.alive &= torch.isfinite(losses)  # a diverged model stops here (lr 0), retires after the epoch
            live.steps_done += live.alive
            _adamw(stack.flat_params, grads, live.exp_avg, live.exp_avg_sq, lr * live.alive, live.weight_decay,
                   live.steps_done, beta1, beta2, recipe.eps)
            running += torch.where(live.alive, losses.double(), 0.0)
            step += 1
            work_done += len(live.index)
            if on_progress is not None:
                on_progress(TrainProgress(epoch, models_done, len(jobs), work_done, work))
        test_loss, test_acc = _evaluate(stack, data.x_test, data.y_test, eval_chunk)
        current = [results[i] for i in live.index.tolist()]
        for r, result in enumerate(current):
            result.curves["train_loss"].append(float(running[r] / steps_per_epoch))
            result.curves["test_loss"].append(float(test_loss[r]))
            result.curves["test_acc"].append(float(test_acc[r]))
        if epoch + 1 in checkpoint_epochs:
            for result, weights in zip(current, stack.flat().cpu()):
                result.checkpoints[epoch + 1] = weights
        done = ~live.alive | (live.epochs <= epoch + 1)
        retire = bool(done.any())
        if retire:
            out, keep = done.nonzero().squeeze(1), (~done).nonzero().squeeze(1)
            retiring = [current[r] for r in out.tolist()]
            _retire(stack.subset(out), retiring, live.alive[out], data, eval_chunk, checkpoint_epochs)
            stack, live = stack.subset(keep), live.subset(keep)
            models_done += len(retiring)
            work_done += sum(r.job.epochs - epoch - 1 for r in retiring) * steps_per_epoch
        epoch += 1
        if on_epoch is not None:
            on_epoch(epoch, max_epochs)
        if on_progress is not None and retire:
            on_progress(TrainProgress(epoch, models_done, len(jobs), work_done, work))
    return results


def fill_untrained_epochs(curves: dict[str, list[float]], checkpoints: dict[int, Tensor], epochs: int,
                          checkpoint_epochs: Sequence[int], weights: Tensor) -> None:
    """Complete the record of a model that stopped (diverged) before its ``epochs``, as if it had
    stayed with its weights frozen: no training loss (0.0), the same test metrics, and ``weights``
    at every later checkpoint. Both trainers give a diverged model this same record shape."""
    trained = len(curves["test_loss"])
    rest = epochs - trained
    curves["train_loss"] += [0.0] * rest
    curves["test_loss"] += curves["test_loss"][-1:] * rest
    curves["test_acc"] += curves["test_acc"][-1:] * rest
    for e in sorted(checkpoint_epochs):
        if trained < e <= epochs:
            checkpoints[e] = weights


def _retire(stack: _Stack, results: Sequence[TrainResult], alive: Tensor, data: ImageData, eval_chunk: int,
            checkpoint_epochs: Sequence[int]) -> None:
    """Complete the results of the models of ``stack``, which leave training at the end of the
    epoch their curves have reached: final weights and train metrics, and for a model that
    diverged before its last epoch, the rest of its record (:func:`fill_untrained_epochs`)."""
    train_loss, train_acc = _evaluate(stack, data.x_train, data.y_train, eval_chunk)
    final = stack.flat().cpu()
    for r, result in enumerate(results):
        fill_untrained_epochs(result.curves, result.checkpoints, result.job.epochs, checkpoint_epochs, final[r])
        ok = bool(alive[r]) and bool(torch.isfinite(final[r]).all()) and math.isfinite(float(train_loss[r]))
        result.weights = final[r]
        result.metrics = {"train_acc": float(train_acc[r]), "train_loss": float(train_loss[r]),
                          "test_acc": result.curves["test_acc"][-1], "test_loss": result.curves["test_loss"][-1]}
        result.status = "ok" if ok else "diverged"


@torch.no_grad()
def _adamw(params: Tensor, grads: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, lr: Tensor,
           weight_decay: Tensor, step: Tensor, beta1: float, beta2: float, eps: float) -> None:
    """``torch.optim.AdamW``'s update on ``(M, P)`` buffers with per-model ``lr``, ``weight_decay``
    and ``step``. Models with ``lr = 0`` (diverged, until they retire at the end of the epoch) keep
    their parameters unless a moment turns non-finite; their moments still move."""
    step = step.clamp_min(1)[:, None]
    step_size = (lr.double()[:, None] / (1 - beta1**step)).float()
    bias2_sqrt = (1 - beta2**step).sqrt().float()
    params.mul_(1 - (lr * weight_decay)[:, None])
    exp_avg.lerp_(grads, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grads, grads, value=1 - beta2)
    denom = exp_avg_sq.sqrt().div_(bias2_sqrt).add_(eps)
    params.sub_(exp_avg.div(denom).mul_(step_size))
