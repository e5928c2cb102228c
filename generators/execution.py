"""How a shard's models are trained: all together with the batched ``vmap`` trainer, or one after
another with the plain per-model trainer.

Measured on 2 CPU cores with one torch thread per process (as ``generate``'s workers run), each
preset's batched trainer against the sequential trainer (``benchmarks/trainer_speed.py --threads 1``;
docs/BENCHMARKS.md, "Conv nets on CPU: batched vs per model (issue 15)", has the commands and
figures): the MLP presets gain from batching, and so do conv nets on small images (``digits-resnet``,
8x8 inputs: 2.3-3.3x), while conv nets on 28x28 and 32x32 images run at about 0.6x of per-model
training (the vmapped convolutions, GroupNorm and bias adds over M-times-larger tensors cost more
per model than M plain modules; a group under ``MIN_ROWS`` also pays for padding rows). On CUDA
batching is what fills the device, so it is always batched there.

The choice depends only on the architecture and the device *type*, so the same command on the same
machine always takes the same path and writes the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch

from generators.data import ImageData
from generators.recipe import Recipe, TrainJob
from generators.reference import train_sequential
from generators.trainer import TrainProgress, TrainResult
from zoo.nets import ArchSpec

__all__ = ["BATCHED_CONV_MAX_PIXELS", "Execution", "PER_MODEL_ON_CPU", "execution_for", "train_per_model"]

Execution = Literal["batched", "per_model"]

# Families whose batched vmap step is slower on CPU than the per-model trainer in one-thread
# processes on images above BATCHED_CONV_MAX_PIXELS (measured: see the module docstring).
PER_MODEL_ON_CPU = frozenset({"cnn", "resnet"})
# The largest input (pixels per channel) at which conv nets were measured faster batched on CPU:
# 8x8 digits. The crossover between 64 and 784 pixels (0.57x at 28x28) is not measured.
BATCHED_CONV_MAX_PIXELS = 64


def execution_for(arch: ArchSpec, device: torch.device | str) -> Execution:
    """``"per_model"`` for conv families (``cnn``, ``resnet``) on CPU with inputs larger than
    8x8, ``"batched"`` otherwise.

    Figures (2 cores, one thread per process, models/hour of the batched trainer over that of the
    sequential trainer, both on one thread; docs/BENCHMARKS.md, issues 15 and 17):
    ``mnist-cnn`` 0.57x and ``cifar10-resnet8`` 0.59x, so those run per model on CPU;
    ``digits-resnet`` 3.15x (W-Asym 3.29x, σ-Asym 2.30x), ``digits-mlp`` 16.3x and ``mnist-mlp``
    2.75x, so they stay batched. On CUDA (and any other accelerator): always batched.
    """
    device = torch.device(device)
    pixels = math.prod(arch.input_shape()[1:])
    if device.type == "cpu" and arch.family in PER_MODEL_ON_CPU and pixels > BATCHED_CONV_MAX_PIXELS:
        return "per_model"
    return "batched"


def train_per_model(
    spec: ArchSpec,
    data: ImageData,
    jobs: Sequence[TrainJob],
    recipe: Recipe,
    *,
    device: torch.device | str = "cpu",
    checkpoint_epochs: Sequence[int] = (0,),
    on_progress: Callable[[TrainProgress], None] | None = None,
) -> list[TrainResult]:
    """Train ``jobs`` one after another with :func:`~generators.reference.train_sequential`;
    returns one result per job, in order, with ``train_batched``'s contract (a diverged model is
    kept, marked ``diverged``, its curves padded to its epochs). ``on_progress`` gets the same
    :class:`TrainProgress` as from ``train_batched``, after each step."""
    if any(job.epochs < 1 for job in jobs):
        raise ValueError("every job needs epochs >= 1")
    device = torch.device(device)
    data = data.to(device)
    steps_per_epoch = math.ceil(len(data.x_train) / recipe.batch_size)
    work = sum(job.epochs for job in jobs) * steps_per_epoch
    done_before = 0  # model-steps of the models already trained
    results: list[TrainResult] = []
    for models_done, job in enumerate(jobs):
        steps = 0

        def step() -> None:
            nonlocal steps
            steps += 1
            if on_progress is not None:
                on_progress(TrainProgress(steps // steps_per_epoch, models_done, len(jobs), done_before + steps, work))

        results.append(train_sequential(spec, data, job, recipe, device=device,
                                        checkpoint_epochs=tuple(checkpoint_epochs), on_step=step))
        done_before += job.epochs * steps_per_epoch  # a diverged model's skipped steps count as done
        if on_progress is not None:
            on_progress(TrainProgress(job.epochs, models_done + 1, len(jobs), done_before, work))
    return results
