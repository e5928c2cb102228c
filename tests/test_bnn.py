"""Variational posteriors over symzoo networks (generators.variational) and ``symzoo bench bnn``."""

import dataclasses
import json
import math
import re

import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from generators.variational import (
    PosteriorConfig,
    VariationalPosterior,
    classification_metrics,
    expected_calibration_error,
)
from zoo import CNNSpec, LayerAsym, MLPSpec, SpecError, WAsymSpec, get_arch
from symzoo.cli import main


def tiny_mlp(variant: str = "w_asym") -> MLPSpec:
    return MLPSpec(in_features=6, widths=(5, 5), out_features=3, layer_norm=True, variant=variant,
                   w_asym=WAsymSpec(default=LayerAsym(2, 1.0)))


def tiny_cnn() -> CNNSpec:
    return CNNSpec(in_channels=2, image_size=6, channels=(4, 4), strides=(1, 2), num_classes=3, group_norm=True,
                   variant="w_asym", w_asym=WAsymSpec(default=LayerAsym(5, 1.0), layers={"head": LayerAsym(1, 1.0)}))


def randomised(spec, config: PosteriorConfig, seed: int = 0) -> VariationalPosterior:
    """A posterior with random means, variances and factors (well away from the initial ones)."""
    post = VariationalPosterior(spec.build(init_seed=seed), config, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        post.mean.add_(0.3 * torch.randn(post.mean.shape, generator=g))
        post.log_var.copy_(math.log(0.02) + 0.5 * torch.randn(post.log_var.shape, generator=g))
        if post.factor is not None:
            post.factor.copy_(0.2 * torch.randn(post.factor.shape, generator=g))
    return post


def test_fixed_entries_have_zero_variance_and_never_change():
    spec = get_arch("mlp-digits", "w_asym")
    post = randomised(spec, PosteriorConfig(rank=2, learn_diag=True))
    layout = post.layout
    fixed = ~layout.trainable_mask
    reference = layout.flatten(spec.build(init_seed=0))
    assert int(fixed.sum()) == 672 and post.num_variational == layout.num_trainable == 2794

    variance = post.variance()
    assert (variance[fixed] == 0).all() and (variance[~fixed] > 0).all()

    # a few ELBO steps move the trainable entries, never the fixed ones
    g = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(post.variational_parameters(), lr=1e-2)
    x, y = torch.randn(32, 64, generator=g), torch.randint(0, 10, (32,), generator=g)
    for _ in range(3):
        loss, _ = post.neg_elbo(x, y, 100, g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    samples = torch.stack([post.sample_layout(g) for _ in range(20)])
    assert torch.equal(samples[:, fixed], reference[fixed].expand(20, -1))
    assert (samples[:, ~fixed].std(0) > 0).all()

    # the dict the network runs with and the flat vector describe the same network
    vector = post.sample_vector(g)
    rebuilt = layout.load_into(spec.build(init_seed=9), post.to_layout(vector))
    torch.testing.assert_close(post.forward_sample(x, vector), rebuilt(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch,variant,expected", [
    ("mlp-digits", "w_asym", 2794), ("mlp-digits", "standard", 3466), ("mlp-digits", "sigma_asym", 3466),
    ("cnn-mnist", "w_asym", 4114), ("resnet8", "w_asym", 60634),
])
def test_kl_counts_exactly_the_trainable_entries(arch, variant, expected):
    spec = get_arch(arch, variant)
    for kind in ("mean_field", "elrg"):
        post = VariationalPosterior(spec.build(), PosteriorConfig(kind=kind, rank=3, learn_diag=True))
        assert post.num_variational == expected
        if arch == "resnet8":  # its W-Asym stem is fully fixed: no group, no noise, no KL
            assert "stem.layer" not in {g.module for g in post.groups}
        prior_var = torch.cat([torch.full((g.size,), g.prior_var) for g in post.groups])
        with torch.no_grad():
            post.mean.zero_()
            if post.factor is not None:
                post.factor.zero_()
            post.log_var.copy_(torch.log(prior_var))
            assert abs(float(post.kl())) < 1e-2  # q = prior
            c = 2.0  # every variance twice the prior's: 0.5 (c - 1 - ln c) per entry
            post.log_var.add_(math.log(c))
            torch.testing.assert_close(float(post.kl()), 0.5 * expected * (c - 1 - math.log(c)), rtol=1e-4, atol=1e-3)


def _dense_covariance(post: VariationalPosterior) -> torch.Tensor:
    var = post.log_var.detach().double().exp()
    cov = torch.diag(var)
    for g in post.groups:
        v = post.factor.detach().double()[g.start : g.stop]
        cov[g.start : g.stop, g.start : g.stop] += v @ v.T / post.rank
    return cov


def test_elrg_covariance_and_kl_match_a_dense_gaussian():
    post = randomised(tiny_mlp(), PosteriorConfig(rank=3, learn_diag=True))
    assert post.rank == 3 and len(post.groups) == 5  # 3 linear layers, 2 LayerNorms
    cov = _dense_covariance(post)
    mean = post.mean.detach().double()
    prior = torch.cat([torch.full((g.size,), g.prior_var, dtype=torch.float64) for g in post.groups])
    expected = kl_divergence(MultivariateNormal(mean, cov), MultivariateNormal(torch.zeros_like(mean), torch.diag(prior)))
    torch.testing.assert_close(float(post.kl().detach()), float(expected), rtol=1e-4, atol=1e-4)

    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        samples = torch.stack([post.sample_vector(g) for _ in range(20000)]).double()
    torch.testing.assert_close(samples.mean(0), mean, atol=0.01, rtol=0)
    sample_cov = torch.cov(samples.T)
    assert (sample_cov - cov).abs().max() < 0.1 * cov.diagonal().max()


def explicit_samples(post: VariationalPosterior, x: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """The network's outputs on ``x`` (one example) under ``n`` explicit weight samples."""
    vectors = torch.stack([post.sample_vector(g) for _ in range(n)])
    return torch.func.vmap(lambda v: post.forward_sample(x, v))(vectors).squeeze(1)


def _output_moments_agree(local: torch.Tensor, explicit: torch.Tensor) -> None:
    n = len(explicit)
    scale = explicit.std(0)
    assert (scale > 1e-3).all()
    assert ((local.mean(0) - explicit.mean(0)).abs() < 5 * scale * math.sqrt(2 / n)).all()
    ratio = local.std(0) / scale
    assert ((ratio > 0.88) & (ratio < 1.12)).all(), ratio


@pytest.mark.parametrize("kind", ["mean_field", "elrg"])
def test_local_reparameterisation_matches_explicit_weight_sampling(kind):
    """Per example, the training forward pass draws the same output distribution as running the
    network on an explicit weight sample (moments of every output over 3,000 draws). Without norm
    layers every group is a local Linear one, so one batch of copies gives independent draws."""
    spec = dataclasses.replace(tiny_mlp(), layer_norm=False)
    post = randomised(spec, PosteriorConfig(kind=kind, rank=2, learn_diag=True))
    assert len(post.groups) == 3 and all(g.local for g in post.groups)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 6, generator=g)
    with torch.no_grad():
        local = post.forward_local(x.expand(3000, -1), g)
    _output_moments_agree(local, explicit_samples(post, x, 3000, g))


def test_groups_sampled_per_batch_give_the_same_distribution():
    """Norm layers get one weight sample per batch; draws from batches of one example match
    explicit sampling."""
    post = randomised(tiny_mlp(), PosteriorConfig(rank=2, learn_diag=True))
    assert [g.local for g in post.groups] == [True, False, True, False, True]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 6, generator=g)
    with torch.no_grad():
        local = torch.cat([post.forward_local(x, g) for _ in range(1500)])
    _output_moments_agree(local, explicit_samples(post, x, 1500, g))


def test_convolutions_are_sampled_per_batch_unless_local_conv():
    """Local reparameterisation draws each output position's noise independently although the
    positions share one kernel (an approximation), so by default conv weights are sampled per
    batch; ``local_conv`` (the paper's code) adds per-example noise on convs too."""
    default = randomised(tiny_cnn(), PosteriorConfig(rank=2, learn_diag=True))
    assert [g.local for g in default.groups] == [False, False, False, False, True]
    post = randomised(tiny_cnn(), PosteriorConfig(rank=2, learn_diag=True, local_conv=True))
    assert [g.local for g in post.groups] == [True, False, True, False, True]
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 2, 6, 6, generator=g).expand(64, -1, -1, -1)
    loss, _ = post.neg_elbo(x, torch.zeros(64, dtype=torch.long), 100, g)
    loss.backward()
    assert math.isfinite(float(loss.detach())) and post.factor.grad.abs().sum() > 0
    with torch.no_grad():
        out = post.forward_local(x, g)
    assert out.std(0).min() > 0  # copies of one input differ: per-example noise


