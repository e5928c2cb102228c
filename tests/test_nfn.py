"""NFN (Zhou et al. 2023) in its NP and HNP forms on the weight-space description: equivariance of
the layers, invariance of the model for MLP, CNN and ResNet zoos, reading, heads, registry, training."""

from __future__ import annotations

import pytest
import torch

from metanets.config import MetanetConfig
from metanets.nfn import NFN, ChannelNorm, EquivariantLinear, FeatureSpace, HNPLinear, HNPPool, NPLinear, NPPool
from metanets.registry import MetanetContext, get_metanet
from tests.helpers import fit, permuted_networks
from zoo import ParamLayout, SpecError, get_arch
from zoo.nets import CNNSpec, MLPSpec, ResNetSpec
from zoo.weightspace import INPUT, OUTPUT, weight_space

SPECS = {
    "mlp-digits": get_arch("mlp-digits"),
    "mlp-layernorm": MLPSpec(in_features=12, widths=(9, 7, 5), out_features=3, layer_norm=True),
    "cnn-mnist": get_arch("cnn-mnist"),
    "cnn-groupnorm": CNNSpec(in_channels=3, image_size=8, channels=(6, 5), num_classes=4, group_norm=True),
    # two blocks per stage: identity shortcuts, so a stream spans several blocks
    "resnet14-tiny": ResNetSpec(depth=14, base_channels=(4, 6, 8), image_size=8, num_classes=5),
    "resnet8": get_arch("resnet8"),
}


def space_of(name: str):
    spec = SPECS[name]
    layout = ParamLayout.from_module(spec.build())
    return spec, layout, weight_space(layout, spec)


