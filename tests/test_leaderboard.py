import json
import os

import pytest

from benchmarks.leaderboard import BenchConfig, MetanetSetting, ZooEntry, load_bench_config, run_bench
from zoo import SpecError
from zoo.errors import SymzooError

QUICK = {"n_models": 40, "hyperparameters": {"epochs": {"kind": "int_uniform", "low": 1, "high": 3}}}


def small_config() -> BenchConfig:
    return BenchConfig(
        name="tiny",
        zoos=(ZooEntry("standard", preset="digits-mlp", overrides=QUICK),
              ZooEntry("w_asym", preset="digits-mlp", overrides={**QUICK, "variant": "w_asym"})),
        metanets=(MetanetSetting("statnn", seeds=2, epochs=3, lrs=(1e-3,)),
                  MetanetSetting("linear", seeds=1, epochs=2, lrs=(1e-3,))),
    )


def test_leaderboard_runs_every_cell_writes_all_formats_and_resumes(tmp_path, monkeypatch):
    out = tmp_path / "board"
    cells = run_bench(small_config(), out, quiet=True)
    assert {(c["zoo"], c["metanet"]) for c in cells} == {(z, m) for z in ("standard", "w_asym") for m in ("statnn", "linear")}
    statnn = next(c for c in cells if c["metanet"] == "statnn")
    assert statnn["seeds"] == 2 and set(statnn["test_r2"]) == {"mean", "std"} and statnn["device"].startswith("cpu")
    for name in ("leaderboard.json", "leaderboard.csv", "leaderboard.md", "leaderboard.html"):
        assert (out / name).stat().st_size > 0
    assert (out / "leaderboard.png").read_bytes()[:4] == b"\x89PNG"
    assert "data:image/png;base64," in (out / "leaderboard.html").read_text()
    markdown = (out / "leaderboard.md").read_text()
    assert "| statnn |" in markdown
    linear_row = next(line for line in markdown.splitlines() if line.startswith("| linear |"))
    assert "±" not in linear_row  # one seed: its mean alone, no "± 0.000"
    assert "| standard | statnn | 2 | " in markdown and "torch " in markdown  # seeds, sizes, lr, software
    assert statnn["models"]["train"] > 0 and "seeds</th><th>lr" in (out / "leaderboard.html").read_text()
    assert len(json.loads((out / "leaderboard.json").read_text())["cells"]) == 4

    import benchmarks.leaderboard as leaderboard

    monkeypatch.setattr(leaderboard, "train_metanet", lambda *a, **k: pytest.fail("a finished cell ran again"))
    assert run_bench(small_config(), out, quiet=True) == cells


def test_cells_in_parallel_processes_match_cells_run_in_turn(tmp_path):
    config = small_config()
    in_turn = run_bench(config, tmp_path / "in-turn", quiet=True)
    zoos = tuple(ZooEntry(z.name, path=str(tmp_path / "in-turn" / "zoos" / z.name)) for z in config.zoos)
    parallel = run_bench(BenchConfig(config.name, zoos, config.metanets), tmp_path / "parallel", quiet=True, jobs=2)
    assert [(c["zoo"], c["metanet"]) for c in parallel] == [(c["zoo"], c["metanet"]) for c in in_turn]  # config order
    for a, b in zip(parallel, in_turn):
        assert a["device"] == f"cpu ({max(1, os.cpu_count() // 2)} threads)" and a["seeds"] == b["seeds"]
        for key in ("test_r2", "test_kendall_tau", "val_r2"):
            assert a[key]["mean"] == pytest.approx(b[key]["mean"], abs=1e-4)
    assert sorted(p.name for p in (tmp_path / "parallel" / "cells").iterdir()) == sorted(
        p.name for p in (tmp_path / "in-turn" / "cells").iterdir())

    broken = BenchConfig(config.name, (zoos[0], ZooEntry("broken", path=str(tmp_path / "no-zoo"))), config.metanets)
    with pytest.raises(SymzooError, match="no-zoo"):
        run_bench(broken, tmp_path / "broken", quiet=True, jobs=2)
    # the good zoo's cells are kept
    assert sorted(p.name for p in (tmp_path / "broken" / "cells").iterdir()) == ["standard__linear.json", "standard__statnn.json"]


