import pytest
import torch

from metanets.models import METANETS, MetanetContext, get_metanet
from tests.helpers import digits_zoo_spec, permuted_networks
from metanets.views import statistics_view, trainable_view
from zoo import ParamLayout, SpecError, get_arch


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build(name: str, input_dim: int, arch: str = "resnet8", variant: str = "standard") -> torch.nn.Module:
    spec = get_arch(arch, variant)
    return get_metanet(name).build(MetanetContext(input_dim, ParamLayout.from_module(spec.build()), spec))


def test_paper_metanet_sizes_on_resnet8_layouts():
    standard = ParamLayout.from_module(get_arch("resnet8").build())
    w_asym = ParamLayout.from_module(get_arch("resnet8", "w_asym").build())
    assert count(build("mlp", standard.num_trainable)) == 4_994_945
    assert count(build("mlp", w_asym.num_trainable, variant="w_asym")) == 3_880_833
    weights = standard.flatten(get_arch("resnet8").build())[None]
    assert statistics_view(weights, standard).shape == (1, 203)
    assert count(build("statnn", 203)) == 119_297
    assert count(build("deepsets", standard.size)) == 8_897
    assert count(build("dmc", standard.size)) == 105_357


@pytest.mark.parametrize("arch", ["resnet8", "cnn-mnist", "mlp-digits"])
def test_invariant_metanets_ignore_hidden_unit_permutations_and_the_mlp_does_not(arch):
    layout, x, x_perm = permuted_networks(get_arch(arch))
    assert not torch.equal(x, x_perm)
    torch.manual_seed(0)
    for name, entry in METANETS.items():
        views = {"statistics": lambda w: statistics_view(w, layout), "weights": lambda w: trainable_view(w, layout),
                 "flat": lambda w: w}
        view = views[entry.view]
        model = build(name, view(x).shape[1], arch).eval()  # every metanet reads every family
        with torch.no_grad():
            out, out_perm = model(view(x)), model(view(x_perm))
        if entry.invariant:
            assert torch.allclose(out, out_perm, atol=1e-4, rtol=1e-4), name
        elif name in ("mlp", "linear"):
            assert not torch.allclose(out, out_perm, atol=1e-4), name


def test_trainable_view_drops_fixed_entries():
    layout = ParamLayout.from_module(get_arch("mlp-digits", "w_asym").build())
    weights = torch.randn(2, layout.size)
    assert trainable_view(weights, layout).shape == (2, layout.num_trainable) == (2, 2794)


def test_unknown_metanet_lists_the_valid_ones():
    with pytest.raises(SpecError, match="unknown metanet 'gpt'; valid metanets: linear, mlp, statnn, deepsets, dmc"):
        get_metanet("gpt")


def test_every_metanet_is_registered_in_one_place_and_importing_metanets_builds_none():
    """One registry names every built-in metanet and its builder; the models' modules (the GMN's
    torch_geometric above all, ~3 s) are imported only when a metanet is built."""
    import subprocess
    import sys
    from pathlib import Path

    from metanets import registry

    assert list(METANETS) == ["linear", "mlp", "statnn", "deepsets", "dmc", "nfn", "nfn_hnp", "nfn_np", "gmn"]
    assert all(entry.build.__module__ == registry.__name__ for entry in METANETS.values())
    code = ("import sys, metanets; "
            "print([m for m in ('torch_geometric', 'metanets.models', 'metanets.nfn', 'metanets.gmn') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert out.strip() == "[]"


@pytest.fixture(scope="module")
def digits_zoo(tmp_path_factory):

    from generators.generate import generate

    out = tmp_path_factory.mktemp("metanet") / "digits"
    generate(digits_zoo_spec(128, max_epochs=4), out, quiet=True)
    return out


@pytest.mark.parametrize("model", ["statnn", "deepsets", "mlp"])
def test_training_on_a_real_zoo_beats_the_untrained_metanet(digits_zoo, model):
    from metanets.train import MetanetConfig, evaluate, load_features, train_metanet
    from zoo.storage import open_zoo

    config = MetanetConfig(model=model, epochs=30, lrs=(1e-3,), seeds=2)
    run = train_metanet(digits_zoo, config, quiet=True)
    result, features = run.summary, run.features
    torch.manual_seed(0)
    _, untrained = evaluate(features.build(), features, "validation")
    assert result["val"]["r2"] > untrained["r2"]
    if model == "statnn":  # 30 steps on 64 models leave the weight-reading metanets undertrained
        assert result["test"]["r2"] > 0 and result["test"]["kendall_tau"] > 0
    assert len(result["per_seed"]) == 2 and all(1 <= r["epoch"] <= 30 for r in result["per_seed"])
    if model == "statnn":  # normalisation from the train split only, kept with the metanet
        mean, _ = features.normalizer
        assert torch.allclose(mean, load_features(open_zoo(digits_zoo), features.entry, "test_acc").inputs["train"].mean(0))


def test_metanet_command_line_train_and_predict(digits_zoo, tmp_path, capsys):
    import json

    from symzoo.cli import main

    out = tmp_path / "run"
    args = ["metanet", "train", "--zoo", str(digits_zoo), "--model", "deepsets", "--seeds", "1", "--epochs", "3",
            "--lrs", "1e-3", "--out", str(out), "--json", "--quiet"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"model", "zoo", "val", "test", "per_seed"} <= set(result) and result["model"] == "deepsets"
    assert (out / "scatter.png").read_bytes()[:4] == b"\x89PNG" and (out / "results.json").exists()
    assert main(["metanet", "predict", "--metanet", str(out / "metanet.safetensors"), "--zoo", str(digits_zoo), "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out)
    assert predicted["test"]["r2"] == pytest.approx(result["test"]["r2"], abs=1e-6)
    assert main(["metanet", "train", "--zoo", str(digits_zoo), "--model", "gpt"]) == 2
    assert "unknown metanet 'gpt'" in capsys.readouterr().err
