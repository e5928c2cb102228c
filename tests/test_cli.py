import json
import os
import shutil
import subprocess
import sys

import pytest

from symzoo.cli import main


def run_json(capsys, *argv: str) -> dict:
    assert main(list(argv)) == 0
    out = capsys.readouterr().out
    return json.loads(out)  # --json prints exactly one JSON object on stdout


def symzoo_command() -> list[str]:
    exe = shutil.which("symzoo")
    return [exe] if exe else [sys.executable, "-m", "symzoo"]


def test_arch_list(capsys):
    report = run_json(capsys, "arch", "list", "--json")
    names = [row["name"] for row in report["architectures"]]
    assert names[:3] == ["resnet8", "resnet8-small", "resnet20"]
    assert {"mlp-mnist-lmc", "mlp-digits", "mlp-mnist", "cnn-mnist"} <= set(names)
    resnet8 = report["architectures"][0]["params"]
    assert resnet8["w_asym"] == {"total_params": 78_042, "trainable_params": 60_634, "fixed_params": 17_408}
    assert main(["arch", "list"]) == 0
    assert "cnn-mnist" in capsys.readouterr().out


@pytest.mark.parametrize(
    "arch, variant, total, trainable, fixed",
    [
        ("resnet8", "standard", 78_042, 78_042, 0),
        ("resnet8", "w_asym", 78_042, 60_634, 17_408),
        ("resnet8", "sigma_asym", 89_050, 78_042, 11_008),
        ("cnn-mnist", "standard", 4_970, 4_970, 0),
    ],
)
def test_arch_describe_json(capsys, arch, variant, total, trainable, fixed):
    report = run_json(capsys, "arch", "describe", arch, "--variant", variant, "--json")
    assert (report["total_params"], report["trainable_params"], report["fixed_params"]) == (total, trainable, fixed)
    assert sum(t["numel"] for t in report["tensors"]) == total
    assert sum(t["fixed"] for t in report["tensors"]) == fixed
    assert {"name", "shape", "numel", "fixed"} <= set(report["tensors"][0])
    assert report["variant"] == variant


@pytest.mark.parametrize("variant, holds", [("standard", True), ("w_asym", False), ("sigma_asym", False)])
def test_arch_symmetry_json(capsys, variant, holds):
    report = run_json(capsys, "arch", "symmetry", "mlp-digits", "--variant", variant, "--json", "--trials", "3")
    assert report["symmetry_holds"] is holds
    if holds:
        assert report["max_rel_deviation"] <= 1e-5
    else:
        assert report["max_rel_deviation"] >= 1e-2
    assert len(report["deviations"]) == 3


def test_describe_reads_a_spec_file(capsys, tmp_path):
    from zoo import get_arch

    path = tmp_path / "net.yaml"
    path.write_text(get_arch("mlp-digits", "w_asym").to_yaml())
    report = run_json(capsys, "arch", "describe", str(path), "--json")
    assert report["variant"] == "w_asym" and report["fixed_params"] == 672


@pytest.mark.parametrize(
    "argv, message",
    [
        (["arch", "describe", "resnet9"], "unknown architecture 'resnet9'; valid architectures: resnet8"),
        (["arch", "symmetry", "resnet8", "--variant", "asym"], "invalid choice: 'asym'"),
        (["arch", "describe", "missing.yaml"], "missing.yaml: cannot read spec file"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, message):
    result = subprocess.run(symzoo_command() + argv, capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.dirname(__file__)))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert "Traceback" not in result.stderr


def test_bad_spec_file_exits_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("family: mlp\nin_features: 4\nwidths: [3]\nout_features: 2\ncolour: red\n")
    assert main(["arch", "describe", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown field(s) colour" in err and "bad.yaml" in err
