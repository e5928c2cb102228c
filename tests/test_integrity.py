"""Zoo integrity against a hostile or unlucky user: foreign and duplicate shards are never adopted,
damaged bytes are never served, a damaged zoo can be repaired and finished, and nothing is written
outside the zoo. Each case runs the command line in-process, as a user would."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest

from symzoo.cli import main
from zoo.storage import SPLITS, Manifest, ZooFormatError, load, open_zoo
from zoo.storage.verify import verify_zoo

GENERATE = ["generate", "--preset", "digits-mlp", "--n-models", "6", "--batch-models", "3", "--quiet"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str, *words: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("symzoo: error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def rows_by_index(zoo: Path) -> dict[int, bytes]:
    """Each listed model's weights by index; fails if a model is stored twice."""
    found: dict[int, bytes] = {}
    for shard in Manifest.load(zoo).shards:
        table = pq.read_table(zoo / shard.path, columns=["index", "weights"])
        for index, weights in zip(table.column("index").to_pylist(), table.column("weights").to_pylist()):
            assert index not in found, f"model {index} stored twice"
            found[index] = np.asarray(weights, np.float32).tobytes()
    return found


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("made") / "zoo"
    assert main([*GENERATE, "--out", str(out)]) == 0
    return out


@pytest.fixture
def zoo(made, tmp_path) -> Path:
    copy = tmp_path / "zoo"
    shutil.copytree(made, copy, ignore=shutil.ignore_patterns(".cache", ".lock"))
    return copy


def a_shard(zoo: Path, split: str = "train") -> Path:
    return zoo / next(s.path for s in Manifest.load(zoo).shards if s.split == split)


def flip_bytes(path: Path, count: int = 8) -> None:
    """Same length, other bytes: inside the weights, halfway through the file."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle, middle + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


# -- 3. adoption: only rows this zoo would have written -----------------------------------------------
def test_a_copy_of_a_shard_under_another_name_is_refused_not_adopted(zoo, capsys):
    before = (zoo / "zoo.json").read_text()
    copy = zoo / "data" / "train-9999999-copy.parquet"
    shutil.copy(a_shard(zoo), copy)
    code, _, err = run(capsys, *GENERATE, "--out", str(zoo))
    assert code == 2
    one_error_line(err, copy.name, "not adopted", "already has", "repair")
    assert (zoo / "zoo.json").read_text() == before  # nothing adopted
    problems = verify_zoo(zoo).problems
    assert len(problems) == 1 and copy.name in problems[0] and "cannot be this zoo's" in problems[0]
    assert run(capsys, "repair", str(zoo))[0] == 0
    assert not copy.exists() and list((zoo / "quarantine").rglob(copy.name))
    assert verify_zoo(zoo).ok and sorted(rows_by_index(zoo)) == list(range(6))


def test_a_shard_of_a_zoo_with_another_seed_is_refused(zoo, tmp_path, capsys):
    other = tmp_path / "other"
    assert main([*GENERATE, "--n-models", "9", "--seed", "7", "--out", str(other)]) == 0
    stranger = next(s for s in Manifest.load(other).shards if "0000006" in s.path)
    shutil.copy(other / stranger.path, zoo / stranger.path)  # models 6-8: new indices, another seed
    code, _, err = run(capsys, *GENERATE, "--n-models", "9", "--out", str(zoo))
    assert code == 2
    one_error_line(err, Path(stranger.path).name, "another zoo")
    assert sorted(rows_by_index(zoo)) == list(range(6))


def test_a_headerless_shard_of_another_seed_is_refused_by_its_rows(zoo, tmp_path, capsys):
    """Shards from before headers are judged by their rows: seed and hyperparameters must be what
    this zoo's spec gives at their indices."""
    other = tmp_path / "other"
    assert main([*GENERATE, "--n-models", "9", "--seed", "7", "--out", str(other)]) == 0
    stranger = next(s for s in Manifest.load(other).shards if "0000006" in s.path)
    table = pq.read_table(other / stranger.path)
    pq.write_table(table.replace_schema_metadata(None), zoo / stranger.path)
    code, _, err = run(capsys, *GENERATE, "--n-models", "9", "--out", str(zoo))
    assert code == 2
    one_error_line(err, Path(stranger.path).name, "another seed")


