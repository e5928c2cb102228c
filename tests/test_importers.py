"""Importers of public zoos: the W-Asym paper's N.pt ResNet8 files and the Small CNN Zoo.

The source files are built here in their original formats, from a re-implementation of the
originals' forward passes, so the tests check that imported rows rebuild into networks that
compute what the originals computed.
"""

import csv
import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.storage import ZooFormatError, open_zoo
from zoo.storage.importers import import_seed_pt, import_small_cnn_zoo
from zoo.storage.verify import verify_zoo

# -- the paper's ResNet8, as its state_dicts name things ---------------------------------------------

WEIGHT_LAYERS = ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer2.0.conv1", "layer2.0.conv2",
                 "layer2.0.shortcut.0", "layer3.0.conv1", "layer3.0.conv2", "layer3.0.shortcut.0", "linear"]


def paper_state(variant: str, seed: int, width: int = 16, masks: dict | None = None, kappa: float = 2.0,
                overwrite_fixed: bool = True) -> dict[str, Tensor]:
    """A random state_dict of the paper's ResNet8 (``ResNet``, ``SparseResNet`` or σ-Asym ``ResNet``).

    W-Asym weights hold kappa·normal_mask at fixed slots when ``overwrite_fixed`` (the paper's
    forward wrote them there), else raw values that its forward would ignore.
    """
    g = torch.Generator().manual_seed(seed)
    state: dict[str, Tensor] = {}

    def conv(name: str, c_out: int, c_in: int, k: int) -> None:
        state[f"{name}.weight"] = torch.randn(c_out, c_in, k, k, generator=g) * math.sqrt(2 / (c_in * k * k))

    def norm(name: str, c: int) -> None:
        state[f"{name}.weight"] = 1 + 0.2 * torch.randn(c, generator=g)
        state[f"{name}.bias"] = 0.2 * torch.randn(c, generator=g)

    def figlu(name: str, c: int) -> None:
        state[f"{name}.F_mat"] = torch.randn(c, c, 1, 1, generator=g) / math.sqrt(c)

    channels = (width, 2 * width, 4 * width)
    conv("conv1", channels[0], 3, 3)
    norm("ln1", channels[0])
    c_in = channels[0]
    for k, c_out in enumerate(channels, start=1):
        block = f"layer{k}.0"
        conv(f"{block}.conv1", c_out, c_in, 3)
        norm(f"{block}.ln1", c_out)
        conv(f"{block}.conv2", c_out, c_out, 3)
        norm(f"{block}.ln2", c_out)
        if c_in != c_out:
            conv(f"{block}.shortcut.0", c_out, c_in, 1)
            norm(f"{block}.shortcut.1", c_out)
        if variant == "sigma_asym":
            figlu(f"{block}.nonlin1", c_out)
            figlu(f"{block}.nonlin2", c_out)
        c_in = c_out
    state["linear.weight"] = 0.3 * torch.randn(10, channels[-1], generator=g)
    state["linear.bias"] = 0.1 * torch.randn(10, generator=g)
    if variant == "sigma_asym":
        figlu("nonlin", channels[0])
    if variant == "w_asym":
        for name, (mask, normal) in (masks or paper_masks(width)).items():
            weight = state[f"{name}.weight"]
            if overwrite_fixed:
                weight = weight * mask + (1 - mask) * kappa * normal
            state[f"{name}.weight"], state[f"{name}.mask"], state[f"{name}.normal_mask"] = weight, mask, normal
    return state


def paper_masks(width: int = 16, seed: int = 123) -> dict[str, tuple[Tensor, Tensor]]:
    """Random 0/1 masks (about 30% fixed) and normal_masks shared by a W-Asym zoo."""
    g = torch.Generator().manual_seed(seed)
    shapes = {name: t.shape for name, t in paper_state("standard", 0, width).items() if name.endswith(".weight")}
    return {name: ((torch.rand(shapes[f"{name}.weight"], generator=g) > 0.3).float(),
                   torch.randn(shapes[f"{name}.weight"], generator=g))
            for name in WEIGHT_LAYERS}


