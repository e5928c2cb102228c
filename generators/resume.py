"""Resuming ``symzoo generate``: a zoo folder is only grown by the spec that made it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from generators.recipe import Recipe
from zoo.errors import SpecError
from zoo.storage import Manifest, ZooMetadata

__all__ = ["check_resumable"]


def check_resumable(out: Path, expected: ZooMetadata) -> None:
    """Refuse to add models to a zoo in ``out`` that another spec or data set made (a resumed zoo
    must be one zoo: every model from the same seed, recipe, distributions and data)."""
    if not (out / "zoo.json").exists():
        return
    found = Manifest.load(out).metadata
    for field in ("zoo_seed", "recipe", "hyperparameter_distributions"):
        stored = getattr(found, field)
        if field == "recipe":  # recipe fields added later take their defaults in older zoos
            stored = dataclasses.asdict(Recipe()) | stored
        if _plain(stored) != _plain(getattr(expected, field)):
            raise SpecError(f"{out} was generated with another {field.replace('_', ' ')}; "
                            "use a new --out or the zoo's original spec")
    if found.dataset.get("name") != expected.dataset["name"] or found.dataset.get("train_subset") != expected.dataset["train_subset"]:
        raise SpecError(f"{out} was generated on another data set ({found.dataset}); use a new --out")


def _plain(value: object) -> object:
    """As it reads back from JSON (tuples become lists), for comparing with a stored manifest."""
    return json.loads(json.dumps(value))
