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
import os
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from generators.data import load_images
from generators.generate import Shard, ShardWork, generate
from generators.zoospec import Dist, HyperparameterSpace, get_zoo_spec
from zoo.storage import Manifest
from zoo.storage.files import CRASH_AT
from zoo.storage.verify import verify_zoo

N_MODELS = 6


def killed_at(step: str, run: Callable[[], None]) -> bool:
    """Run ``run`` in a forked child with ``SYMZOO_CRASH_AT=step``; True if it was SIGKILLed there."""
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery, just the write
        code = 1
        try:
            os.environ[CRASH_AT] = step
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            torch.set_num_threads(1)
            run()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True
    assert os.WEXITSTATUS(status) == 0, f"the write failed (not killed) with {step}"
    return False


def sweep(tmp_path: Path, write: Callable[[Path], None], rerun: Callable[[Path], None],
          reference: dict[int, dict], prefix: str = "") -> int:
    """Kill ``write`` at every step boundary in turn, rerun, compare; returns how many there were."""
    step = 0
    while True:
        step += 1
        zoo = tmp_path / f"kill-{step}"
        if not killed_at(f"{step}:{prefix}" if prefix else str(step), lambda: write(zoo)):
            break
        rerun(zoo)
        report = verify_zoo(zoo)
        assert report.ok, (step, report.problems)
        assert stored_rows(zoo) == reference, f"killed at step {step}: models lost, doubled or changed"
    return step - 1


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
    def write(zoo: Path) -> None:
        generate(spec, zoo, device="cpu", quiet=True)

    steps = sweep(tmp_path, write, write, reference)
    # creation (marker, masks, card, manifest) + per shard 3 files x 2 + sync + manifest + card x 2
    assert steps >= 2 * 10, steps


def test_generate_with_uneven_splits_killed_after_each_file_keeps_every_model(spec, reference, tmp_path):
    """The issue's case: a shard's first file renamed in, then killed; the rerun's shard plan puts
    the rest of its models in shards whose first model is the same one."""
    def write(zoo: Path) -> None:
        generate(dataclasses.replace(spec, batch_models=N_MODELS), zoo, device="cpu", quiet=True)

    def rerun(zoo: Path) -> None:  # another grouping than the killed run, as a changed --batch-models is
        generate(dataclasses.replace(spec, batch_models=1), zoo, device="cpu", quiet=True)

    assert sweep(tmp_path, write, rerun, reference, prefix="commit.shard.renamed") == 3


def test_ray_worker_killed_at_every_step_loses_nothing(spec, reference, tmp_path):
    """A Ray worker's code path (``publish_shard``: train, stage, rename into data/), killed at each
    step; the driver's next run lists or retrains what it left."""
    from generators.ray_engine import publish_shard

    data = load_images("digits")
    work = ShardWork(spec, "cpu")

    def write(zoo: Path) -> None:
        generate(dataclasses.replace(spec, n_models=0 + 3), zoo, device="cpu", quiet=True)  # the zoo exists
        with work.writer(zoo) as writer:
            metadata = writer.manifest.metadata
        publish_shard(dataclasses.replace(work, metadata=metadata), data, Shard(3, (3, 4, 5)), str(zoo))

    def rerun(zoo: Path) -> None:
        generate(spec, zoo, device="cpu", quiet=True)

    assert sweep(tmp_path, write, rerun, reference, prefix="publish") == 3


def test_importer_killed_at_every_step_loses_nothing(tmp_path, monkeypatch):
    from tests.test_importers import write_small_cnn_zoo
    from zoo.storage.importers import common, import_small_cnn_zoo

    source = tmp_path / "source"
    write_small_cnn_zoo(source, rows=12)
    monkeypatch.setattr(common, "SHARD_BYTES", 4 * 4 * 5000)  # a few models per shard: several commits
    expected = stored_rows(import_small_cnn_zoo(source, tmp_path / "reference"))

    def write(zoo: Path) -> None:
        import_small_cnn_zoo(source, zoo)

    assert sweep(tmp_path, write, write, expected, prefix="commit") >= 2 * 9
