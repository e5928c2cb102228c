"""Every bad input: one line ``symzoo: error: ...`` on stderr, exit status 2, no traceback, and
nothing already written lost (issue 14, section 6; and the bench config's zoo names, section 5).

Commands run in-process through ``symzoo.cli.main``. Read-only folders are simulated (see
``read_only``): the tests run as root in CI, and root writes through permission bits.
"""

from __future__ import annotations

import builtins
import dataclasses
import errno
import hashlib
import io
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from generators.generate import generate
from generators.zoospec import get_zoo_spec
from symzoo.cli import main
from zoo.layout import ParamLayout
from zoo.nets import VARIANTS, get_arch
from zoo.nets.presets import preset_names
from zoo.storage import open_zoo
from zoo.storage.verify import verify_zoo


def fails(capsys: pytest.CaptureFixture[str], argv: list[str], *words: str) -> str:
    """Run ``symzoo argv``; assert exit 2 and one error line holding ``words``; return that line."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    line = err.splitlines()[0]
    assert line.startswith("symzoo: error: "), line
    for word in words:
        assert word in line, line
    return line


def snapshot(folder: Path) -> dict[str, str]:
    """Checksums of every file a user keeps (hidden files, the lock and caches, left out)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)}


@pytest.fixture(scope="module")
def zoo4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four digits MLPs: splits of 1, 3 and 0 models (the test split is empty)."""
    out = tmp_path_factory.mktemp("zoo4") / "zoo"
    generate(dataclasses.replace(get_zoo_spec("digits-mlp"), n_models=4), out, device="cpu", quiet=True)
    assert open_zoo(out).num_rows("test") == 0 and open_zoo(out).num_rows() == 4
    return out


@pytest.fixture
def read_only(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], None]:
    """``read_only(folder)`` makes ``folder`` behave as on a read-only mount for this process:
    creating a folder or opening a file for writing inside it fails with EROFS (``os.open``,
    ``os.mkdir``, ``open``). Writes made inside C libraries (Arrow, HDF5) are not intercepted."""
    folders: list[Path] = []
    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

    def inside(path: object) -> bool:
        if not isinstance(path, (str, bytes, os.PathLike)):
            return False  # a file descriptor
        resolved = Path(os.fsdecode(path)).resolve()
        return any(resolved == f or f in resolved.parents for f in folders)

    def deny(path: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))  # type: ignore[arg-type]

    def fake_open(file: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        if any(c in mode for c in "wax+") and inside(file):
            deny(file)
        return real_open(file, mode, *args, **kwargs)  # type: ignore[call-overload]

    def fake_os_open(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
            deny(path)
        return real_os_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    def fake_mkdir(path: object, *args: object, **kwargs: object) -> None:
        if inside(path):
            if os.path.exists(path):  # type: ignore[arg-type]
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fsdecode(path))  # type: ignore[arg-type]
            deny(path)
        real_mkdir(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    return lambda folder: folders.append(Path(folder).resolve())


def zoo_config(tmp_path: Path, **changes: object) -> Path:
    """A digits zoo config of 2 models with ``changes`` (nested mappings merged one level deep)."""
    data = get_zoo_spec("digits-mlp").to_dict() | {"n_models": 2}
    for key, value in changes.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    path = tmp_path / "zoo.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# -- generate: where the zoo goes -----------------------------------------------------------------
def test_generate_out_at_a_file_or_under_one(tmp_path, capsys):
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    fails(capsys, ["generate", "--preset", "digits-mlp", "--n-models", "2", "--out", file, "--quiet"],
          str(file), "File exists", "choose another path")
    fails(capsys, ["generate", "--preset", "digits-mlp", "--n-models", "2", "--out", file / "zoo", "--quiet"],
          str(file / "zoo"), "Not a directory")
    assert file.read_text() == "mine" and sorted(tmp_path.iterdir()) == [file]


def test_generate_into_a_read_only_folder(tmp_path, capsys, read_only):
    folder = tmp_path / "ro"
    folder.mkdir()
    read_only(folder)
    fails(capsys, ["generate", "--preset", "digits-mlp", "--n-models", "2", "--out", folder / "zoo", "--quiet"],
          str(folder / "zoo"), "Read-only file system", "writable path")
    assert not any(folder.iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits; "
                    "test_generate_into_a_read_only_folder simulates a read-only mount instead")
def test_generate_into_a_folder_without_write_permission(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        fails(capsys, ["generate", "--preset", "digits-mlp", "--n-models", "2", "--out", folder / "zoo", "--quiet"],
              str(folder / "zoo"), "Permission denied")
    finally:
        folder.chmod(0o755)
    assert not any(folder.iterdir())


def test_generate_on_a_full_disk_keeps_what_is_stored_and_resumes(tmp_path, capsys, zoo4, monkeypatch):
    zoo = tmp_path / "zoo"
    shutil.copytree(zoo4, zoo)
    before = snapshot(zoo)

    def disk_full(fd: int) -> None:  # where a full disk shows itself at the latest: the fsync of a write
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", disk_full)
        fails(capsys, ["generate", "--preset", "digits-mlp", "--n-models", "6", "--out", zoo, "--quiet"],
              str(zoo), "No space left on device", "run the same command again")
    assert snapshot(zoo) == before and verify_zoo(zoo).ok and open_zoo(zoo).num_rows() == 4
    assert main(["generate", "--preset", "digits-mlp", "--n-models", "6", "--out", str(zoo), "--quiet"]) == 0
    assert open_zoo(zoo).num_rows() == 6 and verify_zoo(zoo).ok


# -- generate: the zoo config, refused before anything is created ---------------------------------
MLP_784 = {"family": "mlp", "in_features": 784, "widths": [8], "out_features": 10}
CNN_RGB = {"family": "cnn", "in_channels": 3, "image_size": 8, "channels": [4], "num_classes": 10}


@pytest.mark.parametrize("changes, words", [
    ({"hyperparameters": {"lr": {"kind": "log10_uniform", "low": float("nan"), "high": -1.0}}},
     ["hyperparameters.lr", "finite", "nan"]),
    ({"hyperparameters": {"lr": {"kind": "log10_uniform", "low": -4.0, "high": float("inf")}}},
     ["hyperparameters.lr", "finite", "inf"]),
    ({"arch": MLP_784}, ["arch", "digits", "(1, 8, 8)", "64 features"]),
    ({"arch": CNN_RGB}, ["arch", "(3, 8, 8)", "digits", "(1, 8, 8)"]),
    ({"arch": {**MLP_784, "in_features": 64, "out_features": 5}}, ["arch", "5 outputs", "10 outputs"]),
    ({"hyperparameters": {"epochs": {"kind": "fixed", "low": 2.5}}}, ["hyperparameters", "epochs", "whole numbers", "2.5"]),
    ({"checkpoint_epochs": [0, 1, 50]}, ["checkpoint_epochs", "[0, 1, 50]", "0 to 20"]),
    ({"hyperparameters": {"lr": {"kind": "log10_uniform", "low": -4.0, "high": -1.0, "foo": 1}}},
     ["unknown field(s) hyperparameters.lr.foo", "high, kind, low, scale"]),
    ({"arch": {**MLP_784, "in_features": 64, "widths": [10_000_000, 10_000_000]}}, ["arch", "weights", "at most"]),
])
def test_generate_refuses_a_bad_zoo_config_before_creating_anything(tmp_path, capsys, changes, words):
    config = zoo_config(tmp_path, **changes)
    line = fails(capsys, ["generate", "--config", config, "--out", tmp_path / "zoo", "--quiet"], str(config), *words)
    assert "\n" not in line
    assert not (tmp_path / "zoo").exists()


def test_absurd_architecture_is_refused_before_it_is_built(tmp_path, capsys):
    spec = tmp_path / "huge.yaml"
    for widths, words in [("[10000000, 10000000]", ["100,000,760,000,010 weights", "at most 1,000,000,000"]),
                          ("[1.0e+7, 1.0e+7]", ["widths", "int"]),  # YAML floats
                          ("[1e7, 1e7]", ["widths", "int"])]:  # YAML 1.1 reads these as strings
        spec.write_text(f"family: mlp\nin_features: 64\nwidths: {widths}\nout_features: 10\n")
        fails(capsys, ["arch", "describe", spec], str(spec), *words)


def test_weight_counts_are_computed_without_building_and_match_the_built_networks():
    for name in preset_names():
        for variant in VARIANTS:
            spec = get_arch(name, variant)
            assert spec.num_weights() == ParamLayout.from_module(spec.build()).size, (name, variant)


# -- metanet train --------------------------------------------------------------------------------
@pytest.mark.parametrize("lr", ["-1", "0", "nan", "inf"])
def test_metanet_train_refuses_learning_rates_that_are_not_positive(capsys, zoo4, lr):
    fails(capsys, ["metanet", "train", "--zoo", zoo4, "--model", "mlp", "--lrs", "1e-3", lr, "--quiet"],
          "lrs", "> 0")


def test_metanet_train_on_a_read_only_zoo_says_so_before_training(capsys, zoo4, read_only, monkeypatch):
    import metanets.cli

    monkeypatch.setattr(metanets.cli, "train_metanet", lambda *a, **k: pytest.fail("trained before checking --out"))
    read_only(zoo4)
    fails(capsys, ["metanet", "train", "--zoo", zoo4, "--model", "mlp", "--quiet"],
          str(zoo4 / "metanets" / "mlp-test_acc"), "cannot write", "--out")


def test_statnn_on_a_zoo_with_an_empty_split(capsys, zoo4):
    fails(capsys, ["metanet", "train", "--zoo", zoo4, "--model", "statnn", "--quiet"],
          str(zoo4), "at least 2", "test 0")


# -- info, export, verify -------------------------------------------------------------------------
def test_info_on_a_read_only_zoo_prints_the_info_and_skips_the_histogram(tmp_path, capsys, zoo4, read_only):
    zoo = tmp_path / "zoo"
    shutil.copytree(zoo4, zoo)
    before = snapshot(zoo)
    read_only(zoo)
    assert main(["info", str(zoo)]) == 0
    out, err = capsys.readouterr()
    assert "4 models" in out and "test_acc" in out and "Traceback" not in err
    assert len(err.splitlines()) == 1 and "read-only" in err and "--plot" in err
    assert snapshot(zoo) == before


@pytest.mark.parametrize("where, words", [
    (lambda tmp: tmp, ["is a directory"]),
    (lambda tmp: tmp / "missing" / "zoo.h5", ["does not exist"]),
    (lambda tmp: tmp / "file.txt" / "zoo.h5", ["is not a folder"]),
    (lambda tmp: tmp / "ro" / "zoo.h5", ["read-only"]),
])
def test_export_to_a_path_it_cannot_write(tmp_path, capsys, zoo4, read_only, where, words):
    (tmp_path / "file.txt").write_text("mine")
    (tmp_path / "ro").mkdir()
    read_only(tmp_path / "ro")
    out = where(tmp_path)
    fails(capsys, ["export", zoo4, "--format", "hdf5", "--out", out], f"--out {out}", *words, "writable folder")
    assert (tmp_path / "file.txt").read_text() == "mine" and not any((tmp_path / "ro").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "ro"]


def test_verify_on_a_missing_path(tmp_path, capsys):
    fails(capsys, ["verify", tmp_path / "nowhere"], str(tmp_path / "nowhere"), "no such zoo")


# -- wrapped torch messages -----------------------------------------------------------------------
def test_wrapped_torch_errors_keep_the_reason_without_escapes_or_unsafe_advice(tmp_path, capsys):
    src = tmp_path / "paper-zoo"
    src.mkdir()
    # a pickle calling os.system, its module name carrying terminal escapes: torch refuses it and
    # quotes the name back, with bold text and advice to load it unsafely
    (src / "0.pt").write_bytes(b"\x80\x02cos\x1b[2J\x1b[31m\nsystem\nX\x02\x00\x00\x00hi\x85R.")
    line = fails(capsys, ["import", "seed-pt", src, "--out", tmp_path / "zoo"], str(src / "0.pt"),
                 "not a readable torch file", "Unsupported global", "os.system")
    assert "\x1b" not in line and "weights_only" not in line and "trust" not in line
    assert not (tmp_path / "zoo").exists()

    from zoo.errors import clean_message

    message = clean_message(RuntimeError("\x1b[1mbold\x1b[0m reason\n\tsecond line\x07"))
    assert message == "bold reason second line\\x07"


# -- bench configs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".", ""])
def test_bench_zoo_names_stay_inside_out(tmp_path, capsys, name):
    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump({"name": "b", "metanets": [{"model": "mlp"}], "zoos": [
        {"name": "ok", "preset": "digits-mlp", "overrides": {"n_models": 2}},
        {"name": name, "preset": "digits-mlp", "overrides": {"n_models": 2}}]}))
    out = tmp_path / "a" / "b" / "board"
    fails(capsys, ["bench", "run", config, "--out", out, "--quiet"], str(config), "zoos[1]", "zoo name", "plain folder name")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.yaml"]


def test_leaderboard_html_escapes_user_text(tmp_path, capsys, zoo4, monkeypatch):
    import benchmarks.leaderboard as leaderboard

    def fake_cell(zoo: str, zoo_dir: str, setting: object, target: str, augment: bool = False,
                  quiet: bool = False) -> dict[str, object]:
        stats = {"mean": 0.5, "std": 0.1}
        return {"zoo": zoo, "metanet": "mlp", "zoo_dir": zoo_dir, "test_r2": stats, "test_kendall_tau": stats,
                "val_r2": stats, "val_kendall_tau": stats, "lr": 1e-3, "seeds": 1, "seconds": 1.0,
                "device": "<img src=x onerror=alert(2)>"}

    monkeypatch.setattr(leaderboard, "run_cell", fake_cell)
    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump({"name": "<script>alert(1)</script>", "metanets": [{"model": "mlp"}],
                                      "zoos": [{"name": "a<b>&c", "path": str(zoo4)}]}))
    assert main(["bench", "run", str(config), "--out", str(tmp_path / "board"), "--quiet"]) == 0
    capsys.readouterr()
    page = (tmp_path / "board" / "leaderboard.html").read_text()
    assert "<script>" not in page and "<img src=x" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "a&lt;b&gt;&amp;c" in page
