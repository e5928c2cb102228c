import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from generators.data import DataError, load_images
from generators.recipe import Augment, Recipe, TrainJob
from generators.reference import train_sequential
from generators.rng import permutations
from generators.trainer import smoothed_cross_entropy, train_batched
from generators.zoospec import Dist, HyperparameterSpace, get_zoo_spec, zoo_spec_from_dict
from zoo import CNNSpec, LayerAsym, SpecError, WAsymSpec, get_arch
from zoo.storage import SPLITS, load, open_zoo
from zoo.storage.files import sha256_of
from zoo.storage.verify import verify_zoo
from tests.helpers import mnist_dir

MNIST = mnist_dir()  # as the product looks for it ($SYMZOO_DATA, ...), or the shared folder
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits():
    return load_images("digits")


@pytest.fixture(scope="module")
def mnist_small():
    if MNIST is None:
        pytest.skip("MNIST files not available")
    return load_images("mnist", MNIST).subset(train=512, test=256)


def jobs(n: int, epochs: int = 2) -> list[TrainJob]:
    return [TrainJob(i, 1000 + i, 10 ** -(1.5 + 0.5 * (i % 3)), 10 ** -(1 + i % 4), 0.05 * (i % 4), epochs + i % 2)
            for i in range(n)]


# -- data ------------------------------------------------------------------------------------------
def test_mnist_loads_with_checksums_and_missing_or_corrupt_files_are_named(tmp_path):
    if MNIST is None:
        pytest.skip("MNIST files not available")
    data = load_images("mnist", MNIST)
    assert data.x_train.shape == (60_000, 1, 28, 28) and data.x_test.shape == (10_000, 1, 28, 28)
    assert torch.bincount(data.y_test).tolist()[:3] == [980, 1135, 1032]
    with pytest.raises(DataError, match=f"train-images-idx3-ubyte.gz not found in {tmp_path}"):
        load_images("mnist", tmp_path)
    for f in MNIST.glob("*-idx?-ubyte.gz"):
        shutil.copy(f, tmp_path / f.name)
    damaged = tmp_path / "t10k-labels-idx1-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[:-10])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: md5 .* does not match"):
        load_images("mnist", tmp_path)


def test_unknown_dataset_and_digits_default(digits):
    assert digits.x_train.shape[1:] == (1, 8, 8) and len(digits.x_train) + len(digits.x_test) == 1797
    with pytest.raises(DataError, match="unknown data set 'svhn'"):
        load_images("svhn")


def test_subset_takes_the_first_images_as_copies_and_refuses_fewer_than_one(digits):
    part = digits.subset(train=100)
    assert torch.equal(part.x_train, digits.x_train[:100]) and torch.equal(part.y_train, digits.y_train[:100])
    assert part.x_test is digits.x_test and part.x_train.untyped_storage().size() < digits.x_train.untyped_storage().size()
    assert len(digits.subset(test=10_000).x_test) == len(digits.x_test)  # more than there are: all of them
    for bad in ({"train": 0}, {"test": -3}):
        with pytest.raises(SpecError, match="^digits: cannot take the first .* images; expected 1 or more$"):
            digits.subset(**bad)


# -- random streams ----------------------------------------------------------------------------------
def test_permutations_are_per_model_and_independent_of_grouping():
    seeds = torch.tensor([3, 4, 5])
    perms = permutations(seeds, epoch=2, n=100)
    assert all(sorted(p.tolist()) == list(range(100)) for p in perms)
    assert torch.equal(permutations(seeds[1:2], 2, 100)[0], perms[1])
    assert not torch.equal(perms[0], perms[1]) and not torch.equal(perms[0], permutations(seeds, 3, 100)[0])


