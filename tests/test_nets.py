import dataclasses
import json

import pytest
import torch
import yaml

from zoo import PRESETS, VARIANTS, ParamLayout, SpecError, get_arch, load_spec, spec_from_dict
from zoo.nets import LayerAsym, MLPSpec, ResNetSpec, WAsymSpec
from zoo.nn import FiGLU, WAsymConv2d, WAsymLinear

# (arch, variant) -> (total entries in the flat vector, trainable, fixed); docs/PAPER.md §2 and issue 2.
EXPECTED_COUNTS = {
    ("resnet8", "standard"): (78_042, 78_042, 0),
    ("resnet8", "w_asym"): (78_042, 60_634, 17_408),
    ("resnet8", "sigma_asym"): (78_042 + 11_008, 78_042, 11_008),
    ("resnet8-small", "standard"): (59_944, 59_944, 0),
    ("resnet8-digits", "standard"): (5_142, 5_142, 0),
    ("resnet8-digits", "w_asym"): (5_142, 4_030, 1_112),
    ("resnet8-digits", "sigma_asym"): (5_142 + 688, 5_142, 688),  # FiGLU: 4² + 2·4² + 2·8² + 2·16²
    ("resnet8-digits-small", "standard"): (4_089, 4_089, 0),
    ("resnet20", "standard"): (272_474, 272_474, 0),
    ("resnet20", "w_asym"): (272_474, 230_026, 42_448),
    ("mlp-mnist-lmc", "standard"): (935_434, 935_434, 0),
    ("mlp-mnist-lmc", "w_asym"): (935_434, 834_570, 100_864),
    ("cnn-mnist", "standard"): (4_970, 4_970, 0),
    ("mlp-digits", "standard"): (64 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10,) * 2 + (0,),
    ("mlp-mnist", "standard"): (784 * 64 + 64 + 64 * 64 + 64 + 64 * 10 + 10,) * 2 + (0,),
}


@pytest.mark.parametrize("arch, variant", list(EXPECTED_COUNTS))
def test_exact_parameter_counts(arch, variant):
    layout = ParamLayout.from_module(get_arch(arch, variant).build())
    assert (layout.size, layout.num_trainable, layout.num_fixed) == EXPECTED_COUNTS[arch, variant]


def test_resnet8_has_29_tensors_and_paper_structure():
    model = get_arch("resnet8").build()
    assert len(model.state_dict()) == 29
    assert sum(p.numel() for p in model.parameters()) == 78_042
    names = list(model.state_dict())
    assert "stages.0.0.shortcut.0.weight" not in names  # identity shortcut in stage 1
    assert model.state_dict()["stages.1.0.shortcut.0.weight"].shape == (32, 16, 1, 1)
    assert model.state_dict()["stages.2.0.shortcut.1.weight"].shape == (64,)  # GroupNorm after 1x1 conv


def test_resnet8_w_asym_stem_is_fully_fixed_and_layers_converted():
    model = get_arch("resnet8", "w_asym").build()
    assert isinstance(model.stem.layer, WAsymConv2d) and not model.stem.layer.mask.any()
    assert isinstance(model.head, WAsymLinear) and ((~model.head.mask).sum(1) == 8).all()
    assert model.stages[1][0].conv1.mask_type == "filter_random_subsets"
    assert all(float(m.kappa) == 2.0 for m in model.modules() if hasattr(m, "kappa"))


def test_resnet8_digits_w_asym_fixes_the_same_fraction_of_each_layer_as_resnet8():
    def fixed_fractions(name):
        model = get_arch(name, "w_asym").build()
        return {n: float((~b).float().mean()) for n, b in model.named_buffers() if n.endswith("mask")}

    paper, digits = fixed_fractions("resnet8"), fixed_fractions("resnet8-digits")
    assert paper == digits and len(digits) == 10
    assert digits["stem.layer.mask"] == 1.0 and digits["head.mask"] == 1 / 8


