"""Metanet checkpoints (issue 14 §1): ``metanet predict`` reproduces ``train``'s metrics from the
file, and never runs code from a file it is handed, however it is crafted or damaged."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from metanets.checkpoint import CHECKPOINT_FILE, CheckpointError, MetanetCheckpoint
from tests.helpers import digits_zoo_spec
from symzoo.cli import main
from zoo.errors import SymzooError, one_line


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory) -> Path:
    from generators.generate import generate

    out = tmp_path_factory.mktemp("checkpoint") / "digits"
    generate(digits_zoo_spec(48), out, quiet=True)
    return out


# with a feature normalizer, without one, and with a per-tensor weight normalizer and sigmoid head
@pytest.fixture(scope="module", params=[("statnn",), ("mlp",), ("mlp", "--normalize", "--sigmoid")],
                ids=["statnn", "mlp", "mlp-normalized-sigmoid"])
def trained(request, zoo_dir, tmp_path_factory) -> tuple[Path, dict]:
    """A metanet trained by the command line (one seed, so its test metrics are the saved model's)."""
    model, *options = request.param
    out = tmp_path_factory.mktemp(f"run-{model}")
    assert main(["metanet", "train", "--zoo", str(zoo_dir), "--model", model, "--seeds", "1",
                 "--epochs", "3", "--lrs", "1e-3", "--out", str(out), "--quiet", *options]) == 0
    return out / CHECKPOINT_FILE, json.loads((out / "results.json").read_text())


def _predict(metanet: Path, zoo: Path, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["metanet", "predict", "--metanet", str(metanet), "--zoo", str(zoo), "--json"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_refused(code: int, out: str, err: str, path: Path) -> None:
    """Exit 2, nothing on stdout, one printable line on stderr naming the file and what it should be,
    without advice to open it unsafely."""
    assert code == 2 and out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert all(c.isprintable() for c in err[:-1]), repr(err)
    assert one_line(str(path)) in err  # named, with any terminal escape codes removed
    assert "written by 'symzoo metanet train'" in err
    assert "weights_only" not in err


def test_predict_reproduces_the_training_metrics(trained, zoo_dir, capsys):
    path, result = trained
    code, out, _ = _predict(path, zoo_dir, capsys)
    assert code == 0
    predicted = json.loads(out)
    for split, key in (("test", "test"), ("validation", "val")):
        assert predicted[split]["r2"] == pytest.approx(result[key]["r2"], abs=1e-6)
        assert predicted[split]["kendall_tau"] == pytest.approx(result[key]["kendall_tau"], abs=1e-6)
    assert result["files"]["metanet"] == str(path)


def test_checkpoint_round_trips_exactly(trained, tmp_path):
    path, result = trained
    saved = MetanetCheckpoint.load(path)
    assert dataclasses.asdict(saved.config) == {k: tuple(v) if isinstance(v, list) else v
                                                for k, v in result["config"].items()}
    assert (saved.input_dim, saved.view) == (result["input_dim"], result["view"])
    assert (saved.normalizer is not None) == saved.config.normalize == (result["view"] == "statistics"
                                                                        or result["config"]["normalize"])
    copy = tmp_path / "copy.safetensors"
    saved.save(copy)
    again = MetanetCheckpoint.load(copy)
    assert again.config == saved.config and again.zoo == saved.zoo
    assert saved.state_dict.keys() == again.state_dict.keys()
    assert all(torch.equal(saved.state_dict[k], again.state_dict[k]) for k in saved.state_dict)
    if saved.normalizer is not None:
        assert all(torch.equal(a, b) for a, b in zip(saved.normalizer, again.normalizer))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left by the atomic write


class _Payload:
    """Unpickling this creates ``marker``: proof that a loader ran code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _legacy_dict(path: Path) -> dict:
    """What older symzoo wrote to ``metanet.pt``, rebuilt from a genuine checkpoint."""
    saved = MetanetCheckpoint.load(path)
    return {"config": dataclasses.asdict(saved.config), "input_dim": saved.input_dim, "view": saved.view,
            "state_dict": saved.state_dict, "normalizer": saved.normalizer, "zoo": saved.zoo}


@pytest.mark.parametrize("kind", ["torch_save", "plain_pickle", "genuine_with_payload_field"])
def test_a_planted_payload_never_runs(kind, trained, zoo_dir, tmp_path, capsys):
    marker = tmp_path / "pwned"
    crafted = tmp_path / "metanet.pt"
    if kind == "torch_save":
        torch.save(_Payload(marker), crafted)
    elif kind == "plain_pickle":
        crafted.write_bytes(pickle.dumps(_Payload(marker)))
    else:
        torch.save({**_legacy_dict(trained[0]), "notes": _Payload(marker)}, crafted)
    assert not marker.exists()
    _assert_refused(*_predict(crafted, zoo_dir, capsys), crafted)
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        MetanetCheckpoint.load(crafted)
    assert not marker.exists()


def _parts(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}


def _rewrite(source: Path, target: Path, edit_header=None, edit_tensors=None, reseal: bool = True) -> None:
    """A copy of ``source`` with its JSON header and/or tensors edited; ``reseal`` recomputes the
    checksum, so that the edit reaches the field checks rather than stopping at the checksum."""
    from metanets.checkpoint import _digest

    metadata, tensors = _parts(source)
    header = json.loads(metadata["metanet"])
    if edit_header:
        edit_header(header)
    if edit_tensors:
        edit_tensors(tensors)
    metadata["metanet"] = json.dumps(header)
    if reseal:
        metadata["sha256"] = _digest(metadata["metanet"], tensors)
    save_file(tensors, str(target), metadata=metadata)


def _first_state(tensors: dict) -> str:
    return next(k for k in sorted(tensors) if k.startswith("state_dict/"))


DAMAGE = {
    "empty": lambda src, dst: dst.write_bytes(b""),
    "truncated_to_half": lambda src, dst: dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2]),
    "truncated_by_one_byte": lambda src, dst: dst.write_bytes(src.read_bytes()[:-1]),
    "garbage": lambda src, dst: dst.write_bytes(bytes(range(256)) * 8),
    "flipped_weight_bytes": lambda src, dst: dst.write_bytes(src.read_bytes()[:-16] + bytes(
        b ^ 0xFF for b in src.read_bytes()[-16:])),
    "edited_header_unsealed": lambda src, dst: _rewrite(src, dst, lambda h: h.update(input_dim=h["input_dim"] + 1),
                                                        reseal=False),
    "missing_field": lambda src, dst: _rewrite(src, dst, lambda h: h.pop("input_dim")),
    "extra_field": lambda src, dst: _rewrite(src, dst, lambda h: h.update(payload="x")),
    "input_dim_a_string": lambda src, dst: _rewrite(src, dst, lambda h: h.update(input_dim="abc")),
    "input_dim_a_bool": lambda src, dst: _rewrite(src, dst, lambda h: h.update(input_dim=True)),
    "config_not_an_object": lambda src, dst: _rewrite(src, dst, lambda h: h.update(config=[1, 2])),
    "config_epochs_a_string": lambda src, dst: _rewrite(src, dst, lambda h: h["config"].update(epochs="many")),
    "config_unknown_field": lambda src, dst: _rewrite(src, dst, lambda h: h["config"].update(__class__="x")),
    "config_unknown_model": lambda src, dst: _rewrite(src, dst, lambda h: h["config"].update(model="\x1b[2Jgpt")),
    "config_no_model": lambda src, dst: _rewrite(src, dst, lambda h: h["config"].pop("model")),
    "view_of_another_metanet": lambda src, dst: _rewrite(src, dst, lambda h: h.update(view="flat")),
    "extra_tensor": lambda src, dst: _rewrite(src, dst, edit_tensors=lambda t: t.update(extra=torch.zeros(1))),
    "no_weights": lambda src, dst: _rewrite(src, dst, edit_tensors=lambda t: [t.pop(k) for k in list(t)
                                                                             if k.startswith("state_dict/")]),
    "weight_of_wrong_shape": lambda src, dst: _rewrite(src, dst, edit_tensors=lambda t: t.update(
        {_first_state(t): torch.zeros(3, 1, 7)})),
    "weight_missing": lambda src, dst: _rewrite(src, dst, edit_tensors=lambda t: t.pop(_first_state(t))),
    "normalizer_half": lambda src, dst: _rewrite(src, dst, edit_tensors=lambda t: t.update(
        {"normalizer/mean": torch.zeros(3)})),
    "a_directory": lambda src, dst: dst.mkdir(),
    "not_there": lambda src, dst: None,
    "wrong_version": lambda src, dst: save_file(_parts(src)[1], str(dst), {**_parts(src)[0], "version": "99"}),
    "no_symzoo_header": lambda src, dst: save_file(_parts(src)[1], str(dst), {"format": "pt"}),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_or_hand_edited_checkpoint_is_refused_in_one_line(damage, trained, zoo_dir, tmp_path, capsys):
    damaged = tmp_path / "metanet\x1b[31m.safetensors"  # a file name that would colour the terminal
    DAMAGE[damage](trained[0], damaged)
    _assert_refused(*_predict(damaged, zoo_dir, capsys), damaged)


def test_a_checkpoint_refuses_inconsistent_fields(trained):
    saved = MetanetCheckpoint.load(trained[0])
    with pytest.raises(SymzooError, match="normalizer"):
        dataclasses.replace(saved, normalizer=None if saved.normalizer is not None else (torch.zeros(3),) * 2)
    with pytest.raises(SymzooError, match="input_dim"):
        dataclasses.replace(saved, input_dim=0)


def test_cifar10_batches_are_unpickled_only_after_their_md5_matches(tmp_path):
    """The one file symzoo unpickles: a planted CIFAR-10 batch is refused by its checksum before it
    is unpickled, so its payload never runs."""
    from generators.data import _CIFAR10, DataError, load_images

    marker = tmp_path / "pwned"
    for name in _CIFAR10.md5:
        (tmp_path / name).write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(DataError, match="data_batch_1: md5 .* does not match"):
        load_images("cifar10", tmp_path)
    assert not marker.exists()


def test_a_checkpoint_written_before_the_normalize_option_reads_as_it_was_trained(trained, tmp_path):
    """Older files have no ``normalize`` in their config: only statistics-view metanets were
    normalised then, so the missing field means exactly that (a gmn would otherwise default to on)."""
    path, _ = trained
    saved = MetanetCheckpoint.load(path)
    if saved.config.sigmoid:
        pytest.skip("older files have no sigmoid head either")
    legacy = tmp_path / "legacy.safetensors"

    def drop_options(header: dict) -> None:
        for option in ("normalize", "sigmoid", "augment"):
            del header["config"][option]

    _rewrite(path, legacy, edit_header=drop_options)
    assert MetanetCheckpoint.load(legacy).config == saved.config


@pytest.fixture(scope="module")
def w_asym_zoo_dir(tmp_path_factory) -> Path:
    from generators.generate import generate

    out = tmp_path_factory.mktemp("checkpoint") / "digits-wasym"
    generate(digits_zoo_spec(24, variant="w_asym"), out, quiet=True)
    return out


def test_predict_names_the_variant_a_metanet_was_trained_on(trained, w_asym_zoo_dir, capsys):
    path, _ = trained
    saved = MetanetCheckpoint.load(path)
    assert saved.arch["variant"] == "standard" and saved.arch["family"] == "mlp"
    code, out, err = _predict(path, w_asym_zoo_dir, capsys)
    if saved.config.model == "statnn":  # per-tensor statistics fit any variant: scored, with a warning
        assert code == 0 and json.loads(out)["test"]
        assert "warning: it was trained on a standard zoo, this zoo is w_asym" in err and err.count("\n") == 1
    else:  # the trainable entries differ in number: refused, naming both variants
        assert code == 2 and out == ""
        assert "trained on a standard zoo, this zoo is w_asym" in err and err.count("\n") == 1


def test_a_checkpoint_written_before_the_arch_was_kept_still_predicts(trained, zoo_dir, tmp_path, capsys):
    path, result = trained
    legacy = tmp_path / "legacy.safetensors"
    _rewrite(path, legacy, edit_header=lambda header: header.pop("arch"))
    assert MetanetCheckpoint.load(legacy).arch is None
    code, out, err = _predict(legacy, zoo_dir, capsys)
    assert code == 0 and "warning" not in err
