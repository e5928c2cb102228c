"""``symzoo generate``: train a zoo shard by shard into the storage format, resumably."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from generators.data import ImageData, load_images
from generators.trainer import CURVES, TrainResult, train_batched
from generators.zoospec import HyperparameterSpace, ZooSpec
from zoo.errors import SpecError
from zoo.storage import Manifest, ModelRecord, ZooMetadata, ZooSchema, ZooWriter

__all__ = ["GenerateReport", "generate", "resolve_device", "zoo_schema"]


@dataclass(frozen=True)
class GenerateReport:
    out: Path
    trained: int
    skipped: int
    diverged: int
    seconds: float

    @property
    def models_per_hour(self) -> float:
        return 3600 * self.trained / self.seconds if self.seconds > 0 else float("nan")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SpecError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    if device not in ("cpu", "cuda"):
        raise SpecError(f"--device '{device}' is unknown; expected auto, cpu or cuda")
    return torch.device(device)


def zoo_schema(spec: ZooSpec) -> ZooSchema:
    return ZooSchema(hyperparameters=dict(HyperparameterSpace.TYPES), curves=CURVES,
                     checkpoint_epochs=tuple(sorted(spec.checkpoint_epochs)))


def _metadata(spec: ZooSpec, data: ImageData) -> ZooMetadata:
    return ZooMetadata(
        name=spec.name,
        description=f"{spec.n_models} {spec.variant} networks trained on {spec.dataset} by symzoo generate.",
        dataset={"name": spec.dataset, "train_subset": spec.train_subset,
                 "train_examples": len(data.x_train), "test_examples": len(data.x_test)},
        recipe=dataclasses.asdict(spec.recipe) | {"checkpoint_epochs": list(spec.checkpoint_epochs)},
        hyperparameter_distributions=dataclasses.asdict(spec.hyperparameters),
        zoo_seed=spec.seed,
    )


def _check_resumable(out: Path, expected: ZooMetadata) -> None:
    if not (out / "zoo.json").exists():
        return
    found = Manifest.load(out).metadata
    for field in ("zoo_seed", "recipe", "hyperparameter_distributions"):
        if _plain(getattr(found, field)) != _plain(getattr(expected, field)):
            raise SpecError(f"{out} was generated with another {field.replace('_', ' ')}; "
                            "use a new --out or the zoo's original spec")
    if found.dataset.get("name") != expected.dataset["name"] or found.dataset.get("train_subset") != expected.dataset["train_subset"]:
        raise SpecError(f"{out} was generated on another data set ({found.dataset}); use a new --out")


def _plain(value: object) -> object:
    """As it reads back from JSON (tuples become lists), for comparing with a stored manifest."""
    return json.loads(json.dumps(value))


def _record(result: TrainResult) -> ModelRecord:
    job = result.job
    return ModelRecord(
        index=job.index, seed=job.seed, weights=result.weights, metrics=result.metrics, status=result.status,
        hyperparameters={"lr": job.lr, "weight_decay": job.weight_decay, "label_smoothing": job.label_smoothing,
                         "epochs": job.epochs},
        curves=result.curves, checkpoints=result.checkpoints,
    )


def generate(spec: ZooSpec, out: str | Path, *, device: str = "auto", data_dir: str | None = None,
             quiet: bool = False, autocast_bf16: bool = False) -> GenerateReport:
    """Train every model of ``spec`` not yet stored in ``out`` and write it there."""
    out = Path(out)
    arch = spec.arch_spec()
    target = resolve_device(device)
    data = load_images(spec.dataset, data_dir)
    if spec.train_subset is not None:
        data = dataclasses.replace(data, x_train=data.x_train[: spec.train_subset], y_train=data.y_train[: spec.train_subset])
    metadata = _metadata(spec, data)
    _check_resumable(out, metadata)
    writer = ZooWriter(out, arch, zoo_schema(spec), metadata)
    stored = writer.stored_indices
    todo = [i for i in range(spec.n_models) if i not in stored]
    skipped = spec.n_models - len(todo)
    start, diverged = time.perf_counter(), 0
    with tqdm(total=len(todo), unit="model", disable=quiet or None, file=sys.stderr,
              desc=f"{spec.name} ({spec.variant}, {target.type})", dynamic_ncols=True) as bar:
        def show(epoch: int, epochs: int) -> None:  # progress inside a shard, which may take minutes
            elapsed = time.perf_counter() - start
            rate = f"{3600 * bar.n / elapsed:,.0f}" if bar.n else "-"
            bar.set_postfix_str(f"shard epoch {epoch}/{epochs}, {rate} models/h, {diverged} diverged")

        for first in range(0, len(todo), spec.batch_models):
            jobs = [spec.job(i) for i in todo[first : first + spec.batch_models]]
            results = train_batched(arch, data, jobs, spec.recipe, device=target, on_epoch=show,
                                    checkpoint_epochs=spec.checkpoint_epochs, autocast_bf16=autocast_bf16)
            writer.write([_record(r) for r in results])
            diverged += sum(r.status == "diverged" for r in results)
            bar.update(len(jobs))
    return GenerateReport(out, len(todo), skipped, diverged, time.perf_counter() - start)
