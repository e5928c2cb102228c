"""The house's shape (issue 19): ``import symzoo`` gives the public API, and dependencies point down
(``symzoo -> benchmarks -> metanets, generators -> zoo``), never up, not even through module-name
strings."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import symzoo

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("zoo", "generators", "metanets", "benchmarks", "symzoo")
# what each package may import besides itself
MAY_IMPORT = {"zoo": set(), "generators": {"zoo"}, "metanets": {"zoo"},
              "benchmarks": {"zoo", "generators", "metanets"},
              "symzoo": {"zoo", "generators", "metanets", "benchmarks"}}


def test_import_symzoo_gives_the_public_api_from_the_packages_that_own_it():
    assert len(symzoo.__all__) == len(set(symzoo.__all__)) >= 30
    for name in symzoo.__all__:
        value = getattr(symzoo, name)
        owner = getattr(value, "__module__", None)
        if owner:  # functions and classes: the very object their own module defines
            assert getattr(importlib.import_module(owner), name.split(".")[-1], value) is value, name
    assert symzoo.get_arch("mlp-digits").num_weights() == 3_466


def _imports(path: Path) -> set[str]:
    """Top-level packages a file imports, statically or by a module-name string."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            head = node.value.split(".")[0]
            if head in PACKAGES and node.value.count(".") >= 1 and " " not in node.value and "/" not in node.value:
                found.add(head)  # "generators.cli": a module named to be imported later
    return found & set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_dependencies_point_down(package):
    for path in sorted((ROOT / package).rglob("*.py")):
        upward = _imports(path) - MAY_IMPORT[package] - {package}
        assert not upward, f"{path.relative_to(ROOT)} imports {sorted(upward)}, above {package}"


def test_the_command_line_root_is_symzoo_cli():
    from importlib.metadata import entry_points  # tomllib would need Python 3.11; symzoo supports 3.10

    assert [script.value for script in entry_points(group="console_scripts", name="symzoo")] == ["symzoo.cli:main"]
    from symzoo.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"arch", "info", "verify", "generate", "metanet", "bench", "quickstart"} <= set(commands)
