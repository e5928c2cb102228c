"""The local engine's worker processes: the same zoo as one process writes, every core used with
one torch thread each, progress from inside shards, and clear errors for bad worker counts."""

from __future__ import annotations

import dataclasses

import pytest

from benchmarks.engine_overhead import zoo_files
from generators.data import load_images
from generators.generate import LocalEngine, generate
from generators.zoospec import Dist, HyperparameterSpace, get_zoo_spec
from symzoo.cli import main
from zoo.storage.verify import verify_zoo


@pytest.fixture(scope="module")
def spec():
    """Four shards of three models with 1-3 epochs."""
    return dataclasses.replace(
        get_zoo_spec("digits-mlp"), n_models=12, batch_models=3,
        hyperparameters=dataclasses.replace(HyperparameterSpace(), epochs=Dist("int_uniform", 1, 3)),
    )


def test_workers_write_the_same_zoo_as_one_process(spec, tmp_path):
    one = generate(spec, tmp_path / "one", device="cpu", quiet=True, engine=LocalEngine(workers=1))
    two = generate(spec, tmp_path / "two", device="cpu", quiet=True, engine=LocalEngine(workers=2))
    assert one.trained == two.trained == 12
    assert zoo_files(tmp_path / "one") == zoo_files(tmp_path / "two")  # byte for byte, zoo.json included
    assert verify_zoo(tmp_path / "two").ok
    assert not (tmp_path / "two" / ".staging").exists() or not any((tmp_path / "two" / ".staging").iterdir())


def test_progress_arrives_from_inside_shards_before_they_end(spec, tmp_path):
    events: list[tuple[str, float]] = []
    engine = LocalEngine(workers=2)
    work_spec = dataclasses.replace(spec, n_models=6, batch_models=6,
                                    hyperparameters=dataclasses.replace(spec.hyperparameters,
                                                                        epochs=Dist("int_uniform", 3, 3)))
    from generators.generate import ShardWork, plan_shards

    work = ShardWork(work_spec, "cpu")
    shards = plan_shards(range(6), 3)
    with work.writer(tmp_path / "zoo") as writer:
        engine.run(work, load_images("digits"), shards, writer,
                   done=lambda result: events.append(("done", result.shard.key)),
                   progress=lambda shard, fraction: events.append((f"shard {shard.key}", fraction)))
    for key in (0, 3):
        shares = [f for name, f in events if name == f"shard {key}"]
        assert shares and shares == sorted(shares) and shares[-1] == 1.0  # rising to all of its steps
    first_done = events.index(next(e for e in events if e[0] == "done"))
    assert any(name.startswith("shard") and f < 1.0 for name, f in events[:first_done])  # from inside a shard


@pytest.mark.parametrize("argv, message", [
    (["--workers", "0"], "--workers 0: expected 1 or more"),
    (["--workers", "2", "--engine", "ray"], "--workers: only used with --engine local"),
])
def test_bad_worker_counts_are_one_line(tmp_path, capsys, argv, message):
    code = main(["generate", "--preset", "digits-mlp", "--n-models", "2", "--out", str(tmp_path / "zoo"), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]
    assert not (tmp_path / "zoo").exists()