def random_perms(sizes: dict[str, int], seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {s: torch.randperm(n, generator=generator) for s, n in sizes.items()}


def assert_features_close(got, ref):
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        torch.testing.assert_close(g, r, atol=2e-5, rtol=1e-4)


# -- layers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mlp-layernorm", "cnn-groupnorm", "resnet14-tiny"])
@pytest.mark.parametrize("form", ["np", "hnp"])
def test_layers_are_equivariant_to_permutations_of_their_sets(name, form):
    _, layout, space = space_of(name)
    layer = (NPLinear if form == "np" else HNPLinear)(space, 1, 4)
    features = layer.space
    torch.manual_seed(0)
    x = features.read(torch.randn(3, layout.size))
    # NP permutes every set (inputs and outputs too), HNP the hidden sets only
    perms = random_perms(features.sets, seed=1)
    assert (INPUT in perms) == (OUTPUT in perms) == (form == "np")
    out = layer(x)
    assert_features_close(layer(features.permute(x, perms)), features.permute(out, perms))
    # a second layer on more channels keeps it
    second = EquivariantLinear(features, 4, 3)
    assert_features_close(second(features.permute(out, perms)), features.permute(second(out), perms))
    # pooling is invariant
    pool = (NPPool if form == "np" else HNPPool)(features, 4)
    pooled = pool(out)
    assert pooled.shape == (3, pool.out_features)
    torch.testing.assert_close(pool(layer(features.permute(x, perms))), pooled, atol=2e-5, rtol=1e-4)


def test_hnp_distinguishes_inputs_and_np_pooling_does_not():
    """Permuting the network's input units is no symmetry for HNP; NP with NP pooling ignores it."""
    _, layout, space = space_of("mlp-layernorm")
    torch.manual_seed(0)
    flat = torch.randn(2, layout.size)
    swap = torch.tensor([1, 0, *range(2, space.sizes[INPUT])])
    w = space.weights[0]  # reads the inputs
    permuted = flat.clone()
    permuted[:, w.offset : w.stop] = flat[:, w.offset : w.stop].reshape(2, w.n_out, w.n_in)[:, :, swap].flatten(1)
    hnp = FeatureSpace.hnp(space)
    layer, pool = EquivariantLinear(hnp, 1, 4), HNPPool(hnp, 4)
    assert not torch.allclose(pool(layer(hnp.read(flat))), pool(layer(hnp.read(permuted))), atol=1e-4)
    np_space = FeatureSpace.np(space)
    layer, pool = EquivariantLinear(np_space, 1, 4), NPPool(np_space, 4)
    torch.testing.assert_close(pool(layer(np_space.read(permuted))), pool(layer(np_space.read(flat))), atol=2e-5, rtol=1e-4)
    # HNP pooling on NP features keeps the input index
    keep = HNPPool(np_space, 4)
    assert not torch.allclose(keep(layer(np_space.read(flat))), keep(layer(np_space.read(permuted))), atol=1e-4)


def test_reset_parameters_redraws_every_map():
    _, _, space = space_of("cnn-groupnorm")
    layer = HNPLinear(space, 2, 3)
    before = [p.detach().clone() for p in layer.parameters()]
    layer.reset_parameters()
    assert all(not torch.equal(a, b) for a, b in zip(before, layer.parameters()))


# -- reading the weight space -------------------------------------------------------------------


def test_read_places_weights_and_folds_unpermuted_axes():
    spec = get_arch("cnn-mnist")
    model = spec.build(init_seed=3)
    layout = ParamLayout.from_module(model)
    space, state = weight_space(layout, spec), model.state_dict()
    flat = layout.flatten(model)[None]
    np_space, hnp_space = FeatureSpace.np(space), FeatureSpace.hnp(space)
    np_x, hnp_x = dict(zip([t.name for t in np_space.tensors], np_space.read(flat))), \
        dict(zip([t.name for t in hnp_space.tensors], hnp_space.read(flat)))
    conv = state["blocks.1.layer.weight"]  # (16, 16, 3, 3): two hidden axes, kernel entries as channels
    torch.testing.assert_close(np_x["blocks.1.layer.weight"][0], conv.flatten(2))
    torch.testing.assert_close(hnp_x["blocks.1.layer.weight"][0], conv.flatten(2))
    # NP: the head keeps its output axis; HNP: it becomes 10 values per hidden unit
    head = state["head.weight"]  # (10, 16)
    assert np_x["head.weight"].shape == (1, 10, 16, 1)
    torch.testing.assert_close(hnp_x["head.weight"][0], head.T)
    # HNP: the first conv (one input channel) is 9 values per hidden unit, the head bias a global vector
    torch.testing.assert_close(hnp_x["blocks.0.layer.weight"][0], state["blocks.0.layer.weight"].flatten(1))
    torch.testing.assert_close(hnp_x["head.bias"][0], state["head.bias"])
    assert [t.axes for t in hnp_space.tensors if t.name == "head.bias"] == [()]


def test_rescale_multiplies_weights_and_their_biases_by_sqrt_fan_in():
    _, layout, space = space_of("mlp-layernorm")
    flat = torch.randn(1, layout.size)
    plain, scaled = FeatureSpace.hnp(space), FeatureSpace.hnp(space, rescale=True)
    names = [t.name for t in plain.tensors]
    for name, a, b in zip(names, plain.read(flat), scaled.read(flat)):
        factor = {"blocks.0.layer": 12, "blocks.1.layer": 9, "blocks.2.layer": 7, "head": 5}.get(name.rpartition(".")[0])
        torch.testing.assert_close(b, a * factor**0.5 if factor else a)


# -- the model ----------------------------------------------------------------------------------


def build_nfn(spec, name: str = "nfn") -> tuple[torch.nn.Module, ParamLayout]:
    layout = ParamLayout.from_module(spec.build())
    torch.manual_seed(0)
    nfn = get_metanet(name).build(MetanetContext(layout.size, layout, spec))
    return nfn.eval(), layout


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("metanet", ["nfn_np", "nfn_hnp"])
def test_nfn_is_invariant_to_hidden_permutations(name, metanet):
    spec = SPECS[name]
    nfn, _ = build_nfn(spec, metanet)
    _, originals, permuted = permuted_networks(spec)
    assert not torch.equal(originals, permuted)
    with torch.no_grad():
        y, y_perm = nfn(originals), nfn(permuted)
    assert y.shape == (3,)
    torch.testing.assert_close(y_perm, y, atol=1e-5, rtol=1e-4)
    assert (y[1:] - y[0]).abs().min() > 1e-7  # different networks, different predictions


@pytest.mark.parametrize("name", ["cnn-groupnorm", "resnet14-tiny"])
def test_normalised_nfn_is_invariant(name):
    spec = SPECS[name]
    layout = ParamLayout.from_module(spec.build())
    torch.manual_seed(0)
    nfn = NFN(layout, spec, channels=(6, 4), head_hidden=32, norm=True, head_norm=True).eval()
    _, originals, permuted = permuted_networks(spec)
    with torch.no_grad():
        torch.testing.assert_close(nfn(permuted), nfn(originals), atol=1e-5, rtol=1e-4)
    assert isinstance(nfn.norms[0], ChannelNorm)


@pytest.mark.parametrize("variant", ["w_asym", "sigma_asym"])
def test_nfn_reads_asymmetric_variants(variant):
    spec = get_arch("cnn-mnist", variant)
    for metanet in ("nfn_np", "nfn_hnp"):
        nfn, layout = build_nfn(spec, metanet)
        _, originals, permuted = permuted_networks(spec, n=2)
        with torch.no_grad():
            torch.testing.assert_close(nfn(permuted), nfn(originals), atol=1e-5, rtol=1e-4)
        # σ-Asym's FiGLU matrices are not read
        space = weight_space(layout, spec)
        assert bool(space.ignored) == (variant == "sigma_asym")
        assert {t.name for t in nfn.features.tensors}.isdisjoint(space.ignored)


def test_registry_entries_and_defaults():
    for name in ("nfn", "nfn_np", "nfn_hnp"):
        entry = get_metanet(name)
        # the authors' sigmoid output is the metanet option, on by default for every NFN
        assert entry.view == "flat" and entry.invariant and entry.sigmoid and not entry.normalize
        assert MetanetConfig(name).sigmoid and not MetanetConfig(name, sigmoid=False).sigmoid
    nfn, _ = build_nfn(get_arch("mlp-digits"))
    assert isinstance(nfn, NFN) and isinstance(nfn.head[-1], torch.nn.Linear)
    assert [layer.c_out for layer in nfn.layers] == [16, 16, 5]
    assert nfn.head[0].out_features == 1000 and isinstance(nfn.pool, HNPPool)
    assert INPUT not in nfn.features.sets and OUTPUT not in nfn.features.sets
    assert nfn.norms is not None  # the strongest form measured: HNP with a ChannelNorm per layer
    published, _ = build_nfn(get_arch("mlp-digits"), "nfn_hnp")
    assert published.norms is None
    assert [layer.c_out for layer in published.layers] == [16, 16, 5] and isinstance(published.pool, HNPPool)
    np_nfn, _ = build_nfn(get_arch("mlp-digits"), "nfn_np")
    assert isinstance(np_nfn.pool, NPPool) and INPUT in np_nfn.features.sets


def test_the_sigmoid_option_bounds_the_nfn_output():
    spec = SPECS["mlp-layernorm"]
    layout = ParamLayout.from_module(spec.build())
    x = torch.randn(5, layout.size) * 30
    context = MetanetContext(layout.size, layout, spec)
    torch.manual_seed(0)
    with torch.no_grad():
        linear = NFN(layout, spec)(x)
    torch.manual_seed(0)
    from metanets.features import ZooFeatures

    features = ZooFeatures(get_metanet("nfn_hnp"), layout, {}, {}, 0, None, spec)
    assert features.context() == context
    with torch.no_grad():
        bounded = features.build(sigmoid=True)(x)
    assert bool(((bounded > 0) & (bounded < 1)).all())
    torch.testing.assert_close(bounded, torch.sigmoid(linear))


def test_bad_options_and_inputs_are_rejected():
    spec = get_arch("mlp-digits")
    layout = ParamLayout.from_module(spec.build())
    for options, match in (({"mode": "full"}, "mode must be one of np, hnp"),
                           ({"pool": "max"}, "pool must be"), ({"channels": ()}, "at least one")):
        with pytest.raises(ValueError, match=match):
            NFN(layout, spec, **options)
    nfn, _ = build_nfn(spec)
    with pytest.raises(ValueError, match="flat weights"):
        nfn(torch.zeros(2, layout.size + 1))


def test_hnp_refuses_networks_with_many_inputs():
    """HNP folds the 784 pixels into channels: 784 x 16 features per unit would need ~450M parameters."""
    spec = get_arch("mlp-mnist")
    layout = ParamLayout.from_module(spec.build())
    with pytest.raises(SpecError, match=r"'blocks.0.layer.weight' carries 784 values.*nfn_np"):
        get_metanet("nfn").build(MetanetContext(layout.size, layout, spec))
    assert isinstance(get_metanet("nfn_np").build(MetanetContext(layout.size, layout, spec)), NFN)


@pytest.mark.parametrize("mode", ["np", "hnp"])
def test_few_adamw_steps_reduce_mse(mode):
    spec = SPECS["mlp-layernorm"]
    layout = ParamLayout.from_module(spec.build())
    torch.manual_seed(0)
    nfn = NFN(layout, spec, mode=mode, channels=(8, 8), head_hidden=64)
    x = torch.stack([layout.flatten(spec.build(init_seed=i)) for i in range(16)])
    y = torch.randn(16, generator=torch.Generator().manual_seed(1))
    losses = fit(nfn, x, y)
    assert losses[-1] < 0.5 * losses[0]
