"""The Ray engine: one Ray task per shard, for zoos that outgrow one machine.

Workers write shard files straight into the zoo directory (shared storage on a cluster): each
shard is written in a private staging folder, then its files are renamed into ``data/``. The
driver is the only writer of ``zoo.json``: it lists a shard's files once its task has returned.
So a killed worker leaves nothing half-written (Ray retries its task), and a killed driver leaves
at most shard files not yet listed, which the next run adopts (``ZooWriter`` does on reopening),
exactly as after a killed local run. Ray is an optional extra: ``pip install 'symzoo[ray]'``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType

from generators.data import ImageData
from generators.engines import ShardProgress
from generators.shards import STAGING, Shard, ShardFailure, ShardResult, ShardWork, publish_shard
from zoo.device import check_device
from zoo.errors import SpecError, SymzooError, first_line
from zoo.storage import ZooWriter

__all__ = ["RayEngine", "RayMissing", "import_ray"]



class RayMissing(SymzooError):
    """``--engine ray`` without Ray installed."""


def import_ray() -> ModuleType:
    try:
        import ray
    except ImportError:
        raise RayMissing("--engine ray needs Ray, an optional extra: pip install 'symzoo[ray]' "
                         "(or use --engine local)") from None
    return ray


@dataclass(frozen=True)
class RayEngine:
    """Shards as Ray tasks on a cluster (or a local Ray instance).

    Attributes:
        address: the cluster to join (``host:port``, ``ray://host:10001``, ``auto``); ``None``
            follows Ray (``$RAY_ADDRESS``, a cluster started on this machine with ``ray start``,
            else a new local instance); ``local`` always starts a new local instance. A Ray
            session already open in this process is used as it is.
        gpus_per_shard: GPUs each shard task holds; a fraction packs several shards on one GPU.
            ``None``: 1 when ``--device`` is ``cuda``, or ``auto`` on a cluster with GPUs; else 0.
        cpus_per_shard: CPU cores each task holds (and its torch threads).
        max_retries: how often a shard is retried after its worker dies or it raises.
    """

    address: str | None = None
    gpus_per_shard: float | None = None
    cpus_per_shard: float = 1.0
    max_retries: int = 3

    def __post_init__(self) -> None:
        if self.gpus_per_shard is not None and not 0 <= self.gpus_per_shard <= 1:
            raise SpecError(f"--gpus-per-shard {self.gpus_per_shard}: expected a number from 0 to 1 "
                            "(a shard trains on one device; a fraction packs several shards on one GPU)")
        if self.cpus_per_shard <= 0:
            raise SpecError(f"--cpus-per-shard {self.cpus_per_shard}: expected a positive number")
        if self.max_retries < 0:
            raise SpecError(f"--max-retries {self.max_retries}: expected 0 or more")

    def prepare(self, device: str) -> str:
        check_device(device)  # the device itself is resolved on each worker
        if device == "cpu" and self.gpus_per_shard:
            raise SpecError(f"--gpus-per-shard {self.gpus_per_shard} with --device cpu: use --device cuda or auto")
        if device == "cuda" and self.gpus_per_shard == 0:
            raise SpecError("--device cuda with --gpus-per-shard 0: a shard task sees no GPU; give it a share of one")
        import_ray()
        return "ray"

    def run(self, work: ShardWork, data: ImageData, shards: Sequence[Shard], writer: ZooWriter,
            done: Callable[[ShardResult], None], progress: ShardProgress | None = None) -> list[ShardFailure]:
        """Submit every shard, then list each in ``zoo.json`` as its task returns (``progress``
        inside a shard stays on the worker)."""
        ray = import_ray()
        staging = writer.dir / STAGING
        failures: list[ShardFailure] = []
        with _session(ray, self.address):
            shutil.rmtree(staging, ignore_errors=True)  # left by workers of a killed run
            task = ray.remote(publish_shard)
            work_ref, data_ref = ray.put(work), ray.put(data)
            gpus = self._gpus(ray, work.device)
            pending = {
                task.options(name=shard.name, num_cpus=self.cpus_per_shard, num_gpus=gpus,
                             max_retries=self.max_retries, retry_exceptions=True)
                .remote(work_ref, data_ref, shard, str(writer.dir)): shard
                for shard in shards
            }
            while pending:
                ray.wait(list(pending), num_returns=1, fetch_local=False)
                # every shard finished by now, listed in one manifest write: zoo.json grows with
                # the zoo, so on a large cluster one write per shard would keep the driver busy
                finished, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0, fetch_local=False)
                results = []
                for ref in finished:
                    shard = pending.pop(ref)
                    try:
                        results.append(ray.get(ref))
                    except ray.exceptions.RayError as err:
                        failures.append(ShardFailure(shard, _one_line(err)))
                if results:
                    writer.register([info for result in results for info in result.files])
                for result in results:
                    done(result)
        if not failures:
            shutil.rmtree(staging, ignore_errors=True)
        return failures

    def _gpus(self, ray: ModuleType, device: str) -> float:
        if self.gpus_per_shard is not None:
            return self.gpus_per_shard
        if device == "cuda" or (device == "auto" and ray.cluster_resources().get("GPU", 0) > 0):
            return 1.0
        return 0.0


@contextmanager
def _session(ray: ModuleType, address: str | None) -> Iterator[None]:
    """Join (or start) a Ray cluster for one run; a session the caller opened stays open."""
    if ray.is_initialized():
        yield
        return
    try:  # no dashboard for an instance of our own: progress shows here (a cluster keeps its own)
        ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR)
    except (ConnectionError, ValueError, RuntimeError) as err:
        raise SymzooError(f"--address {address}: cannot join a Ray cluster ({first_line(err, 'no message')})") from None
    try:
        yield
    finally:
        ray.shutdown()


def _one_line(err: BaseException) -> str:
    """A task's error as one line: the exception a task raised, or why its worker died."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {first_line(cause, 'no message')}"
    return f"{type(err).__name__}: {first_line(err, 'no message')}"
