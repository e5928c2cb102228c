"""How a shard's models are trained: all together with the batched ``vmap`` trainer, or one after
another with the plain per-model trainer.

Measured on 2 CPU cores with one torch thread per process (as ``generate``'s workers run), each
preset's batched trainer against the sequential trainer (``benchmarks/trainer_speed.py --threads 1``;
docs/BENCHMARKS.md, "Conv nets on CPU: batched vs per model (issue 15)", has the commands and
figures): the MLP presets gain from batching, while on CPU the conv families run at about 0.6x of
per-model training (the vmapped convolutions, GroupNorm and bias adds over M-times-larger tensors
cost more per model than M plain modules; a group under ``MIN_ROWS`` also pays for padding rows).
On CUDA batching is what fills the device, so it is always batched there.

The choice depends only on the architecture's family and the device *type*, so the same command on
the same machine always takes the same path and writes the same bytes.
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

__all__ = ["Execution", "PER_MODEL_ON_CPU", "execution_for", "train_per_model"]

Execution = Literal["batched", "per_model"]

# Families whose batched vmap step is slower on CPU than the per-model trainer in one-thread
# processes (measured: see the module docstring).
PER_MODEL_ON_CPU = frozenset({"cnn", "resnet"})


def execution_for(arch: ArchSpec, device: torch.device | str) -> Execution:
    """``"per_model"`` for conv families (``cnn``, ``resnet``) on CPU, ``"batched"`` otherwise.

    Figures (2 cores, one thread per process, 2 processes, models/hour of the batched trainer over
    that of the sequential trainer, both on one thread; docs/BENCHMARKS.md, issue 15):
    ``mnist-cnn`` 0.57x and ``cifar10-resnet8`` 0.59x, so conv families run per model on CPU;
    ``digits-mlp`` 16.3x and ``mnist-mlp`` 2.75x, so MLPs stay batched. On CUDA (and any other
    accelerator): always batched.
    """
    device = torch.device(device)
    if device.type == "cpu" and arch.family in PER_MODEL_ON_CPU:
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
