"""The weight-space description: unit sets, weight and 1-D tensors, offsets, for every family and variant."""

from __future__ import annotations

import pytest

from zoo import ParamLayout, get_arch, permutation_spec
from zoo.nets import CNNSpec, MLPSpec
from zoo.symmetry import PermutationSpec
from zoo.weightspace import (
    INPUT,
    OUTPUT,
    WeightSpace,
    weight_space,
    weight_space_from_spec,
)


def space_of(arch: str, variant: str = "standard") -> tuple[ParamLayout, WeightSpace]:
    spec = get_arch(arch, variant)
    layout = ParamLayout.from_module(spec.build())
    return layout, weight_space(layout, spec)


def test_mlp_digits_sets_weights_and_biases():
    layout, space = space_of("mlp-digits")
    assert [(s.name, s.size, s.permuted) for s in space.sets] == [
        (INPUT, 64, False), ("blocks.0", 32, True), ("blocks.1", 32, True), (OUTPUT, 10, False)]
    assert [(w.name, w.out_set, w.in_set, w.kernel) for w in space.weights] == [
        ("blocks.0.layer.weight", "blocks.0", INPUT, (1, 1)),
        ("blocks.1.layer.weight", "blocks.1", "blocks.0", (1, 1)),
        ("head.weight", OUTPUT, "blocks.1", (1, 1)),
    ]
    assert [(u.name, u.unit_set, u.role) for u in space.units] == [
        ("blocks.0.layer.bias", "blocks.0", "bias"), ("blocks.1.layer.bias", "blocks.1", "bias"),
        ("head.bias", OUTPUT, "bias")]
    assert space.ignored == () and space.size == layout.size == 3466
    assert [s.name for s in space.hidden] == ["blocks.0", "blocks.1"]
    assert space.weights_on("blocks.0") == ((space.weights[0], 0), (space.weights[1], 1))


def test_norm_parameters_have_their_roles():
    spec = MLPSpec(in_features=12, widths=(9, 7), out_features=3, layer_norm=True)
    layout = ParamLayout.from_module(spec.build())
    space = weight_space(layout, spec)
    assert [(u.name, u.role) for u in space.units_of("blocks.0")] == [
        ("blocks.0.layer.bias", "bias"), ("blocks.0.norm.weight", "norm_weight"), ("blocks.0.norm.bias", "norm_bias")]


@pytest.mark.parametrize("arch", ["mlp-digits", "mlp-mnist", "cnn-mnist", "resnet8", "resnet8-small", "resnet20"])
@pytest.mark.parametrize("variant", ["standard", "w_asym", "sigma_asym"])
def test_every_tensor_is_described_once_and_agrees_with_the_layout(arch, variant):
    layout, space = space_of(arch, variant)
    described = [w.name for w in space.weights] + [u.name for u in space.units] + list(space.ignored)
    assert sorted(described) == sorted(s.name for s in layout.slots)
    sizes = space.sizes
    for w in space.weights:
        slot = layout[w.name]
        assert (w.offset, w.shape, w.stop) == (slot.offset, slot.shape, slot.stop)
        assert (w.n_out, w.n_in) == (sizes[w.out_set], sizes[w.in_set])
        assert w.numel == w.n_out * w.n_in * w.kernel_size
    for u in space.units:
        slot = layout[u.name]
        assert (u.offset, (u.size,), u.stop) == (slot.offset, slot.shape, slot.stop)
        assert u.size == sizes[u.unit_set]
    # the hidden sets are the permutations of the standard network, in its spec order
    standard = permutation_spec(get_arch(arch).build())
    assert {s.name: s.size for s in space.hidden} == standard.sizes
    assert space.sets[0].name == INPUT and space.sets[-1].name == OUTPUT
    # only σ-Asym's FiGLU matrices are ignored
    assert all(name.endswith("F_mat") for name in space.ignored)
    assert bool(space.ignored) == (variant == "sigma_asym")


def test_variants_describe_the_same_weights():
    _, standard = space_of("resnet8")
    for variant in ("w_asym", "sigma_asym"):
        _, other = space_of("resnet8", variant)
        assert other.sets == standard.sets
        assert [(w.name, w.out_set, w.in_set, w.shape) for w in other.weights] == \
            [(w.name, w.out_set, w.in_set, w.shape) for w in standard.weights]


def test_cnn_kernels_and_image_channels():
    spec = CNNSpec(in_channels=3, image_size=8, channels=(6, 5), num_classes=4, group_norm=True)
    layout = ParamLayout.from_module(spec.build())
    space = weight_space(layout, spec)
    assert space.sizes == {INPUT: 3, "blocks.0": 6, "blocks.1": 5, OUTPUT: 4}
    assert space.weights[0].kernel == (3, 3) and space.weights[0].kernel_size == 9
    assert space.weights[-1].kernel == (1, 1)
    assert space.max_kernel == (3, 3)


def test_resnet_stream_is_one_set_shared_by_stem_conv2_and_shortcut():
    _, space = space_of("resnet8")
    assert space.sizes[INPUT] == 3 and space.sizes[OUTPUT] == 10
    on_stream0 = {(w.name, axis) for w, axis in space.weights_on("stream.0")}
    assert {("stem.layer.weight", 0), ("stages.0.0.conv2.weight", 0),
            ("stages.0.0.conv1.weight", 1), ("stages.1.0.conv1.weight", 1),
            ("stages.1.0.shortcut.0.weight", 1)} == on_stream0
    # the stage-2 stream is written by its conv2 and its 1x1 shortcut, read by stage 3 and the shortcut there
    writers = {w.name for w, axis in space.weights_on("stream.1.0") if axis == 0}
    assert writers == {"stages.1.0.conv2.weight", "stages.1.0.shortcut.0.weight"}
    shortcut = next(w for w in space.weights if w.name == "stages.1.0.shortcut.0.weight")
    assert shortcut.kernel == (1, 1) and (shortcut.out_set, shortcut.in_set) == ("stream.1.0", "stream.0")
    # the stream's per-unit tensors: the stem's norm and block 0.0's second norm
    assert [u.name for u in space.units_of("stream.0")] == [
        "stem.norm.weight", "stem.norm.bias", "stages.0.0.norm2.weight", "stages.0.0.norm2.bias"]
    assert all(u.role.startswith("norm_") for u in space.units_of("stream.0"))


def test_inconsistent_input_sizes_are_rejected():
    spec = get_arch("mlp-digits")
    layout = ParamLayout.from_module(spec.build())
    perm = permutation_spec(spec.build())
    # claim the second layer reads the network's inputs: 32 inputs disagree with the first layer's 64
    axes = dict(perm.axes)
    axes["blocks.1.layer.weight"] = ("blocks.1", None)
    with pytest.raises(ValueError, match="disagree on the number of <input> units"):
        weight_space_from_spec(PermutationSpec(perm.sizes, axes), layout)


def test_spec_tensors_missing_from_the_layout_are_rejected():
    spec = get_arch("mlp-digits")
    perm = permutation_spec(spec.build())
    layout = ParamLayout.from_module(spec.build())
    axes = {**perm.axes, "extra.weight": ("blocks.0", None)}
    with pytest.raises(ValueError, match="lacks 1 tensors.*'extra.weight'"):
        weight_space_from_spec(PermutationSpec(perm.sizes, axes), layout)
