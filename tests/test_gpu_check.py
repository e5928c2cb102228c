"""benchmarks/gpu_check.py in its ``--smoke`` form: the GPU script's code paths at tiny sizes on
CPU, so that it cannot rot between the rare sessions that have a GPU to run it on."""

import dataclasses
import json
import math
import sys
import time

import torch

from benchmarks import gpu_check

CHECKS = {"batched_equals_sequential", "divergence_isolated", "w_asym_fixed_exact", "bf16_autocast", "resume"}


def test_smoke_run_passes_every_check_and_accounts_for_every_row(tmp_path):
    threads = torch.get_num_threads()
    start = time.perf_counter()
    assert gpu_check.main(["--out", str(tmp_path), "--smoke"]) == 0
    assert time.perf_counter() - start < 60
    assert torch.get_num_threads() == threads  # the smoke run's one thread is not left behind
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert report["finished"] and report["smoke"] and report["device"]["torch"] == torch.__version__
    assert {c["name"] for c in report["checks"]} == CHECKS
    assert all(c["status"] == "pass" for c in report["checks"]), [(c["name"], c["detail"]) for c in report["checks"]]
    assert all(c["max_deviation"] is not None and c["tolerance"] for c in report["checks"])

    rows = report["throughput"]
    assert [r["row"] for r in rows] == [r.label for r in gpu_check.build_config(tmp_path, smoke=True).rows]
    for row in rows:
        if row["status"] == "ok":
            assert math.isfinite(row["models_per_hour"]) and row["models_per_hour"] > 0, row
            assert row["tflops_per_model"] > 0 and row["diverged"] == 0, row
        else:
            assert row["status"] == "skipped" and row["reason"], row
        assert row["row"] in markdown
    ran = {(r["preset"], r["bf16"], r["cudnn_benchmark"]) for r in rows if r["status"] == "ok"}
    presets = {r["preset"] for r in rows}
    assert {(p, bf16, False) for p in presets for bf16 in (False, True)} <= ran
    assert ("cifar10-resnet8", True, True) in ran
    features = gpu_check.trainer_features()
    for row in rows:  # a switch the trainer has must run (in smoke: compile for the MLP)
        if row["compile"] and not features["compile"].startswith("not supported") and row["preset"] == "mnist-mlp":
            assert row["status"] == "ok", row
        if row["channels_last"] and row["status"] == "skipped":
            assert row["reason"].startswith(("not supported", "not applicable")), row


def test_smoke_rows_cover_every_variant_of_the_full_run(tmp_path):
    def variants(config):
        return {(r.preset, r.bf16, r.channels_last, r.compile, r.cudnn_benchmark) for r in config.rows}

    full, smoke = gpu_check.build_config(tmp_path, smoke=False), gpu_check.build_config(tmp_path, smoke=True)
    assert variants(full) == variants(smoke)
    assert full.rows[0].preset == "cifar10-resnet8" and full.device == "cuda" and full.budget_s == 420
    assert max(r.batch_models for r in smoke.rows) <= 3


def test_resume_check_runs_where_datasets_is_missing(tmp_path, monkeypatch):
    """The GPU machine has no ``datasets``: writing a zoo must not need it."""
    monkeypatch.setitem(sys.modules, "datasets", None)
    result = gpu_check.check_resume(gpu_check.build_config(tmp_path, smoke=True), torch.device("cpu"))
    assert result.status == "pass", result.detail


def test_rows_past_the_budget_are_skipped_not_run(tmp_path):
    config = dataclasses.replace(gpu_check.build_config(tmp_path, smoke=True),
                                 rows=(gpu_check.RowSpec("mnist-mlp", 2), gpu_check.RowSpec("mnist-mlp", 2, bf16=True)))
    recorded = []
    rows = gpu_check.run_throughput(config, torch.device("cpu"), gpu_check.Progress(), time.perf_counter() - 1,
                                    recorded.append)
    assert rows == recorded and [r["status"] for r in rows] == ["skipped", "skipped"]
    assert all(r["reason"].startswith("budget") for r in rows)
