"""NFN (Zhou et al. 2023, NP variant): equivariance of its layer, invariance of the model, errors, training."""

from __future__ import annotations

import pytest
import torch

import metanets.nfn  # noqa: F401  (registers "nfn")
from metanets.models import MetanetContext, get_metanet
from metanets.nfn import NFN, NPLinear, NPPool, chain_layers, unflatten_chain
from tests.helpers import fit, permuted_networks
from zoo import ParamLayout, SpecError, get_arch
from zoo.nets import CNNSpec, MLPSpec


def permute_space(weights: list[torch.Tensor], biases: list[torch.Tensor], perms: list[torch.Tensor]):
    """Permute level ``l`` of a weight space by ``perms[l]`` (levels 0 … L, channels last)."""
    new_w = [w[:, perms[i + 1]][:, :, perms[i]] for i, w in enumerate(weights)]
    new_b = [b[:, perms[i + 1]] for i, b in enumerate(biases)]
    return new_w, new_b


@pytest.mark.parametrize("levels", [(5, 7, 6, 4), (3, 8, 2), (4, 3)])
def test_np_layer_is_equivariant_to_hidden_permutations(levels):
    torch.manual_seed(0)
    batch, depth = 3, len(levels) - 1
    cw, cb = [9] * (depth - 1) + [1], [2] * depth
    weights = [torch.randn(batch, levels[i + 1], levels[i], cw[i]) for i in range(depth)]
    biases = [torch.randn(batch, levels[i + 1], cb[i]) for i in range(depth)]
    layer = NPLinear(cw, cb, 6)
    # hidden levels permuted, input and output levels fixed
    perms = [torch.arange(levels[0])] + [torch.randperm(n) for n in levels[1:-1]] + [torch.arange(levels[-1])]
    out_w, out_b = layer(weights, biases)
    ref_w, ref_b = permute_space(out_w, out_b, perms)
    got_w, got_b = layer(*permute_space(weights, biases, perms))
    for ref, got in zip(ref_w + ref_b, got_w + got_b):
        assert got.shape == ref.shape
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    # the pooled readout is invariant
    pool = NPPool(levels[0], levels[-1], depth, 6)
    pooled = pool(out_w, out_b)
    assert pooled.shape == (batch, pool.out_features)
    torch.testing.assert_close(pool(got_w, got_b), pooled, atol=1e-5, rtol=0)


def test_np_layer_is_not_invariant_to_input_permutations():
    """The input level is not a symmetry: permuting it must change the layer's output."""
    torch.manual_seed(0)
    weights = [torch.randn(2, 5, 4, 1), torch.randn(2, 3, 5, 1)]
    biases = [torch.randn(2, 5, 1), torch.randn(2, 3, 1)]
    pool, layer = NPPool(4, 3, 2, 4), NPLinear([1, 1], [1, 1], 4)
    perms = [torch.tensor([1, 0, 3, 2]), torch.arange(5), torch.arange(3)]
    a = pool(*layer(weights, biases))
    b = pool(*layer(*permute_space(weights, biases, perms)))
    assert not torch.allclose(a, b, atol=1e-4)


def test_unflatten_matches_state_dict():
    spec = get_arch("cnn-mnist")
    model = spec.build(init_seed=3)
    layout = ParamLayout.from_module(model)
    weights, biases = unflatten_chain(layout.flatten(model)[None], chain_layers(layout, spec))
    assert [tuple(w.shape) for w in weights] == [(1, 16, 1, 9), (1, 16, 16, 9), (1, 16, 16, 9), (1, 10, 16, 1)]
    state = model.state_dict()
    torch.testing.assert_close(weights[1][0], state["blocks.1.layer.weight"].flatten(2))
    torch.testing.assert_close(biases[3][0, :, 0], state["head.bias"])


def build_nfn(spec) -> tuple[torch.nn.Module, ParamLayout]:
    layout = ParamLayout.from_module(spec.build())
    torch.manual_seed(0)
    nfn = get_metanet("nfn").build(MetanetContext(layout.size, layout, spec))
    return nfn.eval(), layout


SPECS = {
    "mlp-digits": get_arch("mlp-digits"),
    "mlp-mnist": get_arch("mlp-mnist"),
    "cnn-mnist": get_arch("cnn-mnist"),
    "mlp-layernorm": MLPSpec(in_features=12, widths=(9, 7, 5), out_features=3, layer_norm=True),
    "cnn-groupnorm": CNNSpec(in_channels=3, image_size=8, channels=(6, 5), num_classes=4, group_norm=True),
}


@pytest.mark.parametrize("name", list(SPECS))
def test_nfn_is_invariant_to_hidden_permutations(name):
    spec = SPECS[name]
    nfn, layout = build_nfn(spec)
    _, originals, permuted = permuted_networks(spec)
    assert not torch.equal(originals, permuted)
    with torch.no_grad():
        y, y_perm = nfn(originals), nfn(permuted)
    assert y.shape == (3,)
    torch.testing.assert_close(y_perm, y, atol=1e-4, rtol=0)
    # different networks, different predictions
    assert (y[1:] - y[0]).abs().min() > 1e-6


def test_registry_entry():
    entry = get_metanet("nfn")
    assert entry.view == "flat" and entry.invariant
    nfn, _ = build_nfn(get_arch("mlp-digits"))
    assert isinstance(nfn, NFN)


def test_resnet_is_rejected():
    spec = get_arch("resnet8")
    layout = ParamLayout.from_module(spec.build())
    with pytest.raises(SpecError, match=r"mlp, cnn.*'resnet'"):
        NFN(layout, spec)


def test_wrong_input_size_is_rejected():
    nfn, layout = build_nfn(get_arch("mlp-digits"))
    with pytest.raises(ValueError, match="flat weights"):
        nfn(torch.zeros(2, layout.size + 1))


def test_few_adamw_steps_reduce_mse():
    spec = SPECS["mlp-layernorm"]
    layout = ParamLayout.from_module(spec.build())
    torch.manual_seed(0)
    nfn = NFN(layout, spec)
    x = torch.stack([layout.flatten(spec.build(init_seed=i)) for i in range(16)])
    y = torch.randn(16, generator=torch.Generator().manual_seed(1))
    losses = fit(nfn, x, y)
    assert losses[-1] < 0.5 * losses[0]