def test_a_lost_zoo_json_is_rebuilt_from_the_shards_not_retrained(zoo, capsys):
    before = json.loads((zoo / "zoo.json").read_text())
    weights = rows_by_index(zoo)
    (zoo / "zoo.json").unlink()
    code, _, err = run(capsys, *GENERATE, "--out", str(zoo))
    assert code == 2
    one_error_line(err, "no zoo.json", "symzoo repair")
    assert not (zoo / "zoo.json").exists()  # nothing adopted, nothing created
    code, out, _ = run(capsys, "repair", str(zoo))
    assert code == 0 and "rebuilt zoo.json" in out
    after = json.loads((zoo / "zoo.json").read_text())
    assert {k: v for k, v in after.items() if k != "software"} == {k: v for k, v in before.items() if k != "software"}
    assert verify_zoo(zoo).ok and rows_by_index(zoo) == weights
    code, out, _ = run(capsys, *GENERATE, "--out", str(zoo), "--json")
    assert code == 0 and json.loads(out)["trained"] == 0


# -- 4. damaged bytes are never served -----------------------------------------------------------------
def test_flipped_bytes_are_never_served_and_a_restored_file_serves_the_right_weights(zoo, capsys):
    shard = a_shard(zoo)
    good = load(zoo, "train", ["weights"])["weights"].copy()  # also builds the warm cache
    original = shard.read_bytes()
    flip_bytes(shard)
    with pytest.raises(ZooFormatError, match=f"{shard.name}: checksum mismatch"):
        load(zoo, "train", ["weights"])
    with pytest.raises(ZooFormatError, match="checksum mismatch"):
        open_zoo(zoo).rebuild(0, "train")
    code, _, err = run(capsys, *GENERATE, "--out", str(zoo))  # a resuming generate does not report success
    assert code == 2
    one_error_line(err, shard.name, "checksum mismatch", "symzoo repair")
    shard.write_bytes(original)
    assert np.array_equal(load(zoo, "train", ["weights"])["weights"], good)


def test_a_tampered_cache_is_rebuilt_from_the_verified_shards(zoo):
    good = load(zoo, "train", ["weights"])["weights"].copy()
    cache = next((zoo / ".cache").glob("train-weights-*.npy"))
    array = np.load(cache, mmap_mode="r+")
    array[0, :4] = 123.0
    array.flush()
    del array
    assert np.array_equal(load(zoo, "train", ["weights"])["weights"], good)


@pytest.mark.parametrize("damage", ["truncate", "delete", "flip"])
def test_repair_quarantines_a_damaged_shard_and_generate_retrains_exactly_its_models(zoo, made, damage, capsys):
    shard = a_shard(zoo, "validation")
    lost = pq.read_table(shard, columns=["index"]).column("index").to_pylist()
    if damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:100])
    elif damage == "delete":
        shard.unlink()
    else:
        flip_bytes(shard)
    code, _, err = run(capsys, *GENERATE, "--out", str(zoo))
    assert code == 2
    one_error_line(err, shard.name, "symzoo repair")
    code, out, _ = run(capsys, "repair", str(zoo), "--json")
    report = json.loads(out)
    assert code == 0 and report["dropped_models"] == len(lost)
    assert [q["file"] for q in report["quarantined"]] == [f"data/{shard.name}"]
    assert (damage == "delete") != any((zoo / "quarantine").rglob(shard.name))  # kept, never deleted
    code, out, _ = run(capsys, *GENERATE, "--out", str(zoo), "--json")
    assert code == 0 and json.loads(out)["trained"] == len(lost)
    assert verify_zoo(zoo).ok and rows_by_index(zoo) == rows_by_index(made)


def test_hdf5_exports_carry_checksums_that_verify_and_readers_check(zoo, tmp_path, capsys):
    out = tmp_path / "zoo.h5"
    assert run(capsys, "export", str(zoo), "--format", "hdf5", "--out", str(out))[0] == 0
    code, stdout, _ = run(capsys, "verify", str(out))
    assert code == 0 and "ok" in stdout
    with h5py.File(out, "r+") as f:
        f["weights"][0, :2] = [7.0, 7.0]
    code, _, err = run(capsys, "verify", str(out))
    assert code == 1 and "checksum mismatch in dataset 'weights'" in err
    with pytest.raises(ZooFormatError, match="checksum mismatch in dataset 'weights'"):
        open_zoo(out).load(SPLITS[0], ["weights"])
    assert open_zoo(out).load(SPLITS[0], ["test_acc"])["test_acc"].size  # undamaged columns still read


def edit_manifest(zoo: Path, change) -> None:
    data = json.loads((zoo / "zoo.json").read_text())
    change(data)
    (zoo / "zoo.json").write_text(json.dumps(data))


def _variant_to_w_asym(data: dict) -> None:
    data["arch"]["variant"] = "w_asym"