def paper_forward(state: dict[str, Tensor], x: Tensor, kappa: float = 2.0) -> Tensor:
    """The paper's ResNet8 forward, written against its state_dict names."""

    def weight(name: str) -> Tensor:
        w = state[f"{name}.weight"]
        if f"{name}.mask" in state:
            mask = state[f"{name}.mask"]
            w = w * mask + (1 - mask) * kappa * state[f"{name}.normal_mask"]
        return w

    def norm(name: str, h: Tensor) -> Tensor:
        return F.group_norm(h, 1, state[f"{name}.weight"], state[f"{name}.bias"])

    def act(name: str, h: Tensor) -> Tensor:
        if f"{name}.F_mat" in state:
            return torch.sigmoid(F.conv2d(h, state[f"{name}.F_mat"])) * h
        return F.relu(h)

    out = act("nonlin", norm("ln1", F.conv2d(x, weight("conv1"), padding=1)))
    for k, stride in ((1, 1), (2, 2), (3, 2)):
        block = f"layer{k}.0"
        h = F.conv2d(out, weight(f"{block}.conv1"), stride=stride, padding=1)
        h = act(f"{block}.nonlin1", norm(f"{block}.ln1", h))
        h = norm(f"{block}.ln2", F.conv2d(h, weight(f"{block}.conv2"), padding=1))
        skip = out
        if f"{block}.shortcut.0.weight" in state:
            skip = norm(f"{block}.shortcut.1", F.conv2d(out, weight(f"{block}.shortcut.0"), stride=stride))
        out = act(f"{block}.nonlin2", h + skip)
    out = F.avg_pool2d(out, out.shape[3]).flatten(1)
    return F.linear(out, weight("linear"), state["linear.bias"])


def save_models(folder: Path, states: dict[int, dict[str, Tensor]]) -> dict[int, float]:
    """``N.pt`` files as the paper's train_cifar.py writes them; returns the accuracies (percent)."""
    folder.mkdir(parents=True, exist_ok=True)
    accuracies = {}
    for index, state in states.items():
        accuracies[index] = 40.0 + index
        torch.save((state, accuracies[index]), folder / f"{index}.pt")
    return accuracies


def rows_by_index(zoo_dir: Path) -> dict[int, tuple[str, int]]:
    zoo = open_zoo(zoo_dir)
    return {int(index): (split, row)
            for split in zoo.splits for row, index in enumerate(zoo.load(split, ["index"])["index"])}


def assert_same_functions(zoo_dir: Path, states: dict[int, dict[str, Tensor]], kappa: float = 2.0) -> int:
    """Every finite row, rebuilt, computes what the paper's network computes; returns rows checked."""
    zoo = open_zoo(zoo_dir)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    checked = 0
    for index, (split, row) in rows_by_index(zoo_dir).items():
        if zoo.load(split, ["status"])["status"][row] != "ok":
            continue
        with torch.no_grad():
            torch.testing.assert_close(zoo.rebuild(row, split).eval()(x), paper_forward(states[index], x, kappa),
                                       atol=1e-5, rtol=0)
        checked += 1
    return checked


# -- seed-pt ----------------------------------------------------------------------------------------

