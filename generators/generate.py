"""``symzoo generate``: train a zoo shard by shard into the storage format, resumably.

The zoo is cut into shards (the M models trained together; ``generators.shards``). An engine
trains them (``generators.engines``: here, in worker processes; ``generators.ray_engine``: one Ray
task each), and every shard is listed in ``zoo.json`` with the zoo's metadata
(``generators.metadata``); a rerun checks it grows the same zoo (``generators.resume``).

The names of those modules are also importable from here, as they were before they moved.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from generators.data import ImageData, load_images
from generators.engines import Engine, LocalEngine, ShardProgress
from generators.metadata import zoo_metadata, zoo_schema
from generators.resume import check_resumable
from generators.shards import (
    STAGING, Shard, ShardFailure, ShardResult, ShardsFailed, ShardWork, plan_shards, publish_shard, write_shard,
)
from generators.zoospec import ZooSpec
from zoo.device import DEVICES, check_device, resolve_device
from zoo.progress import progress_bar
from zoo.storage.files import DirectoryLock

__all__ = [
    "DEVICES", "STAGING", "Engine", "GenerateReport", "LocalEngine", "Shard", "ShardFailure", "ShardProgress",
    "ShardResult", "ShardWork", "ShardsFailed", "check_device", "generate", "plan_shards", "publish_shard",
    "resolve_device", "write_shard", "zoo_schema",
]


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


def _training_data(spec: ZooSpec, data_dir: str | None) -> ImageData:
    return load_images(spec.dataset, data_dir).subset(train=spec.train_subset)


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
    metadata = zoo_metadata(spec, data)
    check_resumable(out, metadata)
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
