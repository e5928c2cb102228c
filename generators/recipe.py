"""The training recipe shared by every model of a zoo, and the per-model hyperparameters."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from zoo.errors import SpecError

__all__ = ["Augment", "Recipe", "TrainJob", "learning_rates", "SCHEDULES"]

SCHEDULES = ("triangular", "constant")


@dataclass(frozen=True)
class Augment:
    """Batched on-device augmentation: horizontal flip, translation by up to ``translate`` pixels
    (zero padding), and a ``cutout``×``cutout`` zeroed square."""

    flip: bool = False
    translate: int = 0
    cutout: int = 0

    def __post_init__(self) -> None:
        if self.translate < 0 or self.cutout < 0:
            raise SpecError("translate and cutout must be >= 0")

    @property
    def active(self) -> bool:
        return self.flip or self.translate > 0 or self.cutout > 0


@dataclass(frozen=True)
class Recipe:
    """AdamW with a learning-rate schedule over each model's own epochs.

    ``triangular`` (the zoos): 0 → peak → 0, the peak at ``peak_epoch`` epochs if given (the
    paper: 5), else at ``peak_fraction`` of training, never past the end. ``constant``: the peak
    learning rate throughout (the paper's MNIST LMC runs).
    """

    batch_size: int = 512
    schedule: str = "triangular"
    peak_epoch: float | None = None
    peak_fraction: float = 0.2
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    augment: Augment = field(default_factory=Augment)

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise SpecError(f"schedule '{self.schedule}' is unknown; expected one of {', '.join(SCHEDULES)}")
        if self.batch_size <= 0:
            raise SpecError(f"batch_size must be positive, got {self.batch_size}")
        if not 0 < self.peak_fraction < 1:
            raise SpecError(f"peak_fraction must be in (0, 1), got {self.peak_fraction}")
        if self.peak_epoch is not None and self.peak_epoch <= 0:
            raise SpecError(f"peak_epoch must be > 0, got {self.peak_epoch}")


@dataclass(frozen=True)
class TrainJob:
    """One model to train: its index in the zoo, seed (init, data order, augmentation), and
    hyperparameters."""

    index: int
    seed: int
    lr: float
    weight_decay: float
    label_smoothing: float
    epochs: int


def learning_rates(recipe: Recipe, peak_lr: Tensor, epochs: Tensor, steps_per_epoch: int, step: int) -> Tensor:
    """Per-model learning rate at global ``step`` (0 for models whose training is over)."""
    total = epochs.to(torch.float64) * steps_per_epoch
    if recipe.schedule == "constant":
        return torch.where(float(step) < total, peak_lr.to(torch.float64), 0.0).to(torch.float32)
    if recipe.peak_epoch is not None:
        peak = torch.clamp(torch.full_like(total, recipe.peak_epoch * steps_per_epoch), max=total / 2)
    else:
        peak = total * recipe.peak_fraction
    t = torch.full_like(total, float(step))
    rising = t / peak.clamp_min(1e-12)
    falling = (total - t) / (total - peak).clamp_min(1e-12)
    frac = torch.where(t < peak, rising, falling).clamp(0.0, 1.0)
    return (peak_lr.to(torch.float64) * frac).to(torch.float32)