def test_seed_pt_standard_rows_rebuild_the_papers_networks(tmp_path):
    states = {i: paper_state("standard", seed=i) for i in (0, 1, 2, 7)}
    states[2]["linear.weight"][0, 0] = float("nan")  # a diverged run
    accuracies = save_models(tmp_path / "resnet8", states)
    out = import_seed_pt(tmp_path / "resnet8", tmp_path / "zoo")

    assert out == tmp_path / "zoo" and verify_zoo(out).ok
    zoo = open_zoo(out)
    manifest = zoo.manifest
    assert manifest.arch["family"] == "resnet" and manifest.arch["variant"] == "standard"
    assert manifest.num_params == 78_042 and manifest.num_trainable == 78_042 and manifest.rows() == 4
    rows = rows_by_index(out)
    assert sorted(rows) == [0, 1, 2, 7]
    for index, (split, row) in rows.items():
        data = zoo.load(split, ["seed", "status", "test_acc", "train_acc", "test_loss"])
        assert data["seed"][row] == index and data["test_acc"][row] == pytest.approx(accuracies[index] / 100)
        assert math.isnan(data["train_acc"][row]) and math.isnan(data["test_loss"][row])
        assert data["status"][row] == ("diverged" if index == 2 else "ok")
    assert assert_same_functions(out, states) == 3


def test_seed_pt_w_asym_keeps_the_papers_masks_and_infers_kappa(tmp_path):
    masks = paper_masks()
    states = {i: paper_state("w_asym", seed=i, masks=masks, kappa=3.0) for i in range(3)}
    # A file saved without a forward after the last step: fixed slots hold stale values, which the
    # paper's forward would overwrite with kappa·Z; the importer must do the same.
    states[3] = paper_state("w_asym", seed=3, masks=masks, kappa=3.0, overwrite_fixed=False)
    save_models(tmp_path / "sparse_resnet8", states)
    out = import_seed_pt(tmp_path / "sparse_resnet8", tmp_path / "zoo")

    assert verify_zoo(out).ok
    zoo = open_zoo(out)
    assert zoo.manifest.arch["variant"] == "w_asym"
    assert zoo.manifest.metadata.recipe["kappa"] == {f: 3.0 for f in zoo.manifest.metadata.recipe["kappa"]}
    trainable, fixed_values = zoo.fixed
    n_fixed = sum(int((1 - mask).sum()) for mask, _ in masks.values())
    assert int((~trainable).sum()) == n_fixed == zoo.manifest.num_params - zoo.manifest.num_trainable
    slot = zoo.layout["stages.1.0.shortcut.0.weight"]
    mask, normal = masks["layer2.0.shortcut.0"]
    assert torch.equal(trainable[slot.offset : slot.stop], mask.bool().reshape(-1))
    expected = torch.where(mask.bool(), 0.0, 3.0 * normal).reshape(-1)
    assert torch.equal(fixed_values[slot.offset : slot.stop], expected)
    assert assert_same_functions(out, states, kappa=3.0) == 4


def test_seed_pt_sigma_asym_rows_carry_their_own_figlu(tmp_path):
    states = {i: paper_state("sigma_asym", seed=i) for i in range(3)}  # F differs per model, as in the paper
    save_models(tmp_path / "sigma", states)
    out = import_seed_pt(tmp_path / "sigma", tmp_path / "zoo")

    assert verify_zoo(out).ok
    zoo = open_zoo(out)
    assert zoo.manifest.arch["variant"] == "sigma_asym"
    assert zoo.manifest.num_params - zoo.manifest.num_trainable == 11_008
    assert assert_same_functions(out, states) == 3


def test_seed_pt_small_width_and_w_asym_imported_as_standard(tmp_path):
    states = {i: paper_state("w_asym", seed=i, width=14, masks=paper_masks(width=14)) for i in range(2)}
    save_models(tmp_path / "smaller", states)
    out = import_seed_pt(tmp_path / "smaller", tmp_path / "zoo", variant="standard")

    zoo = open_zoo(out)
    assert zoo.manifest.arch["variant"] == "standard" and zoo.manifest.arch["width"] == 0.875
    assert zoo.manifest.num_params == 59_944 == zoo.manifest.num_trainable
    assert assert_same_functions(out, states) == 2