def test_expected_calibration_error_on_hand_built_cases():
    target = torch.tensor([0, 0, 1, 1])
    # confident and right: calibrated
    assert expected_calibration_error(torch.eye(2)[target], target) == 0.0
    # 90% confident, half right: |0.5 - 0.9|
    half = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.9, 0.1], [0.1, 0.9]])
    assert expected_calibration_error(half, target) == pytest.approx(0.4)
    # two bins of two: (0.95, both right) and (0.55, one right): each off by 0.05, weight 1/2
    two = torch.tensor([[0.95, 0.05], [0.45, 0.55], [0.45, 0.55], [0.05, 0.95]])
    assert expected_calibration_error(two, torch.tensor([0, 1, 0, 1])) == pytest.approx(0.05)
    # 15 equal bins: 0.62 and 0.65 share (0.6, 0.667]; 0.70 is alone in (0.667, 0.733]
    probs = torch.tensor([[0.62, 0.38], [0.65, 0.35], [0.70, 0.30]])
    assert expected_calibration_error(probs, torch.tensor([0, 1, 0])) == pytest.approx((abs(0.5 - 0.635) * 2 + 0.3) / 3)
    metrics = classification_metrics(half, target)
    assert metrics["acc"] == 0.5 and metrics["nll"] == pytest.approx(-(math.log(0.9) + math.log(0.1)) / 2)


