import pytest
import torch

from metanets.models import METANETS, get_metanet
from metanets.views import statistics_view, trainable_view
from zoo import ParamLayout, SpecError, get_arch, permutation_spec, permute_state_dict, random_permutations


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_paper_metanet_sizes_on_resnet8_layouts():
    standard = ParamLayout.from_module(get_arch("resnet8").build())
    w_asym = ParamLayout.from_module(get_arch("resnet8", "w_asym").build())
    assert count(get_metanet("mlp").build(standard.num_trainable)) == 4_994_945
    assert count(get_metanet("mlp").build(w_asym.num_trainable)) == 3_880_833
    weights = standard.flatten(get_arch("resnet8").build())[None]
    assert statistics_view(weights, standard).shape == (1, 203)
    assert count(get_metanet("statnn").build(203)) == 119_297
    assert count(get_metanet("deepsets").build(standard.size)) == 8_897
    assert count(get_metanet("dmc").build(standard.size)) == 105_357


def permuted_pair(arch: str, n: int = 3):
    spec = get_arch(arch)
    layout = ParamLayout.from_module(spec.build())
    originals, permuted = [], []
    for i in range(n):
        model = spec.build(init_seed=i)
        state = model.state_dict()
        perms = random_permutations(permutation_spec(model), 100 + i)
        originals.append(layout.flatten(state))
        permuted.append(layout.flatten(permute_state_dict(state, permutation_spec(model), perms)))
    return layout, torch.stack(originals), torch.stack(permuted)


@pytest.mark.parametrize("arch", ["resnet8", "cnn-mnist", "mlp-digits"])
def test_invariant_metanets_ignore_hidden_unit_permutations_and_the_mlp_does_not(arch):
    layout, x, x_perm = permuted_pair(arch)
    assert not torch.equal(x, x_perm)
    torch.manual_seed(0)
    for name, entry in METANETS.items():
        view = (lambda w: statistics_view(w, layout)) if entry.view == "statistics" else (lambda w: trainable_view(w, layout))
        model = entry.build(view(x).shape[1]).eval()
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
