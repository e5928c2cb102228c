"""Shards: the models trained together and written together, how they are planned, and the one
per-shard code path every engine runs (:meth:`ShardWork.train`, :func:`write_shard`,
:func:`publish_shard`). A model depends only on (zoo seed, index), so every engine writes the
same zoo."""

from __future__ import annotations

import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from generators.data import ImageData
from generators.execution import execution_for, train_per_model
from generators.metadata import zoo_schema
from generators.trainer import TrainProgress, TrainResult, train_batched
from generators.zoospec import HyperparameterSpace, ZooSpec
from zoo.device import resolve_device
from zoo.errors import SymzooError
from zoo.storage import ModelRecord, ShardInfo, ZooMetadata, ZooWriter
from zoo.storage.files import crash_point, fsync_dir, refuse_symlink, sha256_of
from zoo.storage.format import DATA_DIR

__all__ = [
    "STAGING", "FractionCallback", "Shard", "ShardFailure", "ShardResult", "ShardWork", "ShardsFailed",
    "plan_shards", "publish_shard", "write_shard",
]

# Progress inside a shard: the share of its models' training steps behind (0 to 1).
FractionCallback = Callable[[float], None]
_PROGRESS_EVERY_S = 0.3
STAGING = ".staging"  # inside the zoo directory: same file system, so the final rename is atomic


@dataclass(frozen=True)
class Shard:
    """Models trained together and written together: ``data/{split}-{key:07d}.parquet``."""

    key: int
    indices: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"shard-{self.key:07d}"

    def __str__(self) -> str:
        return f"{self.name} (models {self.indices[0]}-{self.indices[-1]})"


def plan_shards(todo: Sequence[int], batch_models: int) -> list[Shard]:
    """Consecutive groups of ``batch_models`` of the sorted indices to train, keyed by their first."""
    todo = sorted(todo)
    return [Shard(todo[i], tuple(todo[i : i + batch_models])) for i in range(0, len(todo), batch_models)]


@dataclass(frozen=True)
class ShardResult:
    """A shard written under its final name: its files (not yet in ``zoo.json`` when written by a
    worker) and how many of its models diverged."""

    shard: Shard
    files: tuple[ShardInfo, ...]
    diverged: int


@dataclass(frozen=True)
class ShardFailure:
    shard: Shard
    error: str  # one line

    def __str__(self) -> str:
        return f"{self.shard}: {self.error}"


class ShardsFailed(SymzooError):
    """Some shards failed on every try; all the others were written."""

    def __init__(self, out: Path, failures: Sequence[ShardFailure], stored: int) -> None:
        self.failures = tuple(failures)
        names = "; ".join(map(str, failures))
        super().__init__(f"{len(failures)} shard(s) failed on every try, the other {stored} are stored in {out} "
                         f"(rerun the same command to train the rest): {names}")