# -- batched trainer ---------------------------------------------------------------------------------
def test_smoothed_cross_entropy_is_torchs_per_model():
    generator = torch.Generator().manual_seed(0)
    logits, target = torch.randn(5, 33, 10, generator=generator) * 4, torch.randint(0, 10, (5, 33), generator=generator)
    smoothing = torch.tensor([0.0, 0.05, 0.1, 0.2, 0.5])
    losses = smoothed_cross_entropy(logits, target, smoothing[:, None])
    expected = torch.stack([F.cross_entropy(logits[m], target[m], label_smoothing=float(smoothing[m])) for m in range(5)])
    assert torch.allclose(losses, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("variant", ["standard", "w_asym", "sigma_asym"])
def test_batched_trainer_matches_sequential_reference(digits, variant):
    spec = get_arch("mlp-digits", variant)
    recipe = Recipe(batch_size=64, peak_fraction=0.3)
    batch = train_batched(spec, digits, jobs(4), recipe, checkpoint_epochs=(0, 1))
    for result in batch:
        reference = train_sequential(spec, digits, result.job, recipe, checkpoint_epochs=(0, 1))
        assert torch.allclose(result.weights, reference.weights, atol=1e-4, rtol=1e-4)
        assert torch.equal(result.checkpoints[0], reference.checkpoints[0])
        assert torch.allclose(result.checkpoints[1], reference.checkpoints[1], atol=1e-5)
        assert abs(result.metrics["test_acc"] - reference.metrics["test_acc"]) <= 2 / len(digits.x_test)
        assert len(result.curves["test_acc"]) == result.job.epochs == len(reference.curves["test_acc"])


# A small CNN for scikit-learn's 8x8 digits (always available, unlike MNIST): two 3x3 stride-2 convs
# of 8 channels, GAP, linear; W-Asym fixes the fractions of each layer that cnn-mnist's does.
CNN_DIGITS = CNNSpec(in_channels=1, image_size=8, channels=(8, 8), strides=(2, 2), num_classes=10,
                     w_asym=WAsymSpec(layers={"blocks.0.layer": LayerAsym(3, 0.5), "blocks.*.layer": LayerAsym(24, 0.5),
                                              "head": LayerAsym(2, 0.5)}))
DIGITS_AUGMENT = Augment(flip=True, translate=1, cutout=3)  # the MNIST test's, scaled to 8x8 images


@pytest.mark.parametrize("arch, variant, data, augment", [
    ("cnn-digits", "w_asym", "digits", DIGITS_AUGMENT),
    ("cnn-digits", "sigma_asym", "digits", DIGITS_AUGMENT),
    ("resnet8-digits", "standard", "digits", DIGITS_AUGMENT),
    ("resnet8-digits", "w_asym", "digits", DIGITS_AUGMENT),
    ("resnet8-digits", "sigma_asym", "digits", DIGITS_AUGMENT),
    ("cnn-mnist", "w_asym", "mnist_small", Augment(flip=True, translate=2, cutout=4)),  # only where MNIST is
])
def test_batched_conv_nets_with_augmentation_match_reference(request, arch, variant, data, augment):
    """The batched trainer on convolutions, GroupNorm and residual blocks under ``vmap``, with
    flip/translate/cutout drawn per model, against the sequential reference. The digits cases
    always run (CI has no MNIST); three models of 1, 2 and 1 epochs also take the trainer through
    retirement and the padding of fewer than three models."""
    spec = CNN_DIGITS.with_variant(variant) if arch == "cnn-digits" else get_arch(arch, variant)
    data = request.getfixturevalue(data)
    recipe = Recipe(batch_size=128, augment=augment)
    batch = train_batched(spec, data, jobs(3, epochs=1), recipe)
    for result in batch:
        reference = train_sequential(spec, data, result.job, recipe)
        assert result.status == reference.status == "ok"
        assert torch.allclose(result.weights, reference.weights, atol=1e-4, rtol=1e-4)
        assert abs(result.metrics["test_acc"] - reference.metrics["test_acc"]) <= 2 / len(data.x_test)
        for name in ("train_loss", "test_loss"):  # the batched evaluation against the module's own
            assert result.metrics[name] == pytest.approx(reference.metrics[name], rel=1e-4)
        assert result.curves["test_loss"] == pytest.approx(reference.curves["test_loss"], rel=1e-4)


def test_result_does_not_depend_on_grouping(digits):
    spec = get_arch("mlp-digits", "w_asym")
    recipe = Recipe(batch_size=64)
    all_jobs = jobs(6)
    together = train_batched(spec, digits, all_jobs, recipe)
    alone = train_batched(spec, digits, all_jobs[4:5], recipe)[0]
    regrouped = train_batched(spec, digits, [all_jobs[2], all_jobs[4]], recipe)[1]
    for other in (alone, regrouped):
        assert torch.allclose(together[4].weights, other.weights, atol=1e-5)
        assert together[4].metrics["test_acc"] == pytest.approx(other.metrics["test_acc"], abs=1e-9)


def test_fixed_entries_stay_exact_and_diverged_models_do_not_disturb_others(digits):
    spec = get_arch("mlp-digits", "w_asym")
    recipe = Recipe(batch_size=64)
    good = jobs(2)
    bad = TrainJob(99, 7, 1e25, 0.0, 0.0, 2)  # weights overflow to inf within a few steps
    results = train_batched(spec, digits, [good[0], bad, good[1]], recipe)
    assert [r.status for r in results] == ["ok", "diverged", "ok"]
    reference = train_batched(spec, digits, good, recipe)
    for r, ref in zip((results[0], results[2]), reference):
        assert torch.allclose(r.weights, ref.weights, atol=1e-6)
    model = spec.build()
    from zoo import ParamLayout

    layout = ParamLayout.from_module(model)
    fixed = ~layout.trainable_mask
    assert torch.equal(results[0].weights[fixed], layout.flatten(model)[fixed])


# -- zoo specs -----------------------------------------------------------------------------------------
def test_paired_zoos_share_hyperparameters_and_seeds():
    spec = get_zoo_spec("digits-mlp")
    other = dataclasses.replace(spec, variant="w_asym", n_models=5)
    assert [spec.job(i) for i in range(5)] == [other.job(i) for i in range(5)]
    assert spec.job(0) != dataclasses.replace(spec, seed=1).job(0)
    lrs = [spec.job(i).lr for i in range(200)]
    assert 1e-4 <= min(lrs) and max(lrs) <= 1e-1 and max(lrs) / min(lrs) > 100
    assert {spec.job(i).epochs for i in range(200)} <= set(range(1, 21))


def test_paper_hyperparameter_defaults():
    h = HyperparameterSpace()
    assert h.lr.bounds == (0.005, 0.5) and h.weight_decay.bounds == (1e-5, 0.1)
    assert h.epochs == Dist("int_uniform", 10, 40) and h.label_smoothing.bounds == (0.0, 0.2)
    resnet = get_zoo_spec("cifar10-resnet8")
    assert resnet.recipe.batch_size == 512 and resnet.recipe.peak_epoch == 5 and resnet.recipe.augment.cutout == 4


@pytest.mark.parametrize(
    "change, message",
    [
        ({"n_models": 0}, "n_models must be positive"),
        ({"arch": "resnet9"}, "unknown architecture 'resnet9'"),
        ({"dataset": "imagenet"}, "dataset 'imagenet' is unknown"),
        ({"colour": 1}, "unknown field\\(s\\) colour"),
        ({"hyperparameters": {"lr": {"kind": "log10_uniform", "low": -1, "high": -3}}}, "needs low <= high"),
        ({"hyperparameters": {"epochs": {"kind": "uniform", "low": 1, "high": 3}}}, "epochs must be an int_uniform"),
    ],
)
def test_bad_zoo_specs_are_rejected(change, message):
    with pytest.raises(SpecError, match=message):
        zoo_spec_from_dict({**get_zoo_spec("digits-mlp").to_dict(), **change})


# -- symzoo generate -----------------------------------------------------------------------------------
def small_config(tmp_path: Path, n_models: int, epochs: int = 2) -> Path:
    spec = dataclasses.replace(
        get_zoo_spec("digits-mlp"), n_models=n_models, batch_models=8,
        hyperparameters=dataclasses.replace(HyperparameterSpace(), lr=Dist("log10_uniform", -3, -1),
                                            epochs=Dist("int_uniform", 1, epochs)),
        checkpoint_epochs=(0, 1),
    )
    path = tmp_path / "zoo.yaml"
    path.write_text(spec.to_yaml())
    return path


def symzoo(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "symzoo", *args], capture_output=True, text=True, cwd=ROOT, **kwargs)


