"""Batched or per-model execution (issue 15): the rule, and per-model zoos that keep the batched
trainer's contract (every model stored, diverged models kept and marked, full-length curves) and
hold exactly what the sequential trainer gives."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from generators.data import load_images
from generators.execution import execution_for, train_per_model
from generators.generate import LocalEngine, generate
from generators.recipe import Recipe, TrainJob
from generators.reference import train_sequential
from generators.trainer import TrainProgress, train_batched
from generators.zoospec import Dist, HyperparameterSpace, get_zoo_spec
from zoo.nets import get_arch, spec_from_dict
from zoo.storage.reader import Zoo
from zoo.storage.verify import verify_zoo

# A small CNN for scikit-learn's 8x8 digits: always available, unlike MNIST.
DIGITS_CNN = {"family": "cnn", "in_channels": 1, "image_size": 8, "channels": [4, 4], "strides": [2, 2],
              "num_classes": 10}


@pytest.fixture(scope="module")
def digits():
    return load_images("digits")


@pytest.mark.parametrize("arch, device, expected", [
    ("cnn-mnist", "cpu", "per_model"),
    ("resnet8", "cpu", "per_model"),
    ("mlp-digits", "cpu", "batched"),
    ("mlp-mnist", "cpu", "batched"),
    ("resnet8-digits", "cpu", "batched"),  # 8x8 inputs: batched conv nets are faster (issue 17)
    ("cnn-mnist", "cuda", "batched"),
    ("resnet8", "cuda:1", "batched"),
    ("mlp-digits", "cuda", "batched"),
])
def test_rule(arch, device, expected):
    assert execution_for(get_arch(arch), torch.device(device)) == expected
    assert execution_for(get_arch(arch, "w_asym"), device) == expected  # a variant does not change it


def test_inline_cnn_follows_its_input_size():
    assert execution_for(spec_from_dict(DIGITS_CNN), "cpu") == "batched"
    larger = {**DIGITS_CNN, "image_size": 16}
    assert execution_for(spec_from_dict(larger), "cpu") == "per_model"


def test_cnn_zoo_is_trained_per_model_and_equals_the_sequential_trainer(digits, tmp_path, monkeypatch):
    import generators.engines
    import generators.shards

    # on digits the rule batches conv nets; the per-model path is what this test checks, here in
    # this process (where the patch holds) on one thread, as in the engine's one-thread workers
    monkeypatch.setattr(generators.shards, "execution_for", lambda arch, device: "per_model")
    monkeypatch.setattr(generators.engines, "cpu_cores", lambda: 1)
    spec = dataclasses.replace(
        get_zoo_spec("digits-mlp"), name="digits-cnn", arch=DIGITS_CNN, n_models=5, batch_models=2,
        checkpoint_epochs=(0, 1, 2),
        hyperparameters=dataclasses.replace(HyperparameterSpace(), epochs=Dist("int_uniform", 1, 2)),
    )
    report = generate(spec, tmp_path / "zoo", device="cpu", quiet=True, engine=LocalEngine(workers=1))
    assert report.trained == 5
    assert verify_zoo(tmp_path / "zoo").ok
    zoo = Zoo(tmp_path / "zoo")
    stored = {}
    for split in zoo.splits:
        rows = zoo.load(split, columns=["index", "weights", "status"])
        for index, weights, status in zip(rows["index"], rows["weights"], rows["status"]):
            stored[int(index)] = (torch.as_tensor(weights), status)
    assert sorted(stored) == list(range(5))
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for index, (weights, status) in stored.items():
            reference = train_sequential(spec.arch_spec(), digits, spec.job(index), spec.recipe,
                                         checkpoint_epochs=(0, 1, 2))
            assert status == reference.status == "ok"
            assert torch.equal(weights, reference.weights)
    finally:
        torch.set_num_threads(previous)


def test_per_model_keeps_the_batched_contract_for_diverged_models(digits):
    arch = get_arch("mlp-digits")
    recipe = Recipe(batch_size=256)
    good = TrainJob(0, 11, 1e-2, 1e-4, 0.0, 2)
    bad = TrainJob(1, 7, 1e25, 0.0, 0.0, 3)  # weights overflow within a few steps
    events: list[TrainProgress] = []
    per_model = train_per_model(arch, digits, [good, bad], recipe, checkpoint_epochs=(0, 1, 3),
                                on_progress=events.append)
    batched = train_batched(arch, digits, [good, bad], recipe, checkpoint_epochs=(0, 1, 3))
    assert [r.status for r in per_model] == [r.status for r in batched] == ["ok", "diverged"]
    for p, b in zip(per_model, batched):
        assert {k: len(v) for k, v in p.curves.items()} == {k: len(v) for k, v in b.curves.items()} \
            == {k: p.job.epochs for k in p.curves}
        assert sorted(p.checkpoints) == sorted(b.checkpoints)
        assert sorted(p.metrics) == sorted(b.metrics)
        assert p.weights.shape == b.weights.shape
    assert per_model[1].curves["train_loss"][1:] == [0.0, 0.0]
    # progress: rising, per step, to all of the work, with models done counted as they finish
    done = [e.model_steps_done for e in events]
    assert done == sorted(done) and done[-1] == events[-1].model_steps == 5 * 6
    assert [e.models_done for e in events][-1] == 2 and any(e.models_done == 1 for e in events)
