"""The README runs as written, top to bottom (issue 18): every command block and Python snippet,
in order, in a fresh folder, at smoke-run sizes, so that the README cannot drift from the product.

Lines that need what a test machine does not have (a GPU, a Ray cluster, files of the user's own,
a pip install) are skipped and listed; MNIST lines run when the MNIST files are found as the
product finds them."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import mnist_dir

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# a line with any of these needs something a test machine does not have
NEEDS = {"pip install": "an install", "pytest": "the test suite itself", "--device cuda": "a GPU",
         "--engine ray": "Ray", "my_arch.yaml": "the user's file", "my_zoo.yaml": "the user's file",
         " SRC ": "a public zoo's files", "~/data": "CIFAR-10"}
MNIST_HINTS = ("../shared/data", "mnist")


def readme_blocks() -> list[tuple[str, str]]:
    """``(language, text)`` of every bash and python block, in order."""
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```(bash|python)\n(.*?)```", text, flags=re.S)


def commands(block: str) -> list[str]:
    """The block's commands: continuation lines joined, comments dropped."""
    joined = block.replace("\\\n", " ")
    lines = [line.split(" #")[0].strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _set(argv: list[str], flag: str, value: str) -> list[str]:
    """``argv`` with ``flag``'s value replaced, or the flag added."""
    if flag in argv:
        i = argv.index(flag)
        return argv[: i + 1] + [value] + argv[i + 2 :]
    return argv + [flag, value]


def smoke(argv: list[str], data: Path | None) -> list[str]:
    """The same command at a size a test can afford."""
    argv = [str(data) if a == "../shared/data" and data else a for a in argv]
    action = " ".join(argv[1:3])
    mnist = any("mnist" in a for a in argv) or action.startswith("bench lmc") and "--arch" not in argv
    if "--n-models" in argv:
        argv = _set(argv, "--n-models", "4" if mnist else "40")
    if action == "metanet train":
        argv = _set(_set(_set(argv, "--seeds", "1"), "--epochs", "2"), "--lrs", "1e-3")
    if action.startswith("bench run"):
        argv = argv + ["--n-models", "40", "--seeds", "1", "--epochs", "1"]
    if action.startswith("bench lmc"):
        argv = _set(_set(argv, "--epochs", "1"), "--pairs", "1")
        argv = _set(argv, "--train-subset", "500") if mnist else argv
    if action.startswith("bench mli"):
        argv = _set(argv, "--models", "2" if mnist else "4")
    if action.startswith("bench bnn"):
        argv = _set(_set(_set(argv, "--epochs", "1"), "--instances", "1"), "--train-subset", "500")
    return argv


def test_the_readme_runs_top_to_bottom(tmp_path):
    data = mnist_dir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SYMZOO_DATA": ""}
    (tmp_path / "benchmarks").symlink_to(ROOT / "benchmarks")  # the configs the README names
    ran, skipped = [], []
    for language, block in readme_blocks():
        if language == "python":
            result = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True)
            assert result.returncode == 0, f"README snippet failed:\n{block}\n{result.stderr[-3000:]}"
            ran.append(block.splitlines()[0])
            continue
        for line in commands(block):
            need = next((why for hint, why in NEEDS.items() if hint in f" {line} "), None)
            if need is None and data is None and any(hint in line for hint in MNIST_HINTS):
                need = "the MNIST files"
            if need:
                skipped.append(f"{line}  ({need})")
                continue
            argv = smoke(shlex.split(line), data)
            assert argv[0] == "symzoo", line
            result = subprocess.run([sys.executable, "-m", "symzoo", *argv[1:]], cwd=tmp_path, env=env,
                                    capture_output=True, text=True, timeout=900)
            assert result.returncode == 0, f"README command failed: {line}\nran: {argv}\n{result.stderr[-3000:]}"
            ran.append(line)
    print("\n".join(["ran:", *ran, "skipped:", *skipped]))
    assert len(ran) >= 20
