"""Crash safety by deterministic fault injection.

A forked child runs a write (``generate``, an importer, a Ray worker's ``publish_shard``) with
``SYMZOO_CRASH_AT=N``: the writer SIGKILLs it at its N-th step boundary (temp file written, file
renamed, directory synced, manifest written, ...). The same write is then run again to the end.
N goes 1, 2, 3, ... until the child finishes unkilled, so every boundary is hit once. After each
kill and re-run the zoo must hold every model exactly once, with the bytes an uninterrupted run
writes, and ``verify`` must pass.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
from collections.abc import Callable
from typing import Any
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from generators.data import load_images
from generators.generate import LocalEngine, Shard, ShardWork, generate
from generators.zoospec import Dist, HyperparameterSpace, get_zoo_spec
from zoo.storage import Manifest
from zoo.storage.files import CRASH_AT
from zoo.storage.verify import verify_zoo

N_MODELS = 6


# Children come from the fork server (started by conftest.py with this module imported): forking
# pytest itself would copy its threads' held locks (torch's pool, executors of earlier tests) into
# a child that then waits on them forever.
_CHILDREN = multiprocessing.get_context("forkserver")


def _child(step: str, write: Callable[..., Any], args: tuple) -> None:
    os.environ[CRASH_AT] = step
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    torch.set_num_threads(1)
    write(*args)


def killed_at(step: str, write: Callable[..., Any], args: tuple, may_fail: bool = False) -> bool:
    """Run ``write(*args)`` in a child process with ``SYMZOO_CRASH_AT=step``; True if it was
    SIGKILLed there (or, ``may_fail``, stopped with an error because a worker process of its was)."""
    child = _CHILDREN.Process(target=_child, args=(step, write, args))
    child.start()
    child.join()
    if child.exitcode == -signal.SIGKILL:
        return True
    if may_fail and child.exitcode != 0:
        return True
    assert child.exitcode == 0, f"the write failed (not killed) with {step}: exit code {child.exitcode}"
    return False


def sweep(tmp_path: Path, write: Callable[..., Any], args: tuple, reference: dict[int, dict],
          rerun: Callable[..., Any] | None = None, rerun_args: tuple | None = None,
          prefix: str = "", workers_die: bool = False) -> int:
    """Kill ``write(zoo, *args)`` at every step boundary in turn, then ``rerun(zoo, *rerun_args)``
    (by default the same write) and compare; returns how many boundaries there were."""
    step = 0
    while True:
        step += 1
        zoo = tmp_path / f"kill-{step}"
        if not killed_at(f"{step}:{prefix}" if prefix else str(step), write, (zoo, *args), may_fail=workers_die):
            break
        (rerun or write)(zoo, *(args if rerun_args is None else rerun_args))
        report = verify_zoo(zoo)
        assert report.ok, (step, report.problems)
        assert stored_rows(zoo) == reference, f"killed at step {step}: models lost, doubled or changed"
    return step - 1


def write_generate(zoo: Path, spec: Any, workers: int) -> None:
    generate(spec, zoo, device="cpu", quiet=True, engine=LocalEngine(workers=workers))


def write_import(zoo: Path, source: Path, shard_bytes: int) -> None:
    from zoo.storage.importers import common, import_small_cnn_zoo

    common.SHARD_BYTES = shard_bytes  # a few models per shard: several commits (in this process only)
    import_small_cnn_zoo(source, zoo)


def write_published(zoo: Path, spec: Any) -> None:
    """The zoo exists with models 0-2; a worker publishes the shard of models 3-5."""
    from generators.generate import publish_shard

    generate(dataclasses.replace(spec, n_models=3), zoo, device="cpu", quiet=True, engine=LocalEngine(workers=1))
    work = ShardWork(spec, "cpu")
    with work.writer(zoo) as writer:
        metadata = writer.manifest.metadata
    publish_shard(dataclasses.replace(work, metadata=metadata), load_images("digits"), Shard(3, (3, 4, 5)), str(zoo))


def stored_rows(zoo: Path) -> dict[int, dict]:
    """Every listed model's row (weights as bytes) by index; fails if a model is stored twice."""
    found: dict[int, dict] = {}
    for shard in Manifest.load(zoo).shards:
        for row in pq.read_table(zoo / shard.path).to_pylist():
            assert row["index"] not in found, f"model {row['index']} stored twice"
            row["weights"] = np.asarray(row["weights"], dtype=np.float32).tobytes()
            row.pop("weights_epoch_0", None)
            found[row["index"]] = row
    return found


@pytest.fixture(scope="module")
def spec():
    """Two shards of three one-epoch models: a whole sweep takes seconds."""
    return dataclasses.replace(
        get_zoo_spec("digits-mlp"), n_models=N_MODELS, batch_models=3,
        hyperparameters=dataclasses.replace(HyperparameterSpace(), epochs=Dist("int_uniform", 1, 1)),
    )


@pytest.fixture(scope="module")
def reference(spec, tmp_path_factory) -> dict[int, dict]:
    out = tmp_path_factory.mktemp("reference") / "zoo"
    generate(spec, out, device="cpu", quiet=True)
    return stored_rows(out)


def test_generate_killed_at_every_step_loses_nothing(spec, reference, tmp_path):
    """One process: every step of the writer's commits is in it."""
    steps = sweep(tmp_path, write_generate, (spec, 1), reference)
    # creation (marker, masks, card, manifest) + per shard 3 files x 2 + sync + manifest + card x 2
    assert steps >= 2 * 10, steps


def test_generate_with_a_worker_process_killed_at_every_step_loses_nothing(spec, reference, tmp_path):
    """Two worker processes: a worker SIGKILLed at each step of publishing its shard (the run then
    stops with one line), then the same command again."""
    assert sweep(tmp_path, write_generate, (spec, 2), reference, prefix="publish", workers_die=True) == 3


def test_generate_with_uneven_splits_killed_after_each_file_keeps_every_model(spec, reference, tmp_path):
    """The issue's case: a shard's first file renamed in, then killed; the rerun's shard plan puts
    the rest of its models in shards whose first model is the same one."""
    one_shard = dataclasses.replace(spec, batch_models=N_MODELS)
    one_each = dataclasses.replace(spec, batch_models=1)  # another grouping, as a changed --batch-models is
    assert sweep(tmp_path, write_generate, (one_shard, 1), reference, rerun_args=(one_each, 1),
                 prefix="commit.shard.renamed") == 3


def test_ray_worker_killed_at_every_step_loses_nothing(spec, reference, tmp_path):
    """A worker's code path (``publish_shard``: train, stage, rename into data/; local worker
    processes and Ray tasks both run it), killed at each step; the next run lists or retrains
    what it left."""
    assert sweep(tmp_path, write_published, (spec,), reference, rerun=write_generate, rerun_args=(spec, 1),
                 prefix="publish") == 3


def test_importer_killed_at_every_step_loses_nothing(tmp_path):
    from tests.test_importers import write_small_cnn_zoo

    source = tmp_path / "source"
    write_small_cnn_zoo(source, rows=12)
    reference = tmp_path / "reference"
    write_import(reference, source, 4 * 4 * 5000)
    assert sweep(tmp_path, write_import, (source, 4 * 4 * 5000), stored_rows(reference), prefix="commit") >= 2 * 9
