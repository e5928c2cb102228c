"""Interpolation engine, barriers, MLI statistics, Git Re-Basin weight matching, and the
``symzoo bench lmc`` / ``symzoo bench mli`` commands end to end on digits."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from generators.generate import generate
from generators.recipe import Recipe
from generators.zoospec import Dist, HyperparameterSpace, get_zoo_spec
from zoo import ParamLayout, get_arch, permutation_spec, permute_state_dict, random_permutations
from symzoo.cli import main
from zoo.interpolation import (
    InterpolationCurve,
    evaluate_stacked,
    evaluate_weights,
    interpolate,
    interpolate_weights,
    mli_statistics,
    path_alphas,
    reestimate_batchnorm,
)
from zoo.matching import align_model, weight_matching
from zoo.symmetry import invert_permutations

ARCHS = ["mlp-digits", "cnn-mnist", "resnet8", "mlp-mnist-lmc"]


def _inputs(spec, n: int = 64) -> torch.Tensor:
    return torch.randn(n, *spec.input_shape(), generator=torch.Generator().manual_seed(0))


# -- Git Re-Basin -------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_weight_matching_recovers_a_hidden_permutation(arch):
    model = get_arch(arch).build(init_seed=1)
    spec, state = permutation_spec(model), model.state_dict()
    secret = random_permutations(spec, generator=7)
    shuffled = permute_state_dict(state, spec, secret)
    perms = weight_matching(spec, state, shuffled)
    inverse = invert_permutations(secret)
    assert all(torch.equal(perms[p], inverse[p]) for p in spec.sizes)
    realigned = permute_state_dict(shuffled, spec, perms)
    assert all(torch.equal(realigned[k], state[k]) for k in state)


@pytest.mark.parametrize("arch", ["mlp-digits", "cnn-mnist", "resnet8"])
def test_aligned_network_computes_the_same_function_and_is_closer(arch):
    spec = get_arch(arch)
    target, source = spec.build(init_seed=1), spec.build(init_seed=2)
    aligned = align_model(target, source)
    x = _inputs(spec)
    with torch.no_grad():
        torch.testing.assert_close(aligned.eval()(x), source.eval()(x), rtol=1e-5, atol=1e-5)
    layout = ParamLayout.from_module(target)
    t, s, a = (layout.flatten(m) for m in (target, source, aligned))
    assert torch.dot(t, a) > torch.dot(t, s)  # the matching objective improved
    assert (t - a).norm() < (t - s).norm()


# -- interpolation engine -----------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["standard", "w_asym", "sigma_asym"])
def test_batched_path_matches_one_network_at_a_time(variant):
    spec = get_arch("cnn-mnist", variant)
    a_model, b_model = spec.build(init_seed=1), spec.build(init_seed=2)
    layout = ParamLayout.from_module(a_model)
    a, b = layout.flatten(a_model), layout.flatten(b_model)
    x, y = _inputs(spec, 96), torch.randint(0, 10, (96,), generator=torch.Generator().manual_seed(1))
    curve = interpolate(a_model, a, b, x, y, points=7, layout=layout, batch_size=40)
    for alpha, loss, acc in zip(curve.alphas, curve.loss, curve.acc):
        model = layout.load_into(spec.build(), (1 - alpha) * a + alpha * b).eval()
        with torch.no_grad():
            logits = model(x)
        assert loss == pytest.approx(float(nn.functional.cross_entropy(logits, y)), rel=1e-5, abs=1e-6)
        assert acc == pytest.approx(float((logits.argmax(1) == y).double().mean()))
    points = interpolate_weights(a, b, path_alphas(7))
    assert torch.equal(points[0], a) and torch.equal(points[-1], b)
    fixed = ~layout.trainable_mask
    assert torch.equal(points[:, fixed], a[fixed].expand(7, -1))  # W-Asym constants stay put


def test_barriers_follow_their_definitions():
    curve = InterpolationCurve(alphas=[0.0, 0.25, 0.5, 0.75, 1.0], loss=[1.0, 2.5, 2.0, 1.2, 0.6], acc=[0.0] * 5)
    assert curve.midpoint_barrier == pytest.approx(2.0 - 0.5 * (1.0 + 0.6))
    assert curve.max_barrier == pytest.approx(2.5 - (0.75 * 1.0 + 0.25 * 0.6))
    flat = InterpolationCurve(alphas=[0.0, 0.5, 1.0], loss=[1.0, 0.8, 0.6], acc=[0.0] * 3)
    assert flat.midpoint_barrier == pytest.approx(0.0) and flat.max_barrier == pytest.approx(0.0)
    with pytest.raises(ValueError, match="odd"):
        path_alphas(24)


def test_mli_statistics_on_known_curves():
    convex_decreasing = [1.0, 0.5, 0.3, 0.2, 0.15]
    s = mli_statistics(convex_decreasing)
    assert s.monotonic and s.delta == pytest.approx(-0.05)
    assert s.local_convexity == 1.0 and s.global_convexity == 1.0
    bump = [1.0, 1.2, 0.6, 0.5, 0.2]  # rises first, then concave-convex
    s = mli_statistics(bump)
    assert not s.monotonic and s.delta == pytest.approx(0.2)
    assert s.local_convexity == pytest.approx(1 / 3)  # second differences -0.8, 0.5, -0.2
    assert s.global_convexity == pytest.approx(1 / 3)  # chord 0.8, 0.6, 0.4: only 0.6 is on or below it
    with pytest.raises(ValueError):
        mli_statistics([1.0, 0.5])


def test_batchnorm_statistics_are_reestimated_along_the_path():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    layout = ParamLayout.from_module(net)
    x, y = torch.randn(200, 5), torch.randint(0, 3, (200,))
    reestimate_batchnorm(net, x, batch_size=50)  # cumulative over 4 batches
    with torch.no_grad():
        hidden = net[0](x)
    torch.testing.assert_close(net[1].running_mean, hidden.mean(0), rtol=1e-5, atol=1e-6)
    assert not net.training
    reestimate_batchnorm(net, x)  # one batch, as interpolate() uses below
    a = layout.flatten(net)
    other = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    reestimate_batchnorm(other, x)
    b = layout.flatten(other)
    stale = interpolate(net, a, b, x, y, points=5, layout=layout)
    fresh = interpolate(net, a, b, x, y, points=5, layout=layout, batchnorm_data=x)
    assert torch.equal(layout.flatten(net), a)  # the caller's network is left as it was
    assert stale.loss[0] == pytest.approx(fresh.loss[0], rel=1e-5)  # endpoints already had their own statistics
    assert stale.loss[2] != pytest.approx(fresh.loss[2], rel=1e-3)


def test_evaluate_weights_scores_many_networks_at_once():
    spec = get_arch("mlp-digits")
    models = [spec.build(init_seed=i) for i in range(5)]
    layout = ParamLayout.from_module(models[0])
    x, y = _inputs(spec, 50), torch.randint(0, 10, (50,))
    losses, accs = evaluate_weights(models[0], layout, torch.stack([layout.flatten(m) for m in models]), x, y,
                                    batch_size=16, models_per_pass=2)
    with torch.no_grad():
        expected = [float(nn.functional.cross_entropy(m(x), y)) for m in models]
    assert losses.tolist() == pytest.approx(expected, rel=1e-5)
    assert accs.shape == (5,)



def test_a_network_scores_the_same_in_any_pass():
    """Bit for bit, however many rows share its pass: a pass of one or two rows runs padded to
    MIN_ROWS (under vmap, oneDNN rounds the convolutions of one or two networks differently; on
    x86 resnet8's losses differed by up to 1e-7 without it), as the batched trainer's evaluation
    (the same evaluate_stacked) always did. The template's mode is left as it was."""
    spec = get_arch("resnet8", "w_asym")
    models = [spec.build(init_seed=i) for i in range(5)]
    layout = ParamLayout.from_module(models[0])
    weights = torch.stack([layout.flatten(m) for m in models])
    x, y = _inputs(spec, 12), torch.randint(0, 10, (12,), generator=torch.Generator().manual_seed(1))
    together = evaluate_weights(models[0], layout, weights, x, y, batch_size=8)
    for per_pass in (1, 2, 3):
        apart = evaluate_weights(models[0], layout, weights, x, y, batch_size=8, models_per_pass=per_pass)
        assert torch.equal(apart[0], together[0]) and torch.equal(apart[1], together[1]), per_pass
    template = spec.build().train()
    params = {s.name: weights[:2, s.offset : s.stop].view(2, *s.shape) for s in layout.slots}
    loss, acc = evaluate_stacked(template, params, x, y, batch_size=8, loss_dtype=torch.float32)
    assert template.training and loss.dtype == torch.float32 and acc.dtype == torch.float64
    assert loss.tolist() == pytest.approx(together[0][:2].tolist(), rel=1e-5) and torch.equal(acc, together[1][:2])

# -- symzoo bench lmc / mli ---------------------------------------------------------------------------
def test_bench_lmc_end_to_end_and_resume(tmp_path, capsys):
    out = tmp_path / "lmc"
    args = ["bench", "lmc", "--out", str(out), "--arch", "mlp-digits", "--dataset", "digits", "--pairs", "2",
            "--epochs", "4", "--points", "9", "--json", "--quiet"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["variants"]) == {"standard", "standard+rebasin", "w_asym", "sigma_asym"}
    for row in report["variants"].values():
        assert len(row["pairs"]) == 2 and len(row["pairs"][0]["loss"]) == 9
        assert row["max_barrier"]["mean"] >= row["midpoint_barrier"]["mean"] - 1e-9
    rebasin, standard = report["variants"]["standard+rebasin"], report["variants"]["standard"]
    assert rebasin["midpoint_barrier"]["mean"] < standard["midpoint_barrier"]["mean"]
    # Re-Basin only permutes: the endpoints' losses are those of the unaligned networks
    for aligned, plain in zip(rebasin["pairs"], standard["pairs"]):
        assert aligned["loss"][0] == plain["loss"][0]
        assert aligned["loss"][-1] == pytest.approx(plain["loss"][-1], rel=1e-5)
    assert {p.name for p in out.iterdir()} >= {"lmc.json", "lmc.md", "lmc.png", "models"}
    # a re-run loads the trained networks instead of training them again
    assert main(args[:-1]) == 0
    captured = capsys.readouterr()
    assert "loaded from" in captured.err and "standard+rebasin" in captured.out
    assert json.loads((out / "lmc.json").read_text())["variants"]["standard"]["pairs"] == standard["pairs"]
    # another evaluation grid re-evaluates the saved networks, it does not retrain them
    fewer_points = [a if a != "9" else "5" for a in args[:-1]]
    assert main(fewer_points) == 0
    captured = capsys.readouterr()
    assert captured.err.count("loaded from") == 3 and "networks in" not in captured.err
    assert len(json.loads((out / "lmc.json").read_text())["variants"]["standard"]["pairs"][0]["loss"]) == 5


def test_lmc_pairs_share_hyperparameters_and_differ_in_seed():
    from benchmarks.lmc import lmc_setting

    jobs = lmc_setting("mlp-mnist-lmc", "paper").jobs()
    assert len(jobs) == 6 and len({j.seed for j in jobs}) == 6
    assert {(j.lr, j.weight_decay, j.epochs, j.label_smoothing) for j in jobs} == {(1e-3, 0.03, 25, 0.0)}


def test_constant_schedule_keeps_the_learning_rate():
    from generators.recipe import learning_rates

    recipe = Recipe(batch_size=64, schedule="constant")
    lr = learning_rates(recipe, torch.tensor([1e-3, 2e-3]), torch.tensor([1, 2]), steps_per_epoch=10, step=15)
    assert lr.tolist() == pytest.approx([0.0, 2e-3])


@pytest.mark.parametrize("args, message", [
    (["--arch", "nope"], "no LMC recipe"),
    (["--arch", "mlp-digits", "--dataset", "digits", "--points", "4"], "odd"),
    (["--recipe", "fast"], "--recipe"),
    (["--variants", "standard", "bogus"], "unknown variant"),
])
def test_bench_lmc_bad_input_is_one_line(tmp_path, capsys, args, message):
    assert main(["bench", "lmc", "--out", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def _tiny_zoo(tmp_path, variant: str):
    spec = dataclasses.replace(
        get_zoo_spec("digits-mlp"), n_models=6, batch_models=6, variant=variant,
        hyperparameters=dataclasses.replace(HyperparameterSpace(), epochs=Dist("int_uniform", 1, 3)))
    out = tmp_path / variant
    generate(spec, out, quiet=True)
    return out


def test_bench_mli_compares_the_same_models_across_zoos(tmp_path, capsys):
    zoos = [_tiny_zoo(tmp_path, v) for v in ("standard", "w_asym")]
    out = tmp_path / "mli"
    assert main(["bench", "mli", "--zoo", *map(str, zoos), "--out", str(out), "--models", "4", "--points", "5",
                 "--eval-examples", "300", "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["models"] == 4 and report["eval_examples"] == 300
    rows = report["variants"]
    assert set(rows) == {"standard", "w_asym"}
    assert [m["index"] for m in rows["standard"]["models"]] == [m["index"] for m in rows["w_asym"]["models"]]
    for row in rows.values():
        for m in row["models"]:
            assert len(m["loss"]) == 5
            assert m["monotonic"] == (m["delta"] <= 0)
    # the path's end is the stored model: its loss is the model's loss on those images
    from generators.data import load_images
    from zoo.storage import open_zoo

    zoo = open_zoo(zoos[0])
    data = load_images("digits")
    first = rows["standard"]["models"][0]
    for split in ("train", "validation", "test"):
        cols = zoo.load(split, ["index", "weights"])
        for index, weights in zip(cols["index"], cols["weights"]):
            if int(index) == first["index"]:
                net = zoo.rebuild_weights(weights).eval()
                with torch.no_grad():
                    loss = float(nn.functional.cross_entropy(net(data.x_train[:300]), data.y_train[:300]))
                assert first["loss"][-1] == pytest.approx(loss, rel=1e-4)
    assert (out / "mli.png").stat().st_size > 0 and (out / "mli.md").exists()


def test_bench_mli_bad_input(tmp_path, capsys):
    assert main(["bench", "mli", "--zoo", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "no such zoo directory" in capsys.readouterr().err
    assert main(["bench", "mli", "--preset", "digits-mlp", "--variants", "w_asymm", "--out", str(tmp_path / "o")]) == 2
    assert "unknown variant" in capsys.readouterr().err
