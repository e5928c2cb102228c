"""Engines: what trains a zoo's shards and lists them in ``zoo.json``. :class:`LocalEngine` runs
them in worker processes on this machine; ``generators.ray_engine`` runs one Ray task each. Both
run the same per-shard code (``generators.shards``)."""

from __future__ import annotations

import multiprocessing
import queue
import shutil
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Protocol

import torch

from generators.data import ImageData
from generators.shards import STAGING, Shard, ShardFailure, ShardResult, ShardWork, publish_shard, write_shard
from zoo.device import resolve_device
from zoo.errors import SpecError, SymzooError
from zoo.storage import ZooWriter
from zoo.workers import cpu_cores, worker_context, worker_pool

__all__ = ["Engine", "LocalEngine", "ShardProgress"]

# Progress of one shard: (shard, share of its models' training steps behind), every few tenths of a second.
ShardProgress = Callable[[Shard, float], None]


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


_PRELOAD = ("generators.engines",)  # what every worker imports: once, in the fork server
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
