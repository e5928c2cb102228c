"""Metanet input options (issue 16 §2, §3, §5): per-tensor standardisation from the train split,
the sigmoid head, and permutation augmentation, through training, checkpoints and the leaderboard."""

from __future__ import annotations


import pytest
import torch

from metanets.models import get_metanet
from metanets.train import MetanetConfig, load_features, train_metanet
from metanets.views import per_tensor_standardizer, tensor_ids, trainable_view
from zoo.nets import get_arch
from zoo.layout import ParamLayout
from tests.helpers import digits_zoo_spec
from zoo.storage import open_zoo
from zoo.symmetry import permutation_spec, permute_state_dict, random_permutations


@pytest.fixture(scope="module")
def digits_zoo(tmp_path_factory):
    from generators.generate import generate

    out = tmp_path_factory.mktemp("inputs") / "digits"
    generate(digits_zoo_spec(40), out, quiet=True)
    return out


def test_per_tensor_standardizer_gives_each_tensor_zero_mean_and_unit_std():
    layout = ParamLayout.from_module(get_arch("mlp-digits").build())
    rows = torch.randn(30, layout.size) * 3 + torch.linspace(-2, 2, layout.size)
    ids = tensor_ids(layout)
    mean, std = per_tensor_standardizer([rows[:7], rows[7:]], ids)  # in two batches
    scaled = (rows - mean) / std
    for i, slot in enumerate(layout.slots):
        block = scaled[:, slot.offset : slot.stop]
        assert float(block.mean()) == pytest.approx(0, abs=1e-5)
        assert float(block.std(unbiased=False)) == pytest.approx(1, abs=1e-4)
        assert torch.all(ids[slot.offset : slot.stop] == i)
    constant = per_tensor_standardizer([torch.ones(4, layout.size)], ids)[1]
    assert torch.all(constant == 1)  # no spread: left unscaled rather than divided by ~0


def test_per_tensor_scaling_commutes_with_hidden_unit_permutations():
    """Why per tensor and not per entry: standardising, then permuting, equals permuting, then
    standardising; so an invariant metanet stays invariant on standardised inputs."""
    model = get_arch("mlp-digits").build()
    layout, spec = ParamLayout.from_module(model), permutation_spec(model)
    rows = torch.stack([layout.flatten(get_arch("mlp-digits").build(init_seed=s)) for s in range(8)])
    mean, std = per_tensor_standardizer([rows], tensor_ids(layout))
    perms = random_permutations(spec, 0)
    state = layout.unflatten(rows[0])
    permuted = layout.flatten(permute_state_dict(state, spec, perms))
    scaled_then_permuted = layout.flatten(permute_state_dict(layout.unflatten((rows[0] - mean) / std), spec, perms))
    assert torch.allclose((permuted - mean) / std, scaled_then_permuted, atol=1e-6)


def test_gmn_and_statnn_normalise_by_default_and_the_paper_baselines_do_not(digits_zoo):
    assert [get_metanet(m).normalize for m in ("statnn", "gmn", "mlp", "dmc", "deepsets", "linear")] == [
        True, True, False, False, False, False]
    assert MetanetConfig("gmn").normalize and not MetanetConfig("mlp").normalize
    assert MetanetConfig("mlp", normalize=True).normalize and not MetanetConfig("gmn", normalize=False).normalize
    zoo = open_zoo(digits_zoo)
    plain = load_features(zoo, get_metanet("mlp"), "test_acc")
    scaled = load_features(zoo, get_metanet("mlp"), "test_acc", normalize=True)
    assert plain.normalizer is None
    index = torch.arange(len(scaled.targets["train"]))
    x = scaled.batch("train", index)  # trainable entries, each tensor standardised over the train split
    assert x.shape[1] == zoo.layout.num_trainable and abs(float(x.mean())) < 1e-4
    assert torch.allclose(x, (trainable_view(plain.inputs["train"][index].float(), zoo.layout) - scaled.normalizer[0])
                          / scaled.normalizer[1])
    validation = scaled.batch("validation", torch.arange(len(scaled.targets["validation"])))
    assert abs(float(validation.mean())) > 0  # other splits use the train split's statistics, not their own


def test_the_sigmoid_head_is_the_default_only_for_accuracy_targets_of_gmn_and_nfn():
    defaults = {m: MetanetConfig(m).sigmoid for m in ("gmn", "nfn", "statnn", "mlp", "dmc", "deepsets", "linear")}
    assert defaults == {"gmn": True, "nfn": True, "statnn": False, "mlp": False, "dmc": False, "deepsets": False,
                        "linear": False}
    assert MetanetConfig("gmn", target="train_acc").sigmoid
    # an epoch count or a learning rate is not bounded by (0, 1)'s meaning: off unless asked for
    assert not MetanetConfig("gmn", target="epochs").sigmoid and not MetanetConfig("nfn", target="lr").sigmoid
    assert MetanetConfig("gmn", target="lr", sigmoid=True).sigmoid


def test_sigmoid_head_bounds_predictions_and_augmentation_trains(digits_zoo):
    run = train_metanet(digits_zoo, MetanetConfig("mlp", epochs=2, lrs=(1e-3,), seeds=1, sigmoid=True, augment=True,
                                                  warmup_steps=3),
                        quiet=True)
    model = run.features.build(sigmoid=True)
    model.load_state_dict(run.best_state)
    with torch.no_grad():
        pred = model(run.features.batch("test", torch.arange(len(run.features.targets["test"]))) * 100)
    assert torch.all((pred >= 0) & (pred <= 1))
    assert run.summary["config"]["augment"] and run.summary["config"]["sigmoid"]


def test_augmented_batches_differ_per_draw_and_keep_the_targets(digits_zoo):
    from metanets.augment import PermutationAugmenter

    zoo = open_zoo(digits_zoo)
    features = load_features(zoo, get_metanet("mlp"), "test_acc")
    features.augmenter = PermutationAugmenter(zoo.layout, zoo.spec)
    index = torch.arange(8)
    plain = features.batch("train", index)
    first = features.batch("train", index, torch.Generator().manual_seed(0))
    again = features.batch("train", index, torch.Generator().manual_seed(0))
    other = features.batch("train", index, torch.Generator().manual_seed(1))
    assert torch.equal(first, again) and not torch.equal(first, other) and not torch.equal(first, plain)
    # a permutation only reorders each network's entries
    assert torch.allclose(first.sort(dim=1).values, plain.sort(dim=1).values)


def test_augmentation_is_refused_where_it_cannot_apply(digits_zoo, tmp_path):
    from zoo.errors import SpecError

    with pytest.raises(SpecError, match="statnn reads per-tensor statistics"):
        MetanetConfig("statnn", augment=True)
    from generators.generate import generate

    wasym = tmp_path / "wasym"
    generate(digits_zoo_spec(4, max_epochs=1, variant="w_asym"), wasym, quiet=True)
    with pytest.raises(SpecError):  # permuting fixed entries is no symmetry: refused in one line
        train_metanet(wasym, MetanetConfig("mlp", epochs=1, lrs=(1e-3,), seeds=1, augment=True), quiet=True)
