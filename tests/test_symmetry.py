import dataclasses

import pytest
import torch

from zoo import PRESETS, get_arch, permutation_spec, permute_state_dict, random_permutations, symmetry_deviation
from zoo.symmetry import PermutationSpec, identity_permutations, invert_permutations, permute_model


def deviation(arch: str, variant: str, trials: int = 3) -> float:
    spec = get_arch(arch, variant)
    x = torch.randn(16, *spec.input_shape(), generator=torch.Generator().manual_seed(0))
    return max(symmetry_deviation(spec.build(init_seed=0), x, trials=trials, seed=1))


@pytest.mark.parametrize("arch", list(PRESETS))
def test_permutation_symmetry_holds_for_standard_networks(arch):
    assert deviation(arch, "standard") <= 1e-5


@pytest.mark.parametrize("arch", list(PRESETS))
@pytest.mark.parametrize("variant", ["w_asym", "sigma_asym"])
def test_permutation_symmetry_breaks_for_asymmetric_networks(arch, variant):
    assert deviation(arch, variant) >= 1e-2


@pytest.mark.parametrize("arch", list(PRESETS))
def test_spec_covers_every_trainable_tensor_with_consistent_sizes(arch):
    model = get_arch(arch).build()
    spec = permutation_spec(model)
    state = model.state_dict()
    assert set(spec.axes) == set(state)
    for perm, axes in spec.perm_to_axes().items():
        assert axes, perm
        for key, axis in axes:
            assert state[key].shape[axis] == spec.sizes[perm], (perm, key, axis)
    sigma = get_arch(arch, "sigma_asym").build()
    untouched = set(sigma.state_dict()) - set(permutation_spec(sigma).axes)
    assert untouched and all(k.endswith("F_mat") for k in untouched)  # fixed matrices never move


def test_resnet_residual_stream_shares_one_permutation_per_stage():
    spec = permutation_spec(get_arch("resnet20").build())
    # stem + stage 1 blocks share a stream; each 1x1 shortcut starts a new one; 9 block interiors.
    assert sorted(p for p in spec.sizes if p.startswith("stream")) == ["stream.0", "stream.1.0", "stream.2.0"]
    assert sum(p.endswith(".inner") for p in spec.sizes) == 9
    assert spec.axes["stages.0.2.conv2.weight"][0] == "stream.0" == spec.axes["stem.layer.weight"][0]
    assert spec.axes["stages.1.0.shortcut.0.weight"][:2] == ("stream.1.0", "stream.0")
    assert spec.axes["head.weight"] == (None, "stream.2.0")


def test_norm_parameters_must_move_with_their_units():
    model = get_arch("resnet8").build()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.GroupNorm):
                module.weight.uniform_(0.5, 1.5)  # make the affine parameters matter
    spec = permutation_spec(model)
    without_norms = PermutationSpec(spec.sizes, {k: v for k, v in spec.axes.items() if "norm" not in k})
    perms = random_permutations(spec, 0)
    broken = permute_model(model, identity_permutations(spec))
    broken.load_state_dict(permute_state_dict(model.state_dict(), without_norms, perms))
    x = torch.randn(4, 3, 32, 32)
    assert (broken(x) - model(x)).abs().max() > 1e-3
    assert torch.allclose(permute_model(model, perms)(x), model(x), atol=1e-5)


def test_permutations_act_nontrivially_and_invert():
    model = get_arch("cnn-mnist").build()
    spec = permutation_spec(model)
    perms = random_permutations(spec, 3)
    state = model.state_dict()
    permuted = permute_state_dict(state, spec, perms)
    assert not torch.equal(permuted["blocks.1.layer.weight"], state["blocks.1.layer.weight"])
    restored = permute_state_dict(permuted, spec, invert_permutations(perms))
    for key, tensor in state.items():
        assert torch.equal(restored[key], tensor), key


def test_w_asym_fixed_entries_stay_in_place_under_permutation():
    model = get_arch("mlp-digits", "w_asym").build()
    permuted = permute_model(model, random_permutations(permutation_spec(model), 0))
    layer = permuted.blocks[0].layer
    assert torch.equal(permuted.state_dict()["blocks.0.layer.weight"][~layer.mask], layer.fixed_values[~layer.mask])


def test_random_permutations_are_seeded():
    spec = permutation_spec(get_arch("mlp-mnist").build())
    a, b = random_permutations(spec, 7), random_permutations(spec, 7)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], random_permutations(spec, 8)[k]) for k in a)
    assert dataclasses.is_dataclass(spec)
