"""benchmarks/metanet_speed.py in its ``--smoke`` form: both ways of each metanet through the real
training loop on a tiny zoo, so that the benchmark cannot rot between the runs that time it."""

import json
import math
import time

import pytest
import torch

from benchmarks import metanet_speed


def test_smoke_run_times_both_ways_of_every_model(capsys):
    threads = torch.get_num_threads()
    start = time.perf_counter()
    assert metanet_speed.main(["--smoke", "--json"]) == 0
    assert time.perf_counter() - start < 120
    assert torch.get_num_threads() == threads  # the run's one thread is not left behind
    report = json.loads(capsys.readouterr().out)
    assert report["smoke"] and report["machine"]["torch"] == torch.__version__
    assert report["machine"]["torch_threads"] == 1
    assert len(report["load_average"]["before"]) == len(report["load_average"]["after"]) == 3
    results = {r["model"]: r for r in report["results"]}
    assert set(results) == {"gmn", "deepsets", "dmc"}
    for name, r in results.items():
        assert r["epochs"] == 1 and min(r["models"].values()) >= 2, name
        for way in ("old", "new"):
            assert r["seconds_per_epoch"][way] > 0 and r["cpu_seconds_per_epoch"][way] > 0, name
            runs, epochs = r["projected_cell_minutes"]["paper"][way], r["seconds_per_epoch"][way] * 500 / 60
            assert math.isclose(runs, epochs, rel_tol=0.01, abs_tol=0.01), name
        assert r["ratio"] > 0 and math.isfinite(r["ratio"]), name
        # one model, two computations: same predictions, and the same training run
        assert r["max_abs_difference"] < 1e-4, name
        assert r["val_r2"]["old"] == pytest.approx(r["val_r2"]["new"], abs=1e-3), name


def test_unknown_model_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        metanet_speed.main(["--smoke", "--model", "mlp"])
    assert exit_info.value.code == 2
    assert "--model mlp" in capsys.readouterr().err