def _swap_offsets(data: dict) -> None:
    a, b = data["layout"][0], data["layout"][2]
    a["offset"], b["offset"] = b["offset"], a["offset"]


def _activation(data: dict) -> None:
    data["arch"]["activation"] = "gelu" if data["arch"].get("activation") != "gelu" else "relu"


@pytest.mark.parametrize("change", [_variant_to_w_asym, _swap_offsets, _activation])
def test_verify_and_readers_catch_a_manifest_that_disagrees_with_masks_and_shards(zoo, change, capsys):
    edit_manifest(zoo, change)
    assert not verify_zoo(zoo).ok
    with pytest.raises(ZooFormatError):
        open_zoo(zoo).rebuild(0, "train")
    code, _, err = run(capsys, "verify", str(zoo))
    assert code in (1, 2) and "Traceback" not in err and err.strip()


# -- 5. nothing written or read outside the zoo --------------------------------------------------------
def test_a_lock_planted_as_a_symlink_truncates_nothing(zoo, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (zoo / ".lock").unlink(missing_ok=True)
    (zoo / ".lock").symlink_to(victim)
    code, _, err = run(capsys, *GENERATE, "--out", str(zoo))
    assert code == 2
    one_error_line(err, "symbolic link")
    assert victim.read_text() == "precious"


def test_a_cache_planted_as_a_symlink_is_not_written_through(zoo, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (zoo / ".cache").symlink_to(elsewhere, target_is_directory=True)
    monkeypatch.setenv("SYMZOO_CACHE", str(tmp_path / "user-cache"))
    assert load(zoo, "train", ["weights"])["weights"].shape[0]
    assert not any(elsewhere.iterdir())


@pytest.mark.parametrize("field, value", [
    ("shard", "../outside.parquet"), ("shard", "/tmp/outside.parquet"), ("shard", "data/../../x-1.parquet"),
    ("fixed_file", "../fixed.npz"), ("fixed_file", "/etc/passwd"),
])
def test_paths_in_zoo_json_cannot_leave_the_zoo(zoo, field, value, capsys):
    def change(data: dict) -> None:
        if field == "shard":
            data["shards"][0]["path"] = value
        else:
            data["fixed_file"] = value

    edit_manifest(zoo, change)
    code, _, err = run(capsys, "info", str(zoo))
    assert code == 2
    one_error_line(err, repr(value))
    assert not verify_zoo(zoo).ok


def test_generate_into_a_non_empty_directory_that_is_no_zoo_overwrites_nothing(tmp_path, capsys):
    folder = tmp_path / "mine"
    (folder / "data").mkdir(parents=True)
    files = {"README.md": "my notes", "fixed.npz": "not numpy", "data/notes.txt": "keep"}
    for name, text in files.items():
        (folder / name).write_text(text)
    code, _, err = run(capsys, *GENERATE, "--out", str(folder))
    assert code == 2
    one_error_line(err, "not empty", "no zoo")
    assert {name: (folder / name).read_text() for name in files} == files
    assert sorted(p.name for p in folder.iterdir() if p.name != ".lock") == ["README.md", "data", "fixed.npz"]


def test_creation_interrupted_before_zoo_json_resumes(tmp_path, capsys, monkeypatch):
    """A crash while a new zoo's first files are written leaves a directory that is not yet a zoo;
    the same command must still go on (the crash-point sweep in test_crash_safety hits this too)."""
    from zoo.storage import writer

    out = tmp_path / "zoo"
    monkeypatch.setattr(writer.Manifest, "save", lambda self, d: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert main([*GENERATE, "--out", str(out)]) == 130  # Ctrl-C: one line, what is kept
    assert f"interrupted: no model was stored in {out} yet; run the same command again" in capsys.readouterr().err
    monkeypatch.undo()
    assert (out / ".creating").exists() and not (out / "zoo.json").exists()
    assert run(capsys, *GENERATE, "--out", str(out))[0] == 0
    assert verify_zoo(out).ok and sorted(rows_by_index(out)) == list(range(6))
    assert not (out / ".creating").exists()


def test_foreign_files_in_data_are_not_read_by_huggingface_datasets(zoo):
    """The dataset card lists the zoo's files, not a glob: an unlisted file is never part of it."""
    datasets = pytest.importorskip("datasets")
    shutil.copy(a_shard(zoo), zoo / "data" / "train-9999999-copy.parquet")
    loaded = datasets.load_dataset(str(zoo), split="train")
    assert len(loaded) == open_zoo(zoo).num_rows("train")
    os.remove(zoo / "data" / "train-9999999-copy.parquet")
