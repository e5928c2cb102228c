import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from zoo import ParamLayout, SymzooError, get_arch

CASES = [("mlp-digits", v) for v in ("standard", "w_asym", "sigma_asym")] + [
    ("cnn-mnist", "w_asym"), ("resnet8", "w_asym"), ("resnet8", "sigma_asym"),
]


@pytest.mark.parametrize("arch, variant", CASES)
def test_flat_round_trip_is_exact(arch, variant):
    spec = get_arch(arch, variant)
    model = spec.build(init_seed=1)
    layout = ParamLayout.from_module(model)
    flat = layout.flatten(model)
    assert flat.dtype == torch.float32 and flat.shape == (layout.size,)
    for name, tensor in layout.unflatten(flat).items():
        assert torch.equal(tensor, model.state_dict()[name]), name
    stack = torch.stack([flat, -flat])  # a stack of networks: (K, *shape) per tensor, row k = network k
    for name, tensor in layout.unflatten(stack).items():
        assert torch.equal(tensor[0], model.state_dict()[name]) and torch.equal(tensor[1], -model.state_dict()[name])
    fresh = layout.load_into(spec.build(init_seed=2), flat)
    assert torch.equal(layout.flatten(fresh), flat)
    x = torch.randn(4, *spec.input_shape())
    assert torch.equal(fresh(x), model(x))


@pytest.mark.parametrize("arch, variant", CASES)
def test_layout_table_is_contiguous_and_matches_masks(arch, variant):
    model = get_arch(arch, variant).build()
    layout = ParamLayout.from_module(model)
    offset = 0
    for slot, (name, tensor) in zip(layout.slots, model.state_dict().items()):
        assert (slot.name, slot.shape, slot.offset, slot.numel) == (name, tuple(tensor.shape), offset, tensor.numel())
        offset += slot.numel
    assert layout.size == offset
    assert int(layout.trainable_mask.sum()) == layout.num_trainable
    for name, module in model.named_modules():
        if hasattr(module, "mask"):  # W-Asym layer: the flat mask is its mask, in place
            slot = layout[f"{name}.weight"]
            assert torch.equal(layout.trainable_mask[slot.offset : slot.stop], module.mask.reshape(-1))
            assert slot.fixed == int((~module.mask).sum())


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_loading_any_vector_keeps_trainable_entries_and_reimposes_fixed_ones(seed):
    spec = get_arch("mlp-digits", "w_asym")
    model = spec.build()
    layout = ParamLayout.from_module(model)
    original = layout.flatten(model)
    vector = torch.randn(layout.size, generator=torch.Generator().manual_seed(seed))
    reloaded = layout.flatten(layout.load_into(spec.build(), vector))
    mask = layout.trainable_mask
    assert torch.equal(reloaded[mask], vector[mask])
    assert torch.equal(reloaded[~mask], original[~mask])


def test_standard_networks_load_any_vector_exactly():
    spec = get_arch("cnn-mnist")
    layout = ParamLayout.from_module(spec.build())
    vector = torch.randn(layout.size)
    assert torch.equal(layout.flatten(layout.load_into(spec.build(), vector)), vector)


def test_wrong_length_and_wrong_model_are_reported():
    layout = ParamLayout.from_module(get_arch("mlp-digits").build())
    with pytest.raises(SymzooError, match=r"the layout expects \(3466,\)"):
        layout.unflatten(torch.zeros(10))
    with pytest.raises(SymzooError, match=r"or a stack \(K, 3466\)"):
        layout.unflatten(torch.zeros(2, 3, 3466))
    with pytest.raises(SymzooError, match="has shape"):
        layout.flatten(get_arch("mlp-mnist").build())


def test_integer_buffers_are_left_out():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    layout = ParamLayout.from_module(model)
    assert [s.name for s in layout.slots] == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var"]
    flat = layout.flatten(model)
    layout.load_into(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), flat)
    assert layout.to_records()[0] == {"name": "0.weight", "shape": [4, 3], "offset": 0, "numel": 12, "fixed": 0}
