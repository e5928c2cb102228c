"""``symzoo generate --engine ray`` on a local 2-CPU Ray instance: the same zoo as the local engine,
and the failures it must survive (a worker killed mid-shard, a killed driver, a shard that always
fails). Workers are killed from outside with SIGKILL, as a crash or the OOM killer would."""

import dataclasses
import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from benchmarks.engine_overhead import zoo_files
from generators.generate import ShardsFailed, generate
from generators.zoospec import Dist, HyperparameterSpace, get_zoo_spec
from symzoo.cli import main
from zoo.storage import Manifest, model_id_of
from zoo.storage.verify import verify_zoo

ROOT = Path(__file__).resolve().parents[1]
N_MODELS, BATCH = 24, 8  # three shards: shard-0000000, shard-0000008, shard-0000016


@pytest.fixture(scope="module")
def spec():
    return dataclasses.replace(
        get_zoo_spec("digits-mlp"), n_models=N_MODELS, batch_models=BATCH, checkpoint_epochs=(0, 1),
        hyperparameters=dataclasses.replace(HyperparameterSpace(), lr=Dist("log10_uniform", -3, -1),
                                            epochs=Dist("int_uniform", 2, 3)),
    )


@pytest.fixture(scope="module")
def reference(spec, tmp_path_factory):
    """The zoo written by the local engine."""
    out = tmp_path_factory.mktemp("local") / "zoo"
    generate(spec, out, device="cpu", quiet=True)
    return out


@pytest.fixture(scope="module")
def ray_session():
    """One private local Ray instance (2 CPUs) for the tests of this module that share one."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def rows(zoo: Path) -> dict[str, dict]:
    """Each listed model's stored row by model id; fails if an id is stored twice."""
    found: dict[str, dict] = {}
    for shard in Manifest.load(zoo).shards:
        for row in pq.read_table(zoo / shard.path).to_pylist():
            assert row["model_id"] not in found, f"{row['model_id']} stored twice"
            found[row["model_id"]] = row
    return found


class WorkerKiller(threading.Thread):
    """SIGKILLs the Ray worker process running task ``name`` (its process title is ``ray::name``)
    up to ``times`` times, and notes every process seen running it."""

    def __init__(self, name: str, times: int, zoo: Path) -> None:
        super().__init__(daemon=True)
        self.name, self.times, self.zoo = name, times, zoo
        self.seen: set[int] = set()
        self.killed: list[int] = []
        self.published_before_kill = False
        self._halt = threading.Event()

    def run(self) -> None:
        key = self.name.removeprefix("shard-")
        while not self._halt.is_set():
            for proc in psutil.Process().children(recursive=True):
                try:
                    running = " ".join(proc.cmdline()).startswith(f"ray::{self.name}")
                except psutil.Error:
                    continue
                if running:
                    self.seen.add(proc.pid)
                    if len(self.killed) < self.times and proc.pid not in self.killed:
                        self.published_before_kill |= any(self.zoo.glob(f"data/*-{key}-*.parquet"))
                        proc.send_signal(signal.SIGKILL)
                        self.killed.append(proc.pid)
            self._halt.wait(0.01)

    def __enter__(self) -> "WorkerKiller":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self._halt.set()
        self.join()


def symzoo(*args: str) -> list[str]:
    return [sys.executable, "-m", "symzoo", *args]


