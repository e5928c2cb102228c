"""Issue 18, newcomer problems of ``symzoo bench bnn|mli|lmc``: BNN runs with other settings in one
``--out`` keep each other's results, the figures say what they show and keep their labels apart,
messages state the counts actually used, and every option's ``--help`` gives its meaning and default.
Small and fast: scikit-learn's digits, a 2-layer MLP of width 16, zoos of 6 models, figures from
hand-made reports."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re

import numpy as np
import pytest

from benchmarks import bnn, lmc, mli
from benchmarks.report import add_run_options
from generators.generate import generate
from generators.zoospec import Dist, HyperparameterSpace, get_zoo_spec
from symzoo.cli import main

TINY = ["bench", "bnn", "--settings", "mlp8", "--dataset", "digits", "--full-train", "--depth", "2", "--width", "16",
        "--epochs", "2", "--instances", "1", "--batch-size", "128", "--samples", "3", "--curve-samples", "2",
        "--variants", "standard", "--quiet"]


def _no_training(monkeypatch):
    monkeypatch.setattr(bnn, "fit_variational", lambda *a, **k: pytest.fail("a saved run was trained again"))


def _bnn(capsys, *argv: str) -> dict:
    assert main([*TINY, *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# -- 1: BNN runs keyed by their settings ---------------------------------------------------------------
def test_bnn_runs_with_other_settings_in_one_out_keep_both(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "bnn")
    first = _bnn(capsys, "--out", out)
    second = _bnn(capsys, "--out", out, "--epochs", "3")  # other settings, same folder
    files = sorted(p.name for p in (tmp_path / "bnn" / "runs").iterdir())
    assert len(files) == 2 and all(re.fullmatch(r"mlp8-digits-standard-seed0-[0-9a-f]{10}\.json", f) for f in files)
    (run1,), (run2,) = first["runs"], second["runs"]
    assert run1["file"] != run2["file"] and len(run1["curves"]["test_acc"]) == 2 and len(run2["curves"]["test_acc"]) == 3
    assert json.loads((tmp_path / "bnn" / run1["file"]).read_text())["test_acc"] == run1["test_acc"]

    # the same commands again train nothing and give the same results
    _no_training(monkeypatch)
    assert _bnn(capsys, "--out", out)["rows"] == first["rows"]
    assert _bnn(capsys, "--out", out, "--epochs", "3")["rows"] == second["rows"]
    # a run name does not depend on the process: the settings' hash is stable
    setting = dataclasses.replace(bnn.BNN_SETTINGS["mlp8"], dataset="digits")
    assert bnn.run_file_name(setting, "standard", 0) == bnn.run_file_name(setting, "standard", 0)
    assert bnn.run_file_name(setting, "standard", 0) != bnn.run_file_name(setting, "standard", 1)


def test_bnn_refuses_a_run_file_made_with_other_settings(tmp_path, capsys):
    out = tmp_path / "bnn"
    (run,) = _bnn(capsys, "--out", str(out))["runs"]
    path = out / run["file"]
    stored = json.loads(path.read_text())
    stored["config"]["train"]["epochs"] = 7  # as if another version of the settings had written it
    path.write_text(json.dumps(stored))
    before = path.read_bytes()
    assert main([*TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(path) in err and "other settings" in err and "train.epochs 7 there, 2 now" in err
    assert path.read_bytes() == before  # refused, not overwritten


def test_bnn_reads_run_files_saved_before_runs_were_keyed(tmp_path, capsys, monkeypatch):
    out = tmp_path / "bnn"
    (run,) = _bnn(capsys, "--out", str(out))["runs"]
    legacy = out / "runs" / "mlp8-standard-0.json"  # the old name: setting, variant, instance
    (out / run["file"]).rename(legacy)
    before = legacy.read_bytes()
    _no_training(monkeypatch)
    report = _bnn(capsys, "--out", str(out))
    assert report["runs"][0]["file"] == "runs/mlp8-standard-0.json" and report["runs"][0]["test_acc"] == run["test_acc"]
    assert legacy.read_bytes() == before and [p.name for p in (out / "runs").iterdir()] == [legacy.name]


# -- 2: bnn.png says what its curves and the table's numbers are ------------------------------------------
def _bnn_report(setting: bnn.BNNSetting, test_images: int) -> dict:
    epochs = setting.train.epochs
    runs = [{"setting": setting.name, "variant": v, "instance": i, "status": "ok", "test_acc": 0.47 + 0.01 * i,
             "test_nll": 1.2, "curves": {"test_acc": list(np.linspace(0.1, 0.43, epochs)),
                                         "test_nll": list(np.linspace(2.3, 1.3, epochs))}}
            for v in ("standard", "w_asym") for i in range(2)]
    return {"settings": {setting.name: {"test_images": test_images}}, "variants": ["standard", "w_asym"], "runs": runs}


def test_bnn_figure_marks_the_tables_final_test_and_says_how_each_is_measured(tmp_path):
    setting = bnn.BNN_SETTINGS["mlp16"]  # CPU scale: curves 5 samples on 2,000 images, final 25 on all
    fig = bnn._plot(_bnn_report(setting, 10_000), [setting], tmp_path / "bnn.png")
    assert (tmp_path / "bnn.png").read_bytes()[:4] == b"\x89PNG"
    caption = " ".join(fig._supxlabel.get_text().split())
    assert "5 samples on the first 2,000 test images" in caption
    assert "the table's final test, 25 samples on all 10,000 test images" in caption
    acc = fig.axes[0]
    # the final test's mean (0.475, as in the table) is drawn right of the last epoch, beside the curves
    finals = [line for line in acc.get_lines() if line.get_marker() == "D" and len(line.get_xdata()) == 1]
    assert len(finals) == 2 and all(line.get_xdata()[0] > setting.train.epochs for line in finals)
    assert all(line.get_ydata()[0] == pytest.approx(0.475) for line in finals)
    assert "final test (table)" in [t.get_text() for t in acc.get_legend().get_texts()]


def test_bnn_report_states_the_real_image_counts(tmp_path, capsys):
    report = _bnn(capsys, "--out", str(tmp_path / "bnn"))
    describe = report["settings"]["mlp8"]["describe"]
    assert "all 1,347 training images" in describe and "3 samples on all 450 test images" in describe
    assert "2 samples on all 450 test images" in describe  # the curves' 2,000 is more than digits has


# -- 3: mli.png histogram -----------------------------------------------------------------------------------
def _drawn(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


@pytest.mark.parametrize("deltas", [[3e-4], [-0.0271, -0.02705, -0.0270], list(np.linspace(-0.2, 0.15, 300))])
def test_mli_histogram_has_apart_x_labels_and_whole_counts(tmp_path, deltas):
    rows = {v: {"models": [{"delta": d, "loss": [2.0, 1.5, 1.0, 0.6, 0.2]} for d in deltas]} for v in ("standard", "w_asym")}
    fig = mli._plot({"points": 5, "models": len(deltas), "dataset": "digits", "variants": rows}, tmp_path / "mli.png")
    assert (tmp_path / "mli.png").read_bytes()[:4] == b"\x89PNG"
    renderer, hist = _drawn(fig), fig.axes[1]
    labels = [t.get_window_extent(renderer) for t in hist.get_xticklabels() if t.get_text()]
    assert 2 <= len(labels) <= 8
    assert not any(a.overlaps(b) for i, a in enumerate(labels) for b in labels[i + 1 :])
    assert all(float(y).is_integer() for y in hist.get_yticks())


# -- 4: messages state the counts used -------------------------------------------------------------------
def test_mli_says_when_the_zoo_has_fewer_models_than_asked(tmp_path, capsys):
    spec = dataclasses.replace(get_zoo_spec("digits-mlp"), n_models=6, batch_models=6,
                               hyperparameters=dataclasses.replace(HyperparameterSpace(), epochs=Dist("int_uniform", 1, 2)))
    generate(spec, tmp_path / "zoo", quiet=True)
    argv = ["bench", "mli", "--zoo", str(tmp_path / "zoo"), "--out", str(tmp_path / "mli"), "--models", "300",
            "--points", "3", "--json"]
    assert main([*argv, "--quiet"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    used = report["models"]
    expected = ("mli: the zoo has 6 models; using all 6, not the 300 of --models" if used == 6 else
                f"mli: the zoo has 6 models, {used} of them trained without divergence; using those {used}, "
                "not the 300 of --models")
    assert captured.err.strip() == expected  # one line, said even with --quiet
    # and the evaluation images: 4,096 asked, digits has 1,347
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "measuring the loss on all 1,347 (--eval-examples 4,096)" in err
    assert json.loads((tmp_path / "mli" / "mli.json").read_text())["eval_examples"] == 1347


def test_lmc_states_the_training_images_it_used(tmp_path, capsys):
    out = tmp_path / "lmc"
    assert main(["bench", "lmc", "--out", str(out), "--arch", "mlp-digits", "--dataset", "digits", "--recipe", "cpu",
                 "--pairs", "1", "--epochs", "1", "--points", "3", "--variants", "w_asym"]) == 0
    captured = capsys.readouterr()
    assert "10,000 training images" not in captured.err + captured.out  # the cpu recipe's subset, not what was used
    assert "digits has 1,347 training images, fewer than the 10,000 of the train subset; training on all 1,347" in captured.err
    assert "1 epochs on all 1,347 training images" in captured.out
    report = json.loads((out / "lmc.json").read_text())
    assert report["train_images"] == 1347 and "all 1,347 training images" in report["recipe"]
    setting = lmc.lmc_setting("mlp-mnist-lmc", "cpu")
    assert setting.describe(60_000).endswith("on the first 10,000 training images")
    assert setting.describe(1_347).endswith("on all 1,347 training images")


# -- 5: --help -----------------------------------------------------------------------------------------------
def _subparser(module) -> argparse.ArgumentParser:
    sub = argparse.ArgumentParser(prog="symzoo bench").add_subparsers()
    module.register(sub)
    return next(iter(sub.choices.values()))


def _shared_options() -> set[str]:
    parser = argparse.ArgumentParser()
    add_run_options(parser)
    return {a.dest for a in parser._actions}


SHARED = _shared_options()


@pytest.mark.parametrize("module", [bnn, mli, lmc], ids=["bnn", "mli", "lmc"])
def test_every_option_has_help_with_its_default(module):
    parser = _subparser(module)
    text = parser.format_help()  # renders every %(default)s
    options = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
    assert options and all(a.help and a.help.strip() for a in options), [a.dest for a in options if not a.help]
    for action in options:
        if action.dest in SHARED:  # --device, --data-dir, --json, --quiet: benchmarks.report's, shared
            continue
        shown = action.help % {"default": action.default, "prog": parser.prog}
        assert "default" in shown or "required" in shown, f"{action.option_strings}: {shown}"
    assert "%(default)" not in text
    if module is mli:
        models = next(a for a in options if a.dest == "models")
        assert "(default: 300)" in models.help % {"default": models.default}
