"""What ``symzoo generate`` writes about a zoo besides its models: the row schema and the zoo's
metadata in ``zoo.json`` (data set, recipe, hyperparameter distributions, zoo seed)."""

from __future__ import annotations

import dataclasses

from generators.data import ImageData
from generators.trainer import CURVES
from generators.zoospec import HyperparameterSpace, ZooSpec
from zoo.storage import ZooMetadata, ZooSchema

__all__ = ["zoo_metadata", "zoo_schema"]


def zoo_schema(spec: ZooSpec) -> ZooSchema:
    """The columns a generated zoo stores beside the weights: hyperparameters, curves, checkpoints."""
    return ZooSchema(hyperparameters=dict(HyperparameterSpace.TYPES), curves=CURVES,
                     checkpoint_epochs=tuple(sorted(spec.checkpoint_epochs)))


def zoo_metadata(spec: ZooSpec, data: ImageData) -> ZooMetadata:
    """The zoo's header in ``zoo.json``: what it was trained on and how, so a rerun can check it resumes the same zoo."""
    return ZooMetadata(
        name=spec.name,
        description=f"{spec.n_models} {spec.variant} networks trained on {spec.dataset} by symzoo generate.",
        dataset={"name": spec.dataset, "train_subset": spec.train_subset,
                 "train_examples": len(data.x_train), "test_examples": len(data.x_test)},
        recipe=dataclasses.asdict(spec.recipe) | {"checkpoint_epochs": list(spec.checkpoint_epochs)},
        hyperparameter_distributions=dataclasses.asdict(spec.hyperparameters),
        zoo_seed=spec.seed,
    )