# -- without a Ray session ----------------------------------------------------------------------------
def test_missing_ray_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    code = main(["generate", "--preset", "digits-mlp", "--engine", "ray", "--out", str(tmp_path / "zoo")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pip install 'symzoo[ray]'" in err[0], err
    assert not (tmp_path / "zoo").exists()  # nothing loaded or created first


@pytest.mark.parametrize("args, message", [
    (["--gpus-per-shard", "2"], "--gpus-per-shard 2.0: expected a number from 0 to 1"),
    (["--device", "cpu", "--gpus-per-shard", "0.5"], "with --device cpu"),
    (["--device", "cuda", "--gpus-per-shard", "0"], "--device cuda with --gpus-per-shard 0"),
    (["--max-retries", "-1"], "--max-retries -1: expected 0 or more"),
    (["--engine", "local", "--address", "auto"], "--address: only used with --engine ray"),
])
def test_bad_ray_options_are_one_line_errors(tmp_path, capsys, args, message):
    argv = ["generate", "--preset", "digits-mlp", "--out", str(tmp_path / "zoo")]
    code = main(argv + (args if "--engine" in args else ["--engine", "ray", *args]))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err


def kill_driver_then_resume(command: list[str], out: Path, reference: Path) -> None:
    """Run ``command`` (a ``generate --engine ray --batch-models 4``: six shards), kill -9 it once
    one shard is listed, run it again, and check the zoo is whole and as the local engine's."""
    driver = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and driver.poll() is None:
            manifest = out / "zoo.json"
            if manifest.exists() and json.loads(manifest.read_text())["shards"]:
                break
            time.sleep(0.02)
        started = psutil.Process(driver.pid).children(recursive=True)
    finally:
        driver.kill()
        driver.wait()
    for proc in started:  # a Ray instance the driver started: some of its agents outlive it
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    partial = len(rows(out))
    assert 0 < partial < N_MODELS, "the driver should be killed mid-run"

    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["already_stored"] >= partial and summary["trained"] + summary["already_stored"] == N_MODELS
    assert verify_zoo(out).ok, verify_zoo(out).problems
    assert rows(out) == rows(reference)  # every model once, as the local engine trained it
    assert not (out / ".staging").exists()


def generate_command(spec, tmp_path: Path, address: str) -> tuple[list[str], Path]:
    config, out = tmp_path / "zoo.yaml", tmp_path / "zoo"
    config.write_text(spec.to_yaml())
    return symzoo("generate", "--config", str(config), "--out", str(out), "--engine", "ray", "--address", address,
                  "--batch-models", "4", "--device", "cpu", "--quiet", "--json"), out


@pytest.mark.slow
def test_killed_driver_with_its_own_ray_instance_resumes(spec, reference, tmp_path):
    """One machine: the killed driver had started a local Ray instance; the rerun starts another."""
    kill_driver_then_resume(*generate_command(spec, tmp_path, "local"), reference)


# -- on one shared local Ray instance ------------------------------------------------------------------
def test_ray_zoo_is_byte_identical_to_local_zoo(spec, reference, ray_session, tmp_path):
    from generators.ray_engine import RayEngine

    report = generate(spec, tmp_path / "zoo", device="cpu", quiet=True, engine=RayEngine())
    assert report.trained == N_MODELS and report.skipped == 0
    assert zoo_files(tmp_path / "zoo") == zoo_files(reference)
    names = sorted(zoo_files(reference))
    assert [n for n in names if not n.startswith("data/")] == ["README.md", "fixed.npz", "zoo.json"]
    shards = [re.fullmatch(r"data/(\w+)-(\d{7})-[0-9a-f]{12}\.parquet", n) for n in names if n.startswith("data/")]
    assert sorted((m[1], int(m[2])) for m in shards) == sorted(
        (split, key) for split in ("train", "validation", "test") for key in (0, 8, 16))  # a file per split per shard
    again = generate(spec, tmp_path / "zoo", device="cpu", quiet=True, engine=RayEngine())
    assert (again.trained, again.skipped) == (0, N_MODELS)


def test_worker_killed_mid_shard_is_retried(spec, reference, ray_session, tmp_path):
    from generators.ray_engine import RayEngine

    out = tmp_path / "zoo"
    with WorkerKiller("shard-0000008", times=1, zoo=out) as killer:
        report = generate(spec, out, device="cpu", quiet=True, engine=RayEngine(max_retries=2))
    assert len(killer.killed) == 1 and not killer.published_before_kill
    assert len(killer.seen) >= 2, "the shard should have run again in another worker"
    assert report.trained == N_MODELS
    assert verify_zoo(out).ok
    assert zoo_files(out) == zoo_files(reference)  # every model exactly once, the same bytes


def test_shard_failing_every_try_is_named_and_the_rest_is_written(spec, reference, ray_session, tmp_path):
    from generators.ray_engine import RayEngine

    out = tmp_path / "zoo"
    with WorkerKiller("shard-0000008", times=2, zoo=out) as killer, pytest.raises(ShardsFailed) as failed:
        generate(spec, out, device="cpu", quiet=True, engine=RayEngine(max_retries=1))
    assert len(killer.killed) == 2
    message = str(failed.value)
    assert "\n" not in message and "shard-0000008 (models 8-15)" in message and "the other 2 are stored" in message
    assert [f.shard.name for f in failed.value.failures] == ["shard-0000008"]
    stored = rows(out)
    assert sorted(stored) == sorted(set(rows(reference)) - {model_id_of(i) for i in range(8, 16)})
    assert verify_zoo(out).ok

    rerun = generate(spec, out, device="cpu", quiet=True, engine=RayEngine())
    assert (rerun.trained, rerun.skipped) == (8, 16)
    assert zoo_files(out) == zoo_files(reference)


def test_killed_driver_resumes_with_the_same_command(spec, reference, ray_session, tmp_path):
    """A cluster: the driver joins it, is killed (Ray stops its tasks), and the same command resumes."""
    address = ray_session.get_runtime_context().gcs_address
    kill_driver_then_resume(*generate_command(spec, tmp_path, address), reference)