@dataclass(frozen=True)
class ShardWork:
    """How every shard of one zoo is trained: the per-shard code path of every engine.

    Picklable and small (the data set travels separately), so a Ray worker gets one per zoo.
    ``device`` is resolved where the shard runs: a Ray worker's GPU is not the driver's.
    ``metadata`` is the zoo's, so that a worker's shard files carry the zoo's own header.
    """

    spec: ZooSpec
    device: str = "auto"
    autocast_bf16: bool = False
    metadata: ZooMetadata = ZooMetadata()

    def train(self, shard: Shard, data: ImageData, on_fraction: FractionCallback | None = None) -> list[ModelRecord]:
        # Batched vmap or one model at a time, by architecture family and device type only (so the
        # same command on the same machine writes the same bytes): generators/execution.py.
        # bf16 autocast exists only in the batched trainer.
        jobs = [self.spec.job(i) for i in shard.indices]
        arch, device = self.spec.arch_spec(), resolve_device(self.device)
        progress = _every(_PROGRESS_EVERY_S, on_fraction)
        if execution_for(arch, device) == "per_model" and not self.autocast_bf16:
            results = train_per_model(arch, data, jobs, self.spec.recipe, device=device, on_progress=progress,
                                      checkpoint_epochs=self.spec.checkpoint_epochs)
        else:
            results = train_batched(arch, data, jobs, self.spec.recipe, device=device, on_progress=progress,
                                    checkpoint_epochs=self.spec.checkpoint_epochs, autocast_bf16=self.autocast_bf16)
        return [_record(r) for r in results]

    def writer(self, out: Path) -> ZooWriter:
        return ZooWriter(out, self.spec.arch_spec(), zoo_schema(self.spec), self.metadata, row_check=self.row_problem)

    def row_problem(self, rows: pa.Table) -> str | None:
        """Why rows found in an unlisted shard file are not the models this spec makes at their
        indices (their seed and hyperparameters are a function of the zoo seed and the index)."""
        columns = {name: rows.column(name).to_pylist() for name in ("index", "seed", *HyperparameterSpace.NAMES)}
        for row, index in enumerate(columns["index"]):
            job = self.spec.job(index)
            expected = {"seed": job.seed, "lr": job.lr, "weight_decay": job.weight_decay,
                        "label_smoothing": job.label_smoothing, "epochs": job.epochs}
            wrong = [name for name, value in expected.items() if columns[name][row] != value]
            if wrong:
                return f"model {index} has another {', '.join(wrong)} than this zoo's spec gives (another zoo seed?)"
        return None


def write_shard(writer: ZooWriter, shard: Shard, records: Sequence[ModelRecord]) -> ShardResult:
    """Write one trained shard under its key (so its file names do not depend on the engine)."""
    files = writer.write(records, shard_key=shard.key)
    return ShardResult(shard, tuple(files), sum(r.status == "diverged" for r in records))


def publish_shard(work: ShardWork, data: ImageData, shard: Shard, zoo_dir: str,
                  on_fraction: FractionCallback | None = None) -> ShardResult:
    """Train ``shard`` and move its files into ``zoo_dir``, from a worker process (local or Ray).

    The files are written by a ``ZooWriter`` of a private staging zoo, so they are byte for byte
    what an in-process write gives, then renamed into ``data/`` under names no other shard has;
    ``zoo.json`` is left to the one process that holds the zoo's lock, which lists them. A crash
    at any point leaves at most complete unlisted files, which the next run checks and adopts.
    """
    records = work.train(shard, data, on_fraction)
    zoo = Path(zoo_dir)
    refuse_symlink(zoo / STAGING)
    staging = zoo / STAGING / f"{shard.name}-{uuid.uuid4().hex}"
    try:
        with work.writer(staging) as writer:
            result = write_shard(writer, shard, records)
        for info in result.files:
            target = zoo / info.path
            if target.exists() and sha256_of(target) != info.sha256:  # names are unique per model set
                raise SymzooError(f"{target} exists with other contents; a shard file is never replaced")
            os.replace(staging / info.path, target)
            crash_point("publish.renamed")
        fsync_dir(zoo / DATA_DIR)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def _every(seconds: float, on_fraction: FractionCallback | None) -> Callable[[TrainProgress], None] | None:
    """The trainer's per-step progress as a share of the work, passed on at most every ``seconds``
    (and when the shard's last step is done): a queue between processes needs no more."""
    if on_fraction is None:
        return None
    last = -math.inf

    def report(progress: TrainProgress) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= seconds or progress.model_steps_done >= progress.model_steps:
            last = now
            on_fraction(progress.model_steps_done / max(progress.model_steps, 1))

    return report


def _record(result: TrainResult) -> ModelRecord:
    job = result.job
    return ModelRecord(
        index=job.index, seed=job.seed, weights=result.weights, metrics=result.metrics, status=result.status,
        hyperparameters={"lr": job.lr, "weight_decay": job.weight_decay, "label_smoothing": job.label_smoothing,
                         "epochs": job.epochs},
        curves=result.curves, checkpoints=result.checkpoints,
    )