def test_sigma_asym_replaces_every_activation_with_figlu():
    model = get_arch("resnet8", "sigma_asym").build()
    figlus = [m for m in model.modules() if isinstance(m, FiGLU)]
    assert len(figlus) == 7  # stem + two per block
    assert sum(f.F_mat.numel() for f in figlus) == 11_008
    assert not any(type(m).__name__ == "Activation" for m in model.modules())


@pytest.mark.parametrize("arch", list(PRESETS))
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_preset_and_variant_runs_forward(arch, variant):
    spec = get_arch(arch, variant)
    model = spec.build()
    out = model(torch.randn(2, *spec.input_shape()))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("arch", list(PRESETS))
@pytest.mark.parametrize("variant", VARIANTS)
def test_spec_round_trips_through_json_and_yaml(arch, variant):
    spec = get_arch(arch, variant)
    assert spec_from_dict(json.loads(spec.to_json())) == spec
    assert spec_from_dict(yaml.safe_load(spec.to_yaml())) == spec


def test_spec_file_builds_the_same_network(tmp_path):
    spec = get_arch("cnn-mnist", "w_asym")
    for suffix, text in ((".yaml", spec.to_yaml()), (".json", spec.to_json())):
        path = tmp_path / f"arch{suffix}"
        path.write_text(text)
        assert load_spec(path) == spec
        assert get_arch(str(path), None) == spec
        a, b = spec.build(1), load_spec(path).build(1)
        x = torch.randn(3, 1, 28, 28)
        assert torch.equal(a(x), b(x))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"widths": "wide"}, "field 'widths' is 'wide'; expected"),
        ({"activation": "swishy"}, "activation 'swishy' is unknown"),
        ({"variant": "asym"}, "unknown variant 'asym'"),
        ({"colour": "red"}, "unknown field"),
        ({"w_asym": {"default": {"n_fix": 2, "kappa": "big"}}}, "w_asym.default.kappa"),
        ({"w_asym": {"default": {"n_fix": 2, "mask_type": "sparse"}}}, "mask_type 'sparse' is unknown"),
        ({"family": "transformer"}, "field 'family' is 'transformer'"),
    ],
)
def test_bad_spec_fields_get_clear_errors(change, message):
    data = {**get_arch("mlp-digits").to_dict(), **change}
    with pytest.raises(SpecError, match=message):
        spec_from_dict(data)


def test_w_asym_variant_needs_settings_and_patterns_must_match():
    with pytest.raises(SpecError, match="needs a 'w_asym' section"):
        MLPSpec(in_features=4, widths=(3,), out_features=2, variant="w_asym")
    spec = MLPSpec(in_features=4, widths=(3,), out_features=2, variant="w_asym",
                   w_asym=WAsymSpec(layers={"blocks.7.layer": LayerAsym(n_fix=1)}))
    with pytest.raises(SpecError, match="pattern 'blocks.7.layer' matches no"):
        spec.build()


def test_infeasible_layer_setting_names_the_layer():
    spec = MLPSpec(in_features=4, widths=(16,), out_features=2, variant="w_asym",
                   w_asym=WAsymSpec(default=LayerAsym(n_fix=4)))
    with pytest.raises(SpecError, match="w_asym layer 'blocks.0.layer'"):
        spec.build()


def test_resnet_depth_width_and_shortcuts():
    with pytest.raises(SpecError, match="6n\\+2"):
        ResNetSpec(depth=10)
    spec = ResNetSpec(depth=14, width=0.5, in_channels=1, image_size=28)
    model = spec.build()
    assert spec.channels == (8, 16, 32) and len(model.stages[0]) == 2
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(SpecError, match="valid architectures: resnet8, .*cnn-mnist"):
        get_arch("resnet9")
    with pytest.raises(SpecError, match="valid variants: standard, w_asym, sigma_asym"):
        get_arch("resnet8", "asym")


def test_with_variant_keeps_structure():
    spec = get_arch("mlp-mnist")
    assert dataclasses.replace(spec, variant="w_asym") == spec.with_variant("w_asym")
    assert spec.with_variant("sigma_asym").widths == spec.widths