def test_bad_configs_fail_before_any_work(tmp_path):
    with pytest.raises(SpecError, match="unknown metanet 'gpt'"):
        BenchConfig(name="x", zoos=(ZooEntry("a", preset="digits-mlp"),), metanets=(MetanetSetting("gpt"),))
    with pytest.raises(SpecError, match="jobs must be at least 1, got 0"):
        run_bench(small_config(), tmp_path / "none", jobs=0)
    assert not (tmp_path / "none").exists()
    with pytest.raises(SpecError, match="exactly one of 'path'"):
        ZooEntry("a", path="somewhere", preset="digits-mlp")
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nzoos: [{name: a, preset: digits-mlp}]\nmetanets: [{model: mlp}]\ncolour: red\n")
    with pytest.raises(SpecError, match="bad.yaml: unknown field\\(s\\) colour"):
        load_bench_config(path)


def test_shipped_configs_parse(tmp_path):
    from pathlib import Path

    for config in sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "configs").glob("*.yaml")):
        parsed = load_bench_config(config)
        assert parsed.zoos and parsed.metanets
        for zoo in parsed.zoos:
            if zoo.preset is not None:
                zoo.zoo_spec().arch_spec()  # every zoo and architecture resolves


def test_an_augmented_column_reads_another_columns_zoo_and_skips_invariant_metanets(tmp_path):
    config = BenchConfig(
        name="aug",
        zoos=(ZooEntry("standard", preset="digits-mlp", overrides=QUICK),
              ZooEntry("standard+perm-aug", of="standard", augment=True)),
        metanets=(MetanetSetting("statnn", seeds=1, epochs=2, lrs=(1e-3,)),
                  MetanetSetting("linear", seeds=1, epochs=2, lrs=(1e-3,))),
    )
    cells = run_bench(config, tmp_path / "board", quiet=True)
    assert [(c["zoo"], c["metanet"]) for c in cells] == [
        ("standard", "statnn"), ("standard", "linear"), ("standard+perm-aug", "linear")]
    assert cells[2]["zoo_dir"] == cells[0]["zoo_dir"]  # the same zoo, not a second copy
    assert not (tmp_path / "board" / "zoos" / "standard+perm-aug").exists()
    assert cells[2]["test_r2"] != cells[1]["test_r2"]  # augmented batches change what the linear model sees
    assert "— (invariant)" in (tmp_path / "board" / "leaderboard.md").read_text()
    with pytest.raises(SpecError, match="must name an earlier zoo"):
        BenchConfig("x", (ZooEntry("aug", of="standard", augment=True),), config.metanets)


def test_a_shrunk_config_is_a_smoke_run_and_never_reuses_cells_of_another_size(tmp_path):
    config = small_config()
    smoke = config.shrunk(n_models=24, seeds=1, epochs=1)
    assert [z.zoo_spec().n_models for z in smoke.zoos] == [24, 24]
    assert [(m.seeds, m.epochs, m.lrs) for m in smoke.metanets] == [(1, 1, (1e-3,)), (1, 1, (1e-3,))]
    assert smoke.zoos[1].zoo_spec().variant == "w_asym"  # other overrides are kept
    assert config.shrunk() == config
    with pytest.raises(SpecError, match="seeds 0: expected a positive number"):
        config.shrunk(seeds=0)
    out = tmp_path / "board"
    zoos = (ZooEntry("standard", preset="digits-mlp", overrides=QUICK),)
    run_bench(BenchConfig("one", zoos, config.metanets[:1]), out, quiet=True)
    with pytest.raises(SpecError, match=r"standard__statnn.json: trained with other settings \(.*seeds 2 there, 1 now"):
        run_bench(BenchConfig("one", zoos, config.metanets[:1]).shrunk(seeds=1), out, quiet=True)