def test_config_errors_are_spec_errors():
    with pytest.raises(SpecError, match="posterior 'laplace' is unknown"):
        PosteriorConfig(kind="laplace")
    with pytest.raises(SpecError, match="elrg needs rank >= 1"):
        PosteriorConfig(rank=0)


TINY = ["bench", "bnn", "--settings", "mlp8", "--dataset", "digits", "--full-train", "--depth", "2", "--width", "16",
        "--epochs", "2", "--instances", "1", "--batch-size", "128", "--samples", "3", "--curve-samples", "2", "--quiet"]


def test_bench_bnn_end_to_end_writes_its_files_and_resumes(tmp_path, capsys, monkeypatch):
    out = tmp_path / "bnn"
    assert main([*TINY, "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)  # stdout holds exactly one JSON object
    assert [(r["setting"], r["variant"]) for r in report["rows"]] == [("mlp8", "standard"), ("mlp8", "w_asym")]
    standard, w_asym = report["rows"]
    assert standard["trainable_params"] == 64 * 16 + 16 + 2 * 16 + 16 * 16 + 16 + 2 * 16 + 16 * 10 + 10
    assert w_asym["trainable_params"] == standard["trainable_params"] - 2 * (16 + 16 + 10)  # n_fix 2 per row
    for row in report["rows"]:
        assert 0 <= row["test_acc"]["mean"] <= 1 and row["test_nll"]["mean"] > 0 and 0 <= row["test_ece"]["mean"] <= 1
    for run in report["runs"]:
        assert run["status"] == "ok" and len(run["curves"]["test_acc"]) == 2
        assert run["early_acc"] == run["curves"]["test_acc"][0]
    # each run's file is named by its settings: runs with other settings in this folder sit beside it
    assert [re.sub("[0-9a-f]{10}", "H", run["file"]) for run in report["runs"]] == [
        "runs/mlp8-digits-standard-seed0-H.json", "runs/mlp8-digits-w_asym-seed0-H.json"]
    for name in ("bnn.json", "bnn.md", *(run["file"] for run in report["runs"])):
        assert (out / name).stat().st_size > 0
    assert (out / "bnn.png").read_bytes()[:4] == b"\x89PNG"
    assert "| mlp8 | w_asym | 1,462 |" in (out / "bnn.md").read_text()

    from benchmarks import bnn

    monkeypatch.setattr(bnn, "fit_variational", lambda *a, **k: pytest.fail("a saved run was trained again"))
    assert main([*TINY, "--out", str(out)]) == 0
    assert "| mlp8 | standard |" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--instances", "0"], "--instances must be >= 1"),
    (["--early-epoch", "3"], "early epoch 3 is not within the 2 training epochs"),
    (["--posterior", "elrg", "--rank", "0"], "elrg needs rank >= 1"),
])
def test_bench_bnn_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, message):
    assert main([*TINY, "--out", str(tmp_path / "x"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


def test_bench_bnn_unknown_setting_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "bnn", "--out", str(tmp_path), "--settings", "mlp99"])
    assert exit_info.value.code == 2 and "invalid choice: 'mlp99'" in capsys.readouterr().err
