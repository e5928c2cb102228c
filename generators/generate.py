"""``symzoo generate``: train a zoo shard by shard into the storage format, resumably.

The zoo is cut into shards (the M models trained together). An engine trains them: here, one
after another in this process (:class:`LocalEngine`), or one Ray task each
(:mod:`generators.ray_engine`). Both run the same per-shard code (:meth:`ShardWork.train`,
:func:`write_shard`), and a model depends only on (zoo seed, index), so both write the same zoo.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import os
import queue
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import torch

from generators.data import ImageData, load_images
from generators.execution import execution_for, train_per_model
from generators.recipe import Recipe
from generators.trainer import CURVES, TrainProgress, TrainResult, train_batched
from generators.zoospec import HyperparameterSpace, ZooSpec
from zoo.errors import SpecError, SymzooError
from zoo.progress import progress_bar
from zoo.storage import Manifest, ModelRecord, ShardInfo, ZooMetadata, ZooSchema, ZooWriter
from zoo.storage.files import DirectoryLock, crash_point, fsync_dir, refuse_symlink, sha256_of
from zoo.storage.format import DATA_DIR
from zoo.workers import cpu_cores, worker_context, worker_pool

__all__ = [
    "DEVICES", "STAGING", "Engine", "GenerateReport", "LocalEngine", "Shard", "ShardFailure", "ShardProgress",
    "ShardResult", "ShardWork", "ShardsFailed", "check_device", "generate", "plan_shards", "publish_shard",
    "resolve_device", "write_shard", "zoo_schema",
]

DEVICES = ("auto", "cpu", "cuda")
# Progress inside a shard: the share of its models' training steps behind (0 to 1).
FractionCallback = Callable[[float], None]
# Progress of one shard: (shard, share of its models' training steps behind), every few tenths of a second.
ShardProgress = Callable[["Shard", float], None]
_PROGRESS_EVERY_S = 0.3
STAGING = ".staging"  # inside the zoo directory: same file system, so the final rename is atomic


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


def check_device(device: str) -> None:
    """A valid ``--device`` name, checked where the device itself may be on another machine."""
    if device not in DEVICES:
        raise SpecError(f"--device '{device}' is unknown; expected auto, cpu or cuda")


def resolve_device(device: str) -> torch.device:
    check_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SpecError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    return torch.device(device)


def zoo_schema(spec: ZooSpec) -> ZooSchema:
    return ZooSchema(hyperparameters=dict(HyperparameterSpace.TYPES), curves=CURVES,
                     checkpoint_epochs=tuple(sorted(spec.checkpoint_epochs)))


# -- shards ---------------------------------------------------------------------------------------
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


# -- engines --------------------------------------------------------------------------------------
class Engine(Protocol):
    """Trains shards and writes them into the zoo; ``writer`` is the only writer of ``zoo.json``."""

    def prepare(self, device: str) -> str:
        """Check that the engine and ``device`` can be used, before any data is loaded; returns
        a short label for the progress bar."""
        ...

    def run(self, work: ShardWork, data: ImageData, shards: Sequence[Shard], writer: ZooWriter,
            done: Callable[[ShardResult], None], progress: ShardProgress | None = None) -> list[ShardFailure]:
        """Train and write ``shards``, calling ``done`` once each is listed in ``zoo.json`` (and
        ``progress`` as their training goes, where the engine can); returns the shards that could
        not be written."""
        ...


@dataclass(frozen=True)
class LocalEngine:
    """Shards in worker processes on this machine, each worker a shard at a time.

    On CPU: one worker per core with one torch thread each (``workers`` to change it; the cores
    are shared out as threads). Many one-thread processes keep every core busy however the work
    is cut, and unlike torch's default threads they do not wait on each other when other work
    takes a core. On CUDA: one worker per GPU. With one worker the shards run in this process.
    An error stops the run; every shard written so far stays.
    """

    workers: int | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise SpecError(f"--workers {self.workers}: expected 1 or more")

    def prepare(self, device: str) -> str:
        kind = resolve_device(device).type
        return f"{kind}, {self._count(kind)} worker{'s' * (self._count(kind) > 1)}"

    def _count(self, kind: str) -> int:
        if self.workers is not None:
            return self.workers
        return max(1, torch.cuda.device_count()) if kind == "cuda" else cpu_cores()

    def run(self, work: ShardWork, data: ImageData, shards: Sequence[Shard], writer: ZooWriter,
            done: Callable[[ShardResult], None], progress: ShardProgress | None = None) -> list[ShardFailure]:
        kind = resolve_device(work.device).type
        workers = min(self._count(kind), len(shards))
        threads = max(1, cpu_cores() // max(workers, 1)) if kind == "cpu" else torch.get_num_threads()
        if workers <= 1:
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                for shard in shards:
                    report = (lambda fraction, s=shard: progress(s, fraction)) if progress else None
                    done(write_shard(writer, shard, work.train(shard, data, report)))
            finally:
                torch.set_num_threads(previous)
            return []
        shutil.rmtree(writer.dir / STAGING, ignore_errors=True)  # left by workers of a killed run
        events = worker_context(_PRELOAD).Queue()
        devices = list(range(workers)) if kind == "cuda" else []
        with worker_pool(workers, threads, _worker_setup, (data, events, devices), _PRELOAD) as pool:
            pending = {pool.submit(_worker_shard, work, shard, str(writer.dir)): shard for shard in shards}
            try:
                while pending:
                    finished, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    _drain(events, pending.values(), progress)
                    for future in finished:
                        shard = pending.pop(future)
                        try:
                            result = future.result()  # an error stops the run: what is written stays
                        except BrokenProcessPool:
                            raise SymzooError(f"a worker process died (killed, or out of memory) while training "
                                              f"{shard}; every shard written before is stored: run the same "
                                              "command again to train the rest") from None
                        writer.register(list(result.files))
                        done(result)
            finally:
                for future in pending:
                    future.cancel()
        return []


def _drain(events: multiprocessing.Queue, running: Iterable[Shard], progress: ShardProgress | None) -> None:
    """Pass on the workers' progress reports (shards by key) without waiting for more; a report
    that arrives after its shard was listed is dropped."""
    by_key = {shard.key: shard for shard in running}
    while True:
        try:
            key, fraction = events.get_nowait()
        except queue.Empty:
            return
        if progress is not None and key in by_key:
            progress(by_key[key], fraction)


_PRELOAD = ("generators.generate",)  # what every worker imports: once, in the fork server
# One worker process's own: the data set (sent once, not with every shard) and where to report.
_WORKER: dict[str, object] = {}


def _worker_setup(data: ImageData, events: multiprocessing.Queue, devices: list[int]) -> None:
    if devices:  # one GPU per worker, in the order the workers start
        index = multiprocessing.current_process()._identity[0] - 1
        torch.cuda.set_device(devices[index % len(devices)])
    _WORKER.update(data=data, events=events)


def _worker_shard(work: ShardWork, shard: Shard, zoo_dir: str) -> ShardResult:
    events = _WORKER["events"]
    return publish_shard(work, _WORKER["data"], shard, zoo_dir,
                         on_fraction=lambda fraction: events.put((shard.key, fraction)))


# -- the command ----------------------------------------------------------------------------------
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


def _training_data(spec: ZooSpec, data_dir: str | None) -> ImageData:
    data = load_images(spec.dataset, data_dir)
    if spec.train_subset is not None:  # copies, not views: a view would pickle (Ray) the whole set
        data = dataclasses.replace(data, x_train=data.x_train[: spec.train_subset].clone(),
                                   y_train=data.y_train[: spec.train_subset].clone())
    return data


def generate(spec: ZooSpec, out: str | Path, *, device: str = "auto", data_dir: str | None = None,
             quiet: bool = False, autocast_bf16: bool = False, engine: Engine | None = None) -> GenerateReport:
    """Train every model of ``spec`` not yet stored in ``out`` and write it there.

    Raises :class:`ShardsFailed` (after writing every other shard) when an engine gives up on some.
    """
    out = Path(out)
    engine = LocalEngine() if engine is None else engine
    label = engine.prepare(device)
    if (out / DirectoryLock.FILE).is_file():  # another writer is said at once, not after loading the data
        DirectoryLock(out).acquire().release()
    data = _training_data(spec, data_dir)
    metadata = _metadata(spec, data)
    _check_resumable(out, metadata)
    work = ShardWork(spec, device, autocast_bf16, metadata)
    with work.writer(out) as writer:  # holds the zoo's lock: one writing process per zoo
        work = dataclasses.replace(work, metadata=writer.manifest.metadata)  # an older zoo keeps its own
        stored = writer.stored_indices
        todo = [i for i in range(spec.n_models) if i not in stored]
        shards = plan_shards(todo, spec.batch_models)
        start, diverged, written = time.perf_counter(), 0, 0
        fractions: dict[int, float] = {}  # shard key -> share of its models' epochs done
        finished = 0
        with progress_bar(total=len(todo), unit="model", quiet=quiet, file=sys.stderr,
                          desc=f"{spec.name} ({spec.variant}, {label})", dynamic_ncols=True,
                          bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} [{elapsed}<{remaining}{postfix}]") as bar:
            def show() -> None:  # models done, counting shards under way by their epochs done
                bar.n = finished + sum(fractions.values())
                elapsed = time.perf_counter() - start
                rate = 3600 * bar.n / elapsed if bar.n and elapsed > 0 else 0.0
                bar.set_postfix_str(f"{rate:,.0f} models/h, {diverged} diverged")

            def progress(shard: Shard, fraction: float) -> None:
                fractions[shard.key] = len(shard.indices) * fraction
                show()

            def done(result: ShardResult) -> None:
                nonlocal diverged, written, finished
                diverged += result.diverged
                written += 1
                finished += len(result.shard.indices)
                fractions.pop(result.shard.key, None)
                show()

            failures = engine.run(work, data, shards, writer, done, progress)
    if failures:
        raise ShardsFailed(out, failures, written)
    return GenerateReport(out, len(todo), spec.n_models - len(todo), diverged, time.perf_counter() - start)
