import math

import pytest
import torch
from torch import nn

from zoo.nn import Activation, FiGLU, WAsymConv2d, WAsymLinear


def make_layers():
    return [
        (WAsymLinear(20, 12, n_fix=5, kappa=2.0, seed=11), torch.randn(32, 20)),
        (WAsymConv2d(4, 8, 3, padding=1, n_fix=10, kappa=1.5, seed=12), torch.randn(8, 4, 6, 6)),
        (WAsymConv2d(8, 6, 3, stride=2, n_fix=3, kappa=2.0, mask_type="filter_random_subsets", seed=13),
         torch.randn(8, 8, 7, 7)),
    ]


@pytest.mark.parametrize("layer, x", make_layers())
def test_fixed_entries_get_exactly_zero_gradient(layer, x):
    layer(x).square().sum().backward()
    fixed = ~layer.mask
    assert fixed.any()
    assert torch.count_nonzero(layer.weight.grad[fixed]) == 0
    assert torch.count_nonzero(layer.weight.grad[layer.mask]) > 0


@pytest.mark.parametrize("layer, x", make_layers())
def test_fixed_entries_bit_identical_after_100_adamw_steps_with_weight_decay(layer, x):
    fixed = ~layer.mask
    before = layer.state_dict()["weight"].clone()
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(100):
        optimizer.zero_grad()
        layer(x).sin().sum().backward()
        optimizer.step()
    after = layer.state_dict()["weight"]
    assert torch.equal(after[fixed], before[fixed])  # bit-identical
    assert not torch.equal(after[layer.mask], before[layer.mask])  # trainable entries did train
    # The raw parameter's fixed slots decayed, yet the layer computes with the fixed values.
    assert torch.equal(layer.effective_weight()[fixed], layer.fixed_values[fixed])


def test_state_dict_holds_effective_weights_and_reloads():
    layer = WAsymLinear(10, 6, n_fix=3, kappa=2.0, seed=1)
    with torch.no_grad():
        layer.weight.zero_()  # raw parameter now differs from the effective weight at fixed slots
    state = layer.state_dict()
    assert set(state) == {"weight", "bias"}  # mask and fixed values are rebuilt from the seed
    assert torch.equal(state["weight"], layer.effective_weight())
    assert torch.equal(state["weight"][~layer.mask], layer.fixed_values[~layer.mask])
    other = WAsymLinear(10, 6, n_fix=3, kappa=2.0, seed=1)
    other.load_state_dict(state)
    x = torch.randn(4, 10)
    assert torch.equal(other(x), layer(x))


def test_fixed_values_have_std_kappa():
    layer = WAsymLinear(400, 300, n_fix=200, kappa=2.5, seed=0)
    values = layer.fixed_values[~layer.mask]
    assert values.numel() == 300 * 200
    assert abs(values.std().item() - 2.5) < 0.05
    assert torch.count_nonzero(layer.fixed_values[layer.mask]) == 0


def test_from_dense_keeps_trainable_entries():
    dense = nn.Conv2d(6, 5, 3, padding=1, bias=True)
    layer = WAsymConv2d.from_dense(dense, n_fix=7, kappa=1.0, mask_type="random_subsets", seed=3)
    assert torch.equal(layer.weight[layer.mask], dense.weight[layer.mask])
    assert torch.equal(layer.bias, dense.bias)
    x = torch.randn(2, 6, 5, 5)
    expected = nn.functional.conv2d(x, layer.effective_weight(), layer.bias, padding=1)
    assert torch.allclose(layer(x), expected)


def test_w_asym_layer_equals_masked_formula():
    layer = WAsymLinear(7, 5, n_fix=2, kappa=1.0, seed=9)
    m = layer.mask.float()
    w = layer.weight * m + layer.fixed_values * (1 - m)
    x = torch.randn(3, 7)
    assert torch.allclose(layer(x), x @ w.T + layer.bias)


def test_figlu_formula_and_default_std():
    figlu = FiGLU(256, seed=4)
    assert figlu.F_mat.shape == (256, 256)
    assert abs(figlu.F_mat.std().item() - 1 / math.sqrt(256)) < 2e-3
    x = torch.randn(10, 256)
    assert torch.allclose(figlu(x), torch.sigmoid(x @ figlu.F_mat.T) * x)
    assert figlu.fixed_entries()["F_mat"].all()


def test_figlu_conv_form_is_the_linear_form_at_every_pixel():
    conv, linear = FiGLU(6, conv=True, seed=8), FiGLU(6, seed=8)
    assert conv.F_mat.shape == (6, 6, 1, 1)
    assert torch.equal(conv.F_mat.reshape(6, 6), linear.F_mat)
    x = torch.randn(2, 6, 4, 5)
    per_pixel = linear(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    assert torch.allclose(conv(x), per_pixel, atol=1e-6)


def test_figlu_has_no_trainable_parameters_and_custom_std():
    figlu = FiGLU(64, std=0.5, seed=0)
    assert list(figlu.parameters()) == []
    assert abs(figlu.F_mat.std().item() - 0.5) < 0.03
    before = figlu.F_mat.clone()
    figlu.reset_parameters()
    assert torch.equal(figlu.F_mat, before)


def test_activation_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown activation"):
        Activation("swishy", 4)