def test_generate_end_to_end_and_grow(tmp_path):
    config = small_config(tmp_path, 12)
    out = tmp_path / "zoo"
    result = symzoo("generate", "--config", str(config), "--out", str(out), "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["trained"] == 12
    assert verify_zoo(out).ok
    zoo = open_zoo(out)
    assert zoo.num_rows() == 12 and set(zoo.manifest.schema.hyperparameters) == {"lr", "weight_decay", "label_smoothing", "epochs"}
    rows = load(out, "train", ["epochs", "curve_test_acc", "weights_epoch_0", "weights_epoch_1", "test_acc"])
    assert all(len(c) == e for c, e in zip(rows["curve_test_acc"], rows["epochs"]))
    assert all(c[-1] == pytest.approx(a) for c, a in zip(rows["curve_test_acc"], rows["test_acc"]))
    assert torch.isfinite(torch.as_tensor(rows["weights_epoch_1"])).all()
    grown = symzoo("generate", "--config", str(config), "--out", str(out), "--n-models", "16", "--json", "--quiet")
    assert json.loads(grown.stdout) | {"seconds": 0} == {"zoo": str(out), "trained": 4, "already_stored": 12,
                                                      "diverged": json.loads(grown.stdout)["diverged"], "seconds": 0,
                                                      "models_per_hour": json.loads(grown.stdout)["models_per_hour"]}
    other_seed = symzoo("generate", "--config", str(config), "--out", str(out), "--seed", "5", "--quiet")
    assert other_seed.returncode == 2 and "another zoo seed" in other_seed.stderr


def test_generate_survives_kill_9_and_resumes_and_refuses_a_second_writer_meanwhile(tmp_path):
    config = small_config(tmp_path, 48, epochs=3)
    out = tmp_path / "zoo"
    args = [sys.executable, "-m", "symzoo", "generate", "--config", str(config), "--out", str(out), "--quiet"]
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        manifest = out / "zoo.json"
        if manifest.exists() and len(json.loads(manifest.read_text())["shards"]) >= 3:
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGSTOP)  # paused mid-run, it still holds the zoo's lock
    second = symzoo("generate", "--config", str(config), "--out", str(out), "--quiet")
    assert second.returncode == 2
    assert second.stderr.strip() == f"symzoo: error: {out}: process {process.pid} is writing here; wait for it to finish or stop it, then run again"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    partial = open_zoo(out).num_rows()
    assert 0 < partial < 48
    result = symzoo("generate", "--config", str(config), "--out", str(out), "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["trained"] + summary["already_stored"] == 48
    indices = sorted(i for s in SPLITS for i in load(out, s, ["index"])["index"].tolist())
    assert indices == list(range(48))
    assert verify_zoo(out).ok


@pytest.mark.parametrize(
    "args, message",
    [
        (["--preset", "imagenet-vit"], "unknown zoo preset 'imagenet-vit'; valid presets: digits-mlp"),
        (["--preset", "digits-mlp", "--n-models", "0"], "n_models must be positive"),
        (["--preset", "mnist-mlp", "--data-dir", "/nonexistent"], "mnist file train-images-idx3-ubyte.gz not found"),
        (["--preset", "digits-mlp", "--device", "tpu"], "--device 'tpu' is unknown"),
    ],
)
def test_generate_bad_input_fails_before_training(tmp_path, args, message, monkeypatch):
    monkeypatch.setenv("SYMZOO_DATA", str(tmp_path / "empty"))
    result = symzoo("generate", *args, "--out", str(tmp_path / "zoo"), env={**os.environ, "SYMZOO_DATA": str(tmp_path)})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "zoo" / "data").exists() or not any((tmp_path / "zoo" / "data").iterdir())


