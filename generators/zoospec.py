"""Zoo specs: what to train (architecture, variant, data set, hyperparameter distributions, recipe),
how many models, and the zoo seed; plus the named presets.

Model ``i`` of a zoo draws its hyperparameters and its seed from ``(zoo seed, i)`` only, so paired
zoos (same seed, different variants) share hyperparameter rows and data orders, and growing a zoo
never changes the models already in it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from generators.data import DATASET_SHAPES, DATASETS
from generators.recipe import Augment, Recipe, TrainJob
from zoo.config import dataclass_from_dict, read_config_file
from zoo.errors import SpecError
from zoo.nets import ArchSpec, check_variant, get_arch, spec_from_dict
from zoo.seeding import derive_seed

__all__ = ["Dist", "HyperparameterSpace", "ZooSpec", "ZOO_PRESETS", "get_zoo_spec", "load_zoo_spec", "zoo_spec_from_dict"]


@dataclass(frozen=True)
class Dist:
    """A one-dimensional distribution.

    ``log10_uniform``: ``scale · 10^U(low, high)``; ``uniform``: ``U(low, high)``;
    ``int_uniform``: an integer in ``[low, high]`` inclusive; ``fixed``: always ``low``.
    """

    kind: str
    low: float
    high: float | None = None
    scale: float = 1.0

    KINDS = ("log10_uniform", "uniform", "int_uniform", "fixed")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise SpecError(f"distribution kind '{self.kind}' is unknown; expected one of {', '.join(self.KINDS)}")
        if not all(math.isfinite(v) for v in (self.low, self.scale, *([] if self.high is None else [self.high]))):
            raise SpecError(f"{self.kind} distribution needs finite numbers, got low={self.low}, high={self.high}, "
                            f"scale={self.scale}")
        if self.kind != "fixed" and (self.high is None or self.high < self.low):
            raise SpecError(f"{self.kind} distribution needs low <= high, got low={self.low}, high={self.high}")
        if self.kind == "int_uniform" and (self.low != int(self.low) or self.high != int(self.high)):
            raise SpecError(f"int_uniform bounds must be integers, got {self.low}, {self.high}")

    def sample(self, rng: np.random.Generator) -> float:
        if self.kind == "fixed":
            return self.low
        if self.kind == "int_uniform":
            return int(rng.integers(int(self.low), int(self.high) + 1))
        u = rng.uniform(self.low, self.high)
        return self.scale * 10.0**u if self.kind == "log10_uniform" else u

    @property
    def bounds(self) -> tuple[float, float]:
        if self.kind == "log10_uniform":
            return self.scale * 10.0**self.low, self.scale * 10.0**self.high
        return self.low, self.low if self.high is None else self.high


@dataclass(frozen=True)
class HyperparameterSpace:
    """Per-model hyperparameters; defaults are the paper's (docs/PAPER.md §3)."""

    lr: Dist = Dist("log10_uniform", -2.0, 0.0, scale=0.5)
    weight_decay: Dist = Dist("log10_uniform", -5.0, -1.0)
    label_smoothing: Dist = Dist("uniform", 0.0, 0.2)
    epochs: Dist = Dist("int_uniform", 10, 40)

    def __post_init__(self) -> None:
        if self.lr.bounds[0] <= 0 or self.weight_decay.bounds[0] < 0:
            raise SpecError("lr must be > 0 and weight_decay >= 0")
        if not 0 <= self.label_smoothing.bounds[0] <= self.label_smoothing.bounds[1] < 1:
            raise SpecError("label_smoothing must lie in [0, 1)")
        if self.epochs.kind not in ("int_uniform", "fixed") or self.epochs.bounds[0] < 1:
            raise SpecError("epochs must be an int_uniform or fixed distribution with values >= 1")
        if any(e != int(e) for e in self.epochs.bounds):  # not rounded: the zoo would not be what was asked
            raise SpecError(f"epochs must be whole numbers, got {', '.join(f'{e:g}' for e in dict.fromkeys(self.epochs.bounds))}")

    NAMES = ("lr", "weight_decay", "label_smoothing", "epochs")
    TYPES = {"lr": "float", "weight_decay": "float", "label_smoothing": "float", "epochs": "int"}