def test_seed_pt_rerun_resumes_without_duplicates(tmp_path):
    states = {i: paper_state("standard", seed=i) for i in range(3)}
    save_models(tmp_path / "src", {i: states[i] for i in (0, 1)})
    import_seed_pt(tmp_path / "src", tmp_path / "zoo")
    import_seed_pt(tmp_path / "src", tmp_path / "zoo")
    assert open_zoo(tmp_path / "zoo").num_rows() == 2
    save_models(tmp_path / "src", {2: states[2]})
    import_seed_pt(tmp_path / "src", tmp_path / "zoo")
    assert sorted(rows_by_index(tmp_path / "zoo")) == [0, 1, 2] and verify_zoo(tmp_path / "zoo").ok


def _unexpected_key(folder: Path) -> str:
    state = paper_state("standard", 0)
    state["layer1.0.bn1.running_mean"] = torch.zeros(16)
    torch.save((state, 50.0), folder / "0.pt")
    return "0.pt"


def _masks_differ(folder: Path) -> str:
    torch.save((paper_state("w_asym", 0, masks=paper_masks(seed=1)), 50.0), folder / "0.pt")
    torch.save((paper_state("w_asym", 1, masks=paper_masks(seed=2)), 50.0), folder / "1.pt")
    return "1.pt"


def _not_a_torch_file(folder: Path) -> str:
    (folder / "0.pt").write_text("not a checkpoint")
    return "0.pt"


def _wrong_width(folder: Path) -> str:
    torch.save((paper_state("standard", 0, width=8), 50.0), folder / "0.pt")
    return "0.pt"


def _not_a_tuple(folder: Path) -> str:
    torch.save(paper_state("standard", 0), folder / "0.pt")
    return "0.pt"


@pytest.mark.parametrize("make, variant, expected", [
    (lambda folder: "", None, "no N.pt files"),
    (_unexpected_key, None, "unexpected state_dict key 'layer1.0.bn1.running_mean'"),
    (_masks_differ, None, "masks differ"),
    (_not_a_torch_file, None, "not a readable torch file"),
    (_wrong_width, None, "expected 16 (resnet8) or 14 (resnet8-small)"),
    (_not_a_tuple, None, "expected torch.save((state_dict, test_acc_percent))"),
    (lambda folder: torch.save((paper_state("standard", 0), 50.0), folder / "0.pt") or "0.pt",
     "sigma_asym", "cannot be imported as sigma_asym"),
])
def test_seed_pt_bad_input_names_the_file(tmp_path, make, variant, expected):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "notes.txt").write_text("ignored")
    name = make(folder)
    with pytest.raises(ZooFormatError) as err:
        import_seed_pt(folder, tmp_path / "zoo", variant=variant)
    message = str(err.value)
    assert expected in message and str(folder / name) in message and "\n" not in message


def test_seed_pt_missing_folder(tmp_path):
    with pytest.raises(ZooFormatError, match="no such folder; expected a folder of N.pt files"):
        import_seed_pt(tmp_path / "absent", tmp_path / "zoo")


# -- small-cnn-zoo ----------------------------------------------------------------------------------

CNN_VARIABLES = [("sequential/conv2d", (3, 3, 1, 16)), ("sequential/conv2d_1", (3, 3, 16, 16)),
                 ("sequential/conv2d_2", (3, 3, 16, 16)), ("sequential/dense", (16, 10))]
METRICS_HEADER = ["", "config.activation", "config.dataset", "config.dropout", "config.init_std", "config.l2reg",
                  "config.learning_rate", "config.optimizer", "config.train_fraction", "config.w_init", "modeldir",
                  "step", "test_accuracy", "test_loss", "train_accuracy", "train_loss"]


