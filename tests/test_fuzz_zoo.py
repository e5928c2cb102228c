"""Property: whatever is done to a zoo's ``zoo.json`` fields or shard bytes, every reader either
serves the original data or stops with one clear error; never a traceback, never wrong data. (A
shard list with entries removed looks like a run interrupted before listing them: readers serve
the listed models, each exactly as stored, and ``verify`` reports the unlisted files.)

Hypothesis picks a field of ``zoo.json`` (at any depth) and a value of any JSON type, or a shard and
bytes to flip or a length to cut it to. ``SYMZOO_FUZZ_EXAMPLES`` raises the example count (CI
keeps it small; docs/RELIABILITY.md records a longer run).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from symzoo.cli import main
from zoo.errors import SymzooError
from zoo.storage import SPLITS, Manifest, load, open_zoo

EXAMPLES = int(os.environ.get("SYMZOO_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="SYMZOO_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

JSON_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["../x", "/etc/passwd", "data/../../x", "w_asym", "many", "abc", 1e7]),
    st.lists(st.integers(-3, 10**7), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    zoo = tmp_path_factory.mktemp("original") / "zoo"
    assert main(["generate", "--preset", "digits-mlp", "--n-models", "8", "--batch-models", "4", "--quiet",
                 "--out", str(zoo)]) == 0
    truth = {}
    for split in SPLITS:
        data = load(zoo, split, ["index", "weights", "test_acc"])
        for row, index in enumerate(data["index"]):
            truth[int(index)] = (data["weights"][row].copy(), data["test_acc"][row],
                                 open_zoo(zoo).rebuild(row, split).state_dict())
    shutil.rmtree(zoo / ".cache")
    return zoo, truth


def paths_of(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a JSON document, as a tuple of keys and indices."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths_of(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value[:3]):
            found += paths_of(item, (*prefix, i))
    return found


def assert_serves_the_original_or_refuses(zoo: Path, truth: dict[int, Any], capsys) -> None:
    served: set[int] = set()
    for split in SPLITS:
        try:
            data = load(zoo, split, ["index", "weights", "test_acc"])
            networks = [open_zoo(zoo).rebuild(row, split).state_dict() for row in range(len(data["index"]))]
        except SymzooError:
            continue
        for row, index in enumerate(data["index"]):
            weights, accuracy, network = truth[int(index)]
            assert np.array_equal(data["weights"][row], weights), "wrong weights served"
            assert data["test_acc"][row] == accuracy, "wrong accuracy served"
            assert all(torch.equal(networks[row][k], v) for k, v in network.items()), "wrong network rebuilt"
            served.add(int(index))
    codes = {}
    for argv, allowed in ((["info", str(zoo), "--json"], {0, 2}), (["verify", str(zoo)], {0, 1, 2})):
        codes[argv[0]] = code = main(argv)
        _, err = capsys.readouterr()
        assert code in allowed and "Traceback" not in err, (argv, code, err)
        if code == 2:
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("symzoo: error: "), err
    if codes["verify"] == 0:
        assert served == set(truth), "verify passed a zoo that does not serve all of its models"


@FUZZ
@given(data=st.data())
def test_any_zoo_json_edit_is_served_correctly_or_refused(original, tmp_path_factory, capsys, data):
    source, truth = original
    zoo = tmp_path_factory.mktemp("edited") / "zoo"
    shutil.copytree(source, zoo)
    manifest = json.loads((zoo / "zoo.json").read_text())
    where = data.draw(st.sampled_from(paths_of(manifest)), label="field")
    value = data.draw(JSON_VALUES, label="value")
    parent = manifest
    for key in where[:-1]:
        parent = parent[key]
    parent[where[-1]] = value
    (zoo / "zoo.json").write_text(json.dumps(manifest))
    assert_serves_the_original_or_refuses(zoo, truth, capsys)


@FUZZ
@given(data=st.data())
def test_any_shard_damage_is_served_correctly_or_refused(original, tmp_path_factory, capsys, data):
    source, truth = original
    zoo = tmp_path_factory.mktemp("damaged") / "zoo"
    shutil.copytree(source, zoo)
    shard = zoo / data.draw(st.sampled_from([s.path for s in Manifest.load(zoo).shards]), label="shard")
    raw = bytearray(shard.read_bytes())
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="length")]
    else:
        for offset in data.draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=8), label="offsets"):
            raw[offset] ^= data.draw(st.integers(1, 255), label="xor")
    shard.write_bytes(bytes(raw))
    assert_serves_the_original_or_refuses(zoo, truth, capsys)
