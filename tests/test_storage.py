import json
import os
import shutil
from collections import Counter

import numpy as np
import pytest
import torch

from tests.storage_helpers import SCHEMA, accuracy, digits, make_zoo, train_records
from zoo import get_arch
from zoo.storage import SPLITS, ModelRecord, ZooFormatError, ZooWriter, load, model_id_of, open_zoo, split_of
from zoo.storage.files import DirectoryBusyError
from zoo.storage.hdf5 import export_hdf5
from zoo.storage.verify import verify_zoo


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A zoo directory and the records written into it."""
    path = tmp_path_factory.mktemp("zoo") / "digits"
    return path, make_zoo(path)


@pytest.fixture(scope="module")
def zoo_dir(written):
    return written[0]


@pytest.fixture
def zoo_copy(zoo_dir, tmp_path):
    path = tmp_path / "copy"
    shutil.copytree(zoo_dir, path, ignore=shutil.ignore_patterns(".cache"))
    return path


def test_layout_of_a_zoo_directory(zoo_dir):
    files = sorted(p.relative_to(zoo_dir).as_posix() for p in zoo_dir.rglob("*") if p.is_file() and ".cache" not in p.parts)
    assert {"zoo.json", "README.md", "fixed.npz"} <= set(files)
    shards = [f for f in files if f.startswith("data/")]
    assert shards and all(f.split("/")[1].split("-")[0] in SPLITS and f.endswith(".parquet") for f in shards)
    manifest = json.loads((zoo_dir / "zoo.json").read_text())
    assert manifest["schema_version"] == 1 and manifest["num_params"] == 3466 and manifest["num_trainable"] == 2794
    assert sum(s["rows"] for s in manifest["shards"]) == 24
    assert {"symzoo", "torch", "pyarrow", "python"} <= set(manifest["software"])


def test_rows_round_trip(written):
    zoo_dir, records = written[0], {r.index: r for r in written[1]}
    zoo = open_zoo(zoo_dir)
    seen = []
    for split in SPLITS:
        data = zoo.load(split)
        assert isinstance(data["weights"], np.memmap) and data["weights"].dtype == np.float32
        for row, index in enumerate(data["index"]):
            record = records[int(index)]
            seen.append(int(index))
            assert data["model_id"][row] == model_id_of(int(index)) and split_of(data["model_id"][row]) == split
            assert np.array_equal(data["weights"][row], record.weights.numpy())
            assert np.array_equal(data["weights_epoch_0"][row], record.checkpoints[0].numpy())
            assert data["test_acc"][row] == record.metrics["test_acc"] and data["lr"][row] == record.hyperparameters["lr"]
            assert np.array_equal(data["curve_train_loss"][row], np.float32(record.curves["train_loss"]))
    assert sorted(seen) == list(range(24))


def test_load_columns_and_torch_format(zoo_dir):
    data = load(zoo_dir, split="test", columns=["weights", "test_acc"], format="torch")
    assert list(data) == ["weights", "test_acc"]
    assert isinstance(data["weights"], torch.Tensor) and data["weights"].shape[1] == 3466
    with pytest.raises(ZooFormatError, match="no column\\(s\\) accuracy"):
        load(zoo_dir, columns=["accuracy"])
    with pytest.raises(ZooFormatError, match="unknown split 'dev'"):
        load(zoo_dir, split="dev")


def test_loads_with_huggingface_datasets(zoo_dir, tmp_path):
    import datasets

    dataset = datasets.load_dataset(str(zoo_dir), cache_dir=str(tmp_path / "hf"))
    assert isinstance(dataset, datasets.DatasetDict) and set(dataset) == set(SPLITS)
    feature = dataset["train"].features["weights"]
    assert getattr(feature, "length", None) == 3466 and feature.feature.dtype == "float32"
    for split in SPLITS:
        weights = dataset[split].with_format("torch")["weights"][:]
        assert isinstance(weights, torch.Tensor) and weights.shape == (open_zoo(zoo_dir).num_rows(split), 3466)
        assert torch.equal(weights, torch.from_numpy(np.asarray(load(zoo_dir, split, ["weights"])["weights"])))
        assert dataset[split]["model_id"] == load(zoo_dir, split, ["model_id"])["model_id"]


@pytest.mark.parametrize("variant", ["standard", "w_asym", "sigma_asym"])
def test_rebuilt_network_reproduces_stored_test_accuracy(tmp_path, variant):
    make_zoo(tmp_path / variant, variant=variant, n=6, shard=6)
    zoo = open_zoo(tmp_path / variant)
    _, _, x_test, y_test = digits()
    checked = 0
    for split in zoo.splits:
        stored = zoo.load(split, ["test_acc"])["test_acc"]
        for row, expected in enumerate(stored):
            assert accuracy(zoo.rebuild(row, split), x_test, y_test) == expected
            checked += 1
    assert checked == 6 and max(zoo.load("train", ["test_acc"])["test_acc"]) > 0.3  # the models did learn


def test_rebuild_uses_the_stored_masks(zoo_copy):
    """Masks are read from fixed.npz, never regenerated: a zoo with foreign masks still rebuilds."""
    zoo = open_zoo(zoo_copy)
    mask, values = zoo.fixed
    model = zoo.rebuild(0, "train")
    head = model.head
    slot = zoo.layout["head.weight"]
    assert torch.equal(head.mask.reshape(-1), mask[slot.offset : slot.stop])
    assert torch.equal(head.fixed_values[~head.mask], values[slot.offset : slot.stop][~mask[slot.offset : slot.stop]])


def test_splits_are_a_deterministic_function_of_the_id():
    counts = Counter(split_of(model_id_of(i)) for i in range(20_000))
    assert abs(counts["train"] / 20_000 - 0.5) < 0.02
    assert abs(counts["validation"] / 20_000 - 0.25) < 0.02 and abs(counts["test"] / 20_000 - 0.25) < 0.02
    assert [split_of(model_id_of(i)) for i in range(50)] == [split_of(model_id_of(i)) for i in range(50)]


def test_growing_a_zoo_keeps_models_in_place(zoo_copy):
    before = {s: set(load(zoo_copy, s, ["index"])["index"].tolist()) for s in SPLITS}
    writer = ZooWriter(zoo_copy, get_arch("mlp-digits", "w_asym"), SCHEMA)
    assert writer.stored_indices == frozenset(range(24))
    writer.write(train_records("w_asym", range(24, 40), steps=1))
    after = {s: set(load(zoo_copy, s, ["index"])["index"].tolist()) for s in SPLITS}
    assert all(before[s] <= after[s] for s in SPLITS)
    assert sum(len(v) for v in after.values()) == 40
    assert verify_zoo(zoo_copy).ok


def test_writer_refuses_duplicates_wrong_lengths_and_another_zoo(zoo_copy):
    writer = ZooWriter(zoo_copy, get_arch("mlp-digits", "w_asym"), SCHEMA)
    record = train_records("w_asym", [3], steps=1)[0]
    with pytest.raises(ZooFormatError, match="model 3 is already stored"):
        writer.write([record])
    short = ModelRecord(99, 99, np.zeros(10, np.float32), hyperparameters={"lr": 1.0, "steps": 1},
                        curves={"train_loss": [1.0]})
    with pytest.raises(ZooFormatError, match="weights have 10 entries; the layout has 3466"):
        writer.write([short])
    writer.close()
    with pytest.raises(ZooFormatError, match="another architecture or variant"):
        ZooWriter(zoo_copy, get_arch("mlp-digits", "standard"), SCHEMA)


def test_one_writer_at_a_time(zoo_copy):
    arch = get_arch("mlp-digits", "w_asym")
    with ZooWriter(zoo_copy, arch, SCHEMA):
        with pytest.raises(DirectoryBusyError, match=f"{zoo_copy}: process {os.getpid()} is writing here; wait"):
            ZooWriter(zoo_copy, arch, SCHEMA)
    with ZooWriter(zoo_copy, arch, SCHEMA) as writer:  # free again once the first one is closed
        assert writer.stored_indices == frozenset(range(24))
    assert verify_zoo(zoo_copy).ok  # the lock file is no part of the zoo


def test_interrupted_write_leaves_no_half_file_and_resume_adopts_finished_files(zoo_dir, tmp_path, monkeypatch):
    import zoo.storage.files as files

    path = tmp_path / "interrupted"
    writer = ZooWriter(path, get_arch("mlp-digits", "w_asym"), SCHEMA)
    records = train_records("w_asym", range(12), steps=1)
    real_replace, calls = files.os.replace, []

    def crash_on_second_shard_file(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", crash_on_second_shard_file)
    with pytest.raises(KeyboardInterrupt):
        writer.write(records)
    monkeypatch.setattr(files.os, "replace", real_replace)
    data = path / "data"
    assert not [p for p in data.iterdir() if p.name.startswith(".")]  # no temp file left behind
    assert len(list(data.glob("*.parquet"))) == 1  # one split file made it, unlisted
    assert not verify_zoo(path).ok  # ... and verify says so

    writer.close()  # a killed process's lock goes with it
    resumed = ZooWriter(path, get_arch("mlp-digits", "w_asym"), SCHEMA)  # adopts the finished file
    done = resumed.stored_indices
    assert done and len(done) < 12
    resumed.write([r for r in records if r.index not in done])
    indices = sorted(i for s in SPLITS for i in load(path, s, ["index"])["index"].tolist())
    assert indices == list(range(12))  # every model exactly once
    assert verify_zoo(path).ok


def test_hdf5_export_reads_back_identical(zoo_dir, tmp_path):
    out = export_hdf5(zoo_dir, tmp_path / "zoo.h5")
    parquet, hdf5 = open_zoo(zoo_dir), open_zoo(out)
    for split in SPLITS:
        a, b = parquet.load(split), hdf5.load(split)
        assert list(a) == list(b)
        for name in a:
            if isinstance(a[name], list):
                assert len(a[name]) == len(b[name])
                for x, y in zip(a[name], b[name]):
                    assert np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y, name
            else:
                assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name], equal_nan=True), name
    _, _, x_test, y_test = digits()
    assert accuracy(hdf5.rebuild(0, "test"), x_test, y_test) == hdf5.load("test", ["test_acc"])["test_acc"][0]
    import h5py

    with h5py.File(out) as f:
        assert f["weights"].chunks[1] == 3466 and f["weights"].chunks[0] >= 1


def test_verify_passes_on_a_good_zoo(zoo_dir):
    report = verify_zoo(zoo_dir)
    assert report.ok and report.models == 24


def first_shard(path):
    return path / json.loads((path / "zoo.json").read_text())["shards"][0]["path"]


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: first_shard(p).write_bytes(first_shard(p).read_bytes()[:-100]), "checksum mismatch"),
        (lambda p: first_shard(p).unlink(), "listed in zoo.json but missing"),
        (lambda p: (p / "fixed.npz").write_bytes(b"junk"), "fixed.npz"),
        (lambda p: shutil.copy(first_shard(p), p / "data" / "train-9999999.parquet"), "not listed in zoo.json"),
    ],
)
def test_verify_names_the_damaged_file(zoo_copy, damage, message):
    damage(zoo_copy)
    report = verify_zoo(zoo_copy)
    assert not report.ok
    assert any(message in problem for problem in report.problems), report.problems


def test_verify_finds_duplicate_ids(zoo_copy):
    manifest = json.loads((zoo_copy / "zoo.json").read_text())
    shard = manifest["shards"][0]
    copy = dict(shard, path=shard["path"].replace(".parquet", "").rsplit("-", 1)[0] + "-7777777.parquet")
    shutil.copy(zoo_copy / shard["path"], zoo_copy / copy["path"])
    manifest["shards"].append(copy)
    (zoo_copy / "zoo.json").write_text(json.dumps(manifest))
    assert any("duplicate model_id" in p for p in verify_zoo(zoo_copy).problems)


def test_damaged_shard_and_bad_manifests_give_clear_errors(zoo_copy):
    shard = first_shard(zoo_copy)
    shard.write_bytes(b"PAR1 not really parquet")
    split = shard.name.split("-")[0]
    with pytest.raises(ZooFormatError, match=f"{shard.name}: cannot read|{shard.name}.*damaged|column 'weights'"):
        load(zoo_copy, split, ["test_acc"])
    manifest = json.loads((zoo_copy / "zoo.json").read_text())
    (zoo_copy / "zoo.json").write_text(json.dumps({**manifest, "schema_version": 99}))
    with pytest.raises(ZooFormatError, match="schema_version 99 is not supported"):
        open_zoo(zoo_copy)
    (zoo_copy / "zoo.json").write_text("{not json")
    with pytest.raises(ZooFormatError, match="zoo.json: manifest is not valid JSON"):
        open_zoo(zoo_copy)
    (zoo_copy / "zoo.json").unlink()
    with pytest.raises(ZooFormatError, match="zoo.json: manifest missing"):
        open_zoo(zoo_copy)


def test_shard_with_another_schema_is_named(zoo_copy, tmp_path):
    other = tmp_path / "other"
    ZooWriter(other, get_arch("mlp-mnist", "w_asym"), SCHEMA).write(
        [ModelRecord(0, 0, np.zeros(55_050, np.float32), hyperparameters={"lr": 1.0, "steps": 1},
                     curves={"train_loss": [1.0]})]
    )
    stranger = next((other / "data").glob("*.parquet"))
    split = stranger.name.split("-")[0]
    target = next(p for p in (zoo_copy / "data").glob(f"{split}-*.parquet"))
    manifest = json.loads((zoo_copy / "zoo.json").read_text())
    shutil.copy(stranger, target)
    from zoo.storage.files import sha256_of

    for shard in manifest["shards"]:  # make the checksums agree, so only the schema is wrong
        if shard["path"] == f"data/{target.name}":
            shard.update(sha256=sha256_of(target), bytes=target.stat().st_size, rows=1)
    (zoo_copy / "zoo.json").write_text(json.dumps(manifest))
    with pytest.raises(ZooFormatError, match=f"{target.name}: written for another zoo than zoo.json describes"):
        load(zoo_copy, split, ["weights"])
    assert any("schema differs" in p and target.name in p for p in verify_zoo(zoo_copy).problems)


def test_cli_info_verify_export(zoo_copy, tmp_path, capsys):
    from symzoo.cli import main

    assert main(["info", str(zoo_copy), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["models"] == 24 and sum(s["models"] for s in info["splits"].values()) == 24
    assert info["num_params"] == 3466 and 0 < info["test_acc"]["mean"] <= 1
    assert (zoo_copy / "accuracy_hist.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["verify", str(zoo_copy)]) == 0
    assert main(["export", str(zoo_copy), "--format", "hdf5", "--out", str(tmp_path / "z.h5")]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "z.h5"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["models"] == 24
    first_shard(zoo_copy).write_bytes(b"broken")
    assert main(["verify", str(zoo_copy)]) == 1
    assert "checksum mismatch" in capsys.readouterr().err


def test_card_features_are_what_datasets_would_write_without_importing_it(zoo_dir):
    """Writing a zoo must work where ``datasets`` is not installed (e.g. a GPU node)."""
    from datasets import Features

    from zoo.storage.card import features

    schema = open_zoo(zoo_dir).arrow_schema
    assert features(schema) == Features.from_arrow_schema(schema)._to_yaml_list()
