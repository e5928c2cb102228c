"""The training protocol of one metanet on one zoo (docs/PAPER.md §3): :class:`MetanetConfig`,
and the zoo columns a metanet may predict (:data:`TARGETS`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from metanets.augment import AUGMENTABLE_VIEWS
from metanets.registry import get_metanet
from zoo.errors import SpecError

__all__ = ["TARGETS", "ACCURACY_TARGETS", "MetanetConfig"]

TARGETS = ("test_acc", "train_acc", "lr", "weight_decay", "label_smoothing", "epochs")
ACCURACY_TARGETS = ("test_acc", "train_acc")


@dataclass(frozen=True)
class MetanetConfig:
    """One cell's protocol. ``normalize``: standardise the inputs with train-split statistics (per
    feature for ``statistics``, per weight tensor otherwise; default: the metanet's own protocol,
    on for StatNN and GMN, off for NFN and the paper's other baselines). ``sigmoid``: bound the
    prediction to (0, 1), the head the NFN and neural-graph authors use for accuracy targets
    (default: on for NFN and GMN when the target is an accuracy).
    ``augment``: apply a random hidden-unit permutation to each network of each training batch
    (meant for standard zoos). ``warmup_steps``: raise the learning rate linearly over the first
    steps (the NFN authors' trainer does; at lr ≥ 5e-3 NFN's first Adam steps otherwise saturate
    its sigmoid for good)."""

    model: str
    target: str = "test_acc"
    epochs: int = 50
    batch_size: int = 128
    weight_decay: float = 1e-2
    lrs: tuple[float, ...] = (1e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2)
    seeds: int = 5
    include_diverged: bool = False
    normalize: bool | None = None
    sigmoid: bool | None = None
    augment: bool = False
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        entry = get_metanet(self.model)
        if self.normalize is None:  # unset: the metanet's own protocol (see register_metanet)
            object.__setattr__(self, "normalize", entry.normalize)
        if self.sigmoid is None:  # the authors' bounded head is for accuracies only
            object.__setattr__(self, "sigmoid", entry.sigmoid and self.target in ACCURACY_TARGETS)
        if self.augment and entry.view not in AUGMENTABLE_VIEWS:
            raise SpecError(f"augment: {self.model} reads per-tensor statistics, which permutations do not change; "
                            f"expected a metanet reading weights ({', '.join(AUGMENTABLE_VIEWS)} view)")
        if self.target not in TARGETS:
            raise SpecError(f"unknown target '{self.target}'; expected one of {', '.join(TARGETS)}")
        if self.epochs <= 0 or self.seeds <= 0 or self.batch_size <= 0 or not self.lrs:
            raise SpecError("epochs, seeds, batch_size must be positive and lrs non-empty")
        if self.warmup_steps < 0:
            raise SpecError(f"warmup_steps {self.warmup_steps}: expected a number of steps >= 0")
        if not all(math.isfinite(lr) and lr > 0 for lr in self.lrs):
            raise SpecError(f"lrs {list(self.lrs)}: expected learning rates > 0 (e.g. 1e-3)")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise SpecError(f"weight_decay {self.weight_decay}: expected a number >= 0")