def test_zoos_from_before_a_new_recipe_field_still_resume(tmp_path):
    """A recipe field added later (here ``schedule``) takes its default for a zoo whose manifest
    predates it, so that zoo resumes; a real difference is still refused."""
    from generators.generate import generate

    spec = dataclasses.replace(get_zoo_spec("digits-mlp"), n_models=2, batch_models=2,
                               hyperparameters=dataclasses.replace(HyperparameterSpace(), epochs=Dist("int_uniform", 1, 1)))
    out = tmp_path / "zoo"
    generate(spec, out, quiet=True)
    manifest = json.loads((out / "zoo.json").read_text())
    del manifest["metadata"]["recipe"]["schedule"]
    for shard in manifest["shards"]:  # shards of that time carried no zoo header in their footers
        path = out / shard["path"]
        pq.write_table(pq.read_table(path).replace_schema_metadata(None), path)
        shard.update(sha256=sha256_of(path), bytes=path.stat().st_size)
    (out / "zoo.json").write_text(json.dumps(manifest))
    report = generate(dataclasses.replace(spec, n_models=3), out, quiet=True)
    assert (report.trained, report.skipped) == (1, 2)
    with pytest.raises(SpecError, match="another recipe"):
        generate(dataclasses.replace(spec, recipe=Recipe(batch_size=64, schedule="constant")), out, quiet=True)


def test_generate_says_another_writer_holds_the_zoo_before_loading_any_data(tmp_path):
    """The lock is checked first: here the data could not even be found, and the busy zoo is
    still what is reported (before, a second generate loaded its data set for seconds first)."""
    from generators.generate import generate
    from zoo.storage.files import DirectoryBusyError, DirectoryLock

    out = tmp_path / "zoo"
    with DirectoryLock(out):
        with pytest.raises(DirectoryBusyError, match="is writing here"):
            generate(get_zoo_spec("mnist-mlp"), out, data_dir=str(tmp_path / "no-data"), quiet=True)
    assert sorted(p.name for p in out.iterdir()) == [".lock"]