def write_small_cnn_zoo(folder: Path, rows: int = 12,
                        metrics_name: str = "metrics.csv.gz") -> tuple[np.ndarray, list[dict]]:
    """Files in the released format: bias before kernel per layer, as the released layout.csv has it."""
    folder.mkdir(parents=True, exist_ok=True)
    layout, start = [], 0
    for name, shape in CNN_VARIABLES:
        for var, var_shape in ((f"{name}/bias:0", shape[-1:]), (f"{name}/kernel:0", shape)):
            size = math.prod(var_shape)
            layout.append([var, start, start + size, size, str(tuple(var_shape))])
            start += size
    with open(folder / "layout.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["varname", "start_idx", "end_idx", "size", "shape"], *layout])

    rng = np.random.default_rng(0)
    weights = rng.standard_normal((rows, start)).astype(np.float32)
    weights[5, 100] = np.nan
    np.save(folder / "weights.npy", weights)

    metrics = [{
        "": i, "config.activation": "tanh" if i % 3 else "relu", "config.dataset": "mnist",
        "config.dropout": 0.1 * (i % 4), "config.init_std": 0.05, "config.l2reg": 10.0 ** -(i % 5),
        "config.learning_rate": 10.0 ** -(1 + i % 3), "config.optimizer": "adam", "config.train_fraction": 0.5,
        "config.w_init": "he_normal", "modeldir": f"/runs/{i // 2}", "step": 86 if i % 2 else 0,
        "test_accuracy": 0.5 + i / 100, "test_loss": 1.0 + i, "train_accuracy": 0.6 + i / 100, "train_loss": 0.5 + i,
    } for i in range(rows)]
    opener = gzip.open if metrics_name.endswith(".gz") else open
    with opener(folder / metrics_name, "wt", newline="") as handle:
        writer = csv.DictWriter(handle, METRICS_HEADER)
        writer.writeheader()
        writer.writerows(metrics)
    return weights, metrics


@pytest.mark.parametrize("metrics_name", ["metrics.csv.gz", "metrics.csv"])
def test_small_cnn_zoo_import(tmp_path, metrics_name):
    weights, metrics = write_small_cnn_zoo(tmp_path / "mnist", metrics_name=metrics_name)
    out = import_small_cnn_zoo(tmp_path / "mnist", tmp_path / "zoo")

    assert verify_zoo(out).ok
    zoo = open_zoo(out)
    manifest = zoo.manifest
    assert manifest.num_params == 4970 and manifest.rows() == 12
    assert manifest.arch == {**manifest.arch, "family": "cnn", "in_channels": 1, "image_size": 28,
                             "channels": [16, 16, 16], "strides": [2, 2, 2], "kernel_size": 3,
                             "num_classes": 10, "activation": "tanh"}
    hyper = {"dropout", "init_std", "l2reg", "learning_rate", "train_fraction", "step"}
    assert set(manifest.schema.hyperparameters) == hyper
    assert set(manifest.schema.hyperparameters.values()) == {"float"}
    for column in ("config.activation", "config.optimizer", "config.w_init", "config.dataset", "modeldir"):
        assert column in manifest.metadata.description
    assert manifest.metadata.dataset["name"] == "mnist"

    checked = 0
    for index, (split, row) in rows_by_index(out).items():
        data = zoo.load(split, [*sorted(hyper), "seed", "status", "test_acc", "train_loss"])
        source = metrics[index]
        assert data["seed"][row] == index and data["test_acc"][row] == pytest.approx(source["test_accuracy"])
        assert data["train_loss"][row] == pytest.approx(source["train_loss"])
        assert data["learning_rate"][row] == pytest.approx(source["config.learning_rate"])
        assert data["step"][row] == source["step"]
        assert data["status"][row] == ("diverged" if index == 5 else "ok")
        if index == 5:
            continue
        net = zoo.rebuild(row, split)
        tf = weights[index]
        offset = 0
        for i, (_, shape) in enumerate(CNN_VARIABLES):
            bias = tf[offset : offset + shape[-1]]
            kernel = tf[offset + shape[-1] : offset + shape[-1] + math.prod(shape)].reshape(shape)
            offset += shape[-1] + math.prod(shape)
            layer = net.head if i == 3 else net.blocks[i].layer
            expected = kernel.T if i == 3 else kernel.transpose(3, 2, 0, 1)
            assert np.array_equal(layer.weight.detach().numpy(), expected)
            assert np.array_equal(layer.bias.detach().numpy(), bias)
        checked += 1
    assert checked == 11


def test_small_cnn_zoo_bad_input_names_the_file(tmp_path):
    folder = tmp_path / "mnist"
    write_small_cnn_zoo(folder)

    (folder / "layout.csv").rename(folder / "layout.bak")
    with pytest.raises(ZooFormatError, match=r"layout\.csv: missing"):
        import_small_cnn_zoo(folder, tmp_path / "zoo")
    (folder / "layout.bak").rename(folder / "layout.csv")

    np.save(folder / "weights.npy", np.zeros((12, 4000), dtype=np.float32))
    with pytest.raises(ZooFormatError, match=r"weights\.npy: has 4000 columns per row; layout\.csv describes 4970"):
        import_small_cnn_zoo(folder, tmp_path / "zoo")

    np.save(folder / "weights.npy", np.zeros((10, 4970), dtype=np.float32))
    with pytest.raises(ZooFormatError, match=r"metrics\.csv\.gz: has 12 rows; .*weights\.npy has 10"):
        import_small_cnn_zoo(folder, tmp_path / "zoo")

    (folder / "metrics.csv.gz").unlink()
    with pytest.raises(ZooFormatError, match="no metrics.csv.gz or metrics.csv"):
        import_small_cnn_zoo(folder, tmp_path / "zoo")

    with pytest.raises(ZooFormatError, match="no such folder"):
        import_small_cnn_zoo(tmp_path / "absent", tmp_path / "zoo")
    assert not (tmp_path / "zoo").exists()


def test_small_cnn_zoo_rejects_unknown_variables(tmp_path):
    folder = tmp_path / "mnist"
    write_small_cnn_zoo(folder)
    text = (folder / "layout.csv").read_text().replace("sequential/dense/kernel:0", "sequential/lstm/kernel:0")
    (folder / "layout.csv").write_text(text)
    with pytest.raises(ZooFormatError, match=r"layout\.csv: unexpected variable 'sequential/lstm/kernel:0'"):
        import_small_cnn_zoo(folder, tmp_path / "zoo")


def test_imported_zoo_json_is_plain_json(tmp_path):
    """Metadata (kappa per layer, recipe) must survive the manifest's JSON round trip."""
    masks = paper_masks()
    save_models(tmp_path / "src", {0: paper_state("w_asym", 0, masks=masks)})
    out = import_seed_pt(tmp_path / "src", tmp_path / "zoo")
    recipe = json.loads((out / "zoo.json").read_text())["metadata"]["recipe"]
    assert recipe["reference_model"] == 0 and set(recipe["kappa"].values()) == {2.0}


def test_seed_pt_rejects_a_folder_of_mixed_variants(tmp_path):
    save_models(tmp_path / "src", {0: paper_state("standard", 0), 1: paper_state("w_asym", 1)})
    with pytest.raises(ZooFormatError, match=r"1\.pt: holds a w_asym ResNet8, 0\.pt a standard one"):
        import_seed_pt(tmp_path / "src", tmp_path / "zoo")


def test_import_command_line(tmp_path, capsys):
    from symzoo.cli import main

    save_models(tmp_path / "resnet8", {i: paper_state("w_asym", seed=i, masks=paper_masks()) for i in range(3)})
    assert main(["import", "seed-pt", str(tmp_path / "resnet8"), "--out", str(tmp_path / "paper")]) == 0
    assert "imported 3 models" in capsys.readouterr().out
    write_small_cnn_zoo(tmp_path / "mnist")
    assert main(["import", "small-cnn-zoo", str(tmp_path / "mnist"), "--out", str(tmp_path / "cnn")]) == 0
    assert "imported 12 models" in capsys.readouterr().out
    assert main(["import", "seed-pt", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nowhere: no such folder" in err