@dataclass(frozen=True)
class ZooSpec:
    """Everything that determines a zoo.

    Attributes:
        name: zoo name (dataset card title).
        arch: an architecture preset name, or an inline architecture spec mapping.
        variant: ``standard``, ``w_asym`` or ``sigma_asym``.
        dataset: ``digits``, ``mnist``, ``fashion_mnist`` or ``cifar10``.
        n_models: models in the zoo (indices ``0 .. n_models-1``).
        seed: the zoo seed.
        hyperparameters: per-model distributions.
        recipe: the shared training recipe.
        checkpoint_epochs: epochs whose weights are stored (0 = initial weights, always kept).
        train_subset: train on only the first N training examples (None = all), for CPU-scale zoos.
        batch_models: models trained together per step (a shard).
    """

    name: str
    arch: str | dict[str, Any]
    dataset: str
    variant: str = "standard"
    n_models: int = 1000
    seed: int = 0
    hyperparameters: HyperparameterSpace = field(default_factory=HyperparameterSpace)
    recipe: Recipe = field(default_factory=Recipe)
    checkpoint_epochs: tuple[int, ...] = (0,)
    train_subset: int | None = None
    batch_models: int = 64

    def __post_init__(self) -> None:
        if self.n_models <= 0:
            raise SpecError(f"n_models must be positive, got {self.n_models}")
        if self.batch_models <= 0:
            raise SpecError(f"batch_models must be positive, got {self.batch_models}")
        check_variant(self.variant)
        if self.dataset not in DATASETS:
            raise SpecError(f"dataset '{self.dataset}' is unknown; expected one of {', '.join(DATASETS)}")
        if self.train_subset is not None and self.train_subset <= 0:
            raise SpecError(f"train_subset must be positive, got {self.train_subset}")
        last = int(self.hyperparameters.epochs.bounds[1])
        if any(not 0 <= e <= last for e in self.checkpoint_epochs):  # a checkpoint no model reaches is never stored
            raise SpecError(f"checkpoint_epochs {list(self.checkpoint_epochs)}: expected epochs from 0 to {last}, "
                            "the last epoch any model trains")
        if 0 not in self.checkpoint_epochs:
            object.__setattr__(self, "checkpoint_epochs", (0, *self.checkpoint_epochs))
        arch = self.arch_spec()  # unknown or unfitting architecture -> error now, before anything is created
        example, classes = DATASET_SHAPES[self.dataset]
        if not arch.accepts(example) or arch.num_outputs() != classes:
            raise SpecError(f"arch: input {arch.input_shape()} and {arch.num_outputs()} outputs do not fit data set "
                            f"'{self.dataset}'; expected input {example} (or {math.prod(example)} features for an "
                            f"mlp) and {classes} outputs")

    def arch_spec(self) -> ArchSpec:
        base = get_arch(self.arch, None) if isinstance(self.arch, str) else spec_from_dict(self.arch, source="arch")
        return base.with_variant(self.variant)

    def job(self, index: int) -> TrainJob:
        """Model ``index``'s seed and hyperparameters: a function of (zoo seed, index) only."""
        rng = np.random.default_rng(derive_seed(self.seed, "hyperparameters", index))
        h = self.hyperparameters
        return TrainJob(index=index, seed=derive_seed(self.seed, "model", index) & 0x7FFFFFFF,
                        lr=h.lr.sample(rng), weight_decay=h.weight_decay.sample(rng),
                        label_smoothing=h.label_smoothing.sample(rng), epochs=int(h.epochs.sample(rng)))

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def zoo_spec_from_dict(data: Any, source: str = "zoo spec") -> ZooSpec:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping of zoo spec fields")
    return dataclass_from_dict(ZooSpec, data, source)


def load_zoo_spec(path: str | Path) -> ZooSpec:
    return zoo_spec_from_dict(read_config_file(path, "zoo config"), str(path))


def _small(lr: tuple[float, float], epochs: tuple[int, int]) -> dict[str, Any]:
    """CPU-scale presets: ranges wide enough that test accuracies spread (std >= 0.15, measured;
    README), since metanets learn nothing from a zoo whose models all reach the same accuracy."""
    return dict(
        hyperparameters=HyperparameterSpace(
            lr=Dist("log10_uniform", *lr), weight_decay=Dist("log10_uniform", -5.0, -1.0),
            label_smoothing=Dist("uniform", 0.0, 0.2), epochs=Dist("int_uniform", *epochs),
        ),
        recipe=Recipe(batch_size=64, peak_fraction=0.2),
    )


ZOO_PRESETS: dict[str, ZooSpec] = {
    "digits-mlp": ZooSpec(name="digits-mlp", arch="mlp-digits", dataset="digits", batch_models=128,
                          **_small(lr=(-4.0, -1.0), epochs=(1, 20))),
    "digits-resnet": ZooSpec(name="digits-resnet", arch="resnet8-digits", dataset="digits", batch_models=64,
                             **_small(lr=(-4.0, -1.5), epochs=(1, 10))),
    "mnist-mlp": ZooSpec(name="mnist-mlp", arch="mlp-mnist", dataset="mnist", train_subset=10_000,
                         **_small(lr=(-5.0, -2.0), epochs=(1, 10))),
    "mnist-cnn": ZooSpec(name="mnist-cnn", arch="cnn-mnist", dataset="mnist", train_subset=10_000,
                         **_small(lr=(-5.0, -2.0), epochs=(1, 10))),
    "cifar10-resnet8": ZooSpec(
        name="cifar10-resnet8", arch="resnet8", dataset="cifar10", n_models=10_000, batch_models=256,
        recipe=Recipe(batch_size=512, peak_epoch=5, augment=Augment(flip=True, translate=2, cutout=4)),
    ),
}


def get_zoo_spec(name: str) -> ZooSpec:
    if name not in ZOO_PRESETS:
        raise SpecError(f"unknown zoo preset '{name}'; valid presets: {', '.join(ZOO_PRESETS)}")
    return ZOO_PRESETS[name]

