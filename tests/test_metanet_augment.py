"""Permutation augmentation of flat rows (metanets/augment.py): it must be permute_state_dict per
row, preserve a standard network's function, draw independent permutations per row, and refuse or
document the asymmetric variants."""

import math

import pytest
import torch

from metanets.augment import AUGMENTABLE_VIEWS, PermutationAugmenter, augment_view
from metanets.views import trainable_view
from zoo import ParamLayout, SpecError, get_arch, permute_state_dict

STANDARD_ARCHS = ["mlp-digits", "cnn-mnist", "resnet8"]


def rows(arch: str, variant: str = "standard", n: int = 4, noise: float = 0.1) -> tuple[ParamLayout, torch.Tensor]:
    """``n`` flat rows of ``arch`` (different init seeds, plus noise on the trainable entries so that
    norm affine parameters and biases are not at their constant initial values)."""
    spec = get_arch(arch, variant)
    layout = ParamLayout.from_module(spec.build())
    flat = torch.stack([layout.flatten(spec.build(init_seed=i)) for i in range(n)])
    g = torch.Generator().manual_seed(123)
    flat = flat + noise * torch.randn(flat.shape, generator=g) * layout.trainable_mask
    return layout, flat


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def inputs(arch: str, n: int = 8) -> torch.Tensor:
    return torch.randn(n, *get_arch(arch).input_shape(), generator=gen(7), dtype=torch.float64)


# -- semantics: permute_state_dict per row ---------------------------------------------------------------
@pytest.mark.parametrize("arch, variant", [(a, "standard") for a in STANDARD_ARCHS]
                         + [("cnn-mnist", "w_asym"), ("cnn-mnist", "sigma_asym"), ("resnet8", "sigma_asym")])
def test_each_row_equals_permute_state_dict_with_its_own_permutations(arch, variant):
    layout, flat = rows(arch, variant)
    augmenter = PermutationAugmenter(layout, get_arch(arch, variant), allow_asymmetric=variant != "standard")
    perms = augmenter.draw(len(flat), gen(1))
    assert {k: v.shape for k, v in perms.items()} == {k: (len(flat), n) for k, n in augmenter.sizes.items()}
    out = augmenter.apply(flat, perms)
    for b in range(len(flat)):
        expected = permute_state_dict(layout.unflatten(flat[b]), augmenter.spec, {p: t[b] for p, t in perms.items()})
        assert torch.equal(out[b], layout.flatten(expected)), b
    untouched = [s for s in layout.slots if s.name not in augmenter.spec.axes]  # σ-Asym FiGLU matrices
    assert bool(untouched) == (variant == "sigma_asym")
    for slot in untouched:
        assert torch.equal(out[:, slot.offset : slot.stop], flat[:, slot.offset : slot.stop]), slot.name


def test_rows_get_independent_permutations_of_their_own_entries():
    layout, flat = rows("mlp-digits", n=1)
    batch = flat.expand(16, -1)
    out = PermutationAugmenter(layout, get_arch("mlp-digits"))(batch, gen(0))
    assert len({tuple(r.tolist()) for r in out}) == 16  # 16 different networks from one row
    assert torch.equal(out.sort(dim=1).values, batch.sort(dim=1).values)  # entries are only moved
    head_bias = layout["head.bias"]  # output units are never permuted
    assert torch.equal(out[:, head_bias.offset : head_bias.stop], batch[:, head_bias.offset : head_bias.stop])


def test_identity_and_inverse_permutations():
    layout, flat = rows("resnet8", n=3)
    augmenter = PermutationAugmenter(layout, get_arch("resnet8"))
    identity = {p: torch.arange(n).expand(3, -1) for p, n in augmenter.sizes.items()}
    assert torch.equal(augmenter.apply(flat, identity), flat)
    perms = augmenter.draw(3, gen(5))
    inverse = {p: torch.argsort(t, dim=1) for p, t in perms.items()}
    assert torch.equal(augmenter.apply(augmenter.apply(flat, perms), inverse), flat)


def test_draws_are_reproducible_from_the_generator():
    layout, flat = rows("cnn-mnist")
    augmenter = PermutationAugmenter(layout, get_arch("cnn-mnist"))
    assert torch.equal(augmenter(flat, gen(3)), augmenter(flat, gen(3)))
    assert not torch.equal(augmenter(flat, gen(3)), augmenter(flat, gen(4)))
    g = gen(3)
    assert not torch.equal(augmenter(flat, g), augmenter(flat, g))  # a fresh draw per batch
    assert augmenter(flat[:0], gen(0)).shape == (0, layout.size)


# -- function preservation ---------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", STANDARD_ARCHS + ["mlp-mnist-lmc"])
def test_standard_networks_compute_the_same_function_after_augmentation(arch):
    layout, flat = rows(arch, n=2 if arch == "mlp-mnist-lmc" else 3)
    spec = get_arch(arch)
    out = PermutationAugmenter(layout, spec)(flat, gen(2))
    x = inputs(arch)
    with torch.no_grad():
        for b in range(len(flat)):
            assert not torch.equal(out[b], flat[b])
            original = layout.load_into(spec.build().double(), flat[b]).eval()(x)
            augmented = layout.load_into(spec.build().double(), out[b]).eval()(x)
            assert (augmented - original).abs().max() <= 1e-10 * original.abs().max(), (arch, b)


# -- asymmetric variants -------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["w_asym", "sigma_asym"])
def test_asymmetric_zoos_are_refused_unless_allowed(variant):
    layout, _ = rows("mlp-digits", variant, n=1)
    with pytest.raises(SpecError, match="standard"):
        PermutationAugmenter(layout, get_arch("mlp-digits", variant))
    with pytest.raises(SpecError, match="fixed entries"):  # a standard arch with an asymmetric layout
        PermutationAugmenter(layout, get_arch("mlp-digits"))
    PermutationAugmenter(layout, get_arch("mlp-digits", variant), allow_asymmetric=True)


@pytest.mark.parametrize("variant", ["w_asym", "sigma_asym"])
def test_on_asymmetric_rows_augmentation_is_not_a_symmetry(variant):
    """What the docstring promises: W-Asym fixed entries move like weights (so they leave the
    layout's fixed positions), σ-Asym FiGLU matrices stay; either way the function changes."""
    arch = "cnn-mnist"
    spec = get_arch(arch, variant)
    layout, flat = rows(arch, variant, n=2)
    out = PermutationAugmenter(layout, spec, allow_asymmetric=True)(flat, gen(0))
    fixed = ~layout.trainable_mask
    if variant == "w_asym":
        assert not torch.equal(out[:, fixed], flat[:, fixed])  # fixed values are no longer where the zoo fixes them
    else:
        assert torch.equal(out[:, fixed], flat[:, fixed])  # FiGLU matrices untouched
    x = inputs(arch)
    with torch.no_grad():
        for b in range(len(flat)):
            model = spec.build().double()
            original = layout.load_into(model, flat[b]).eval()(x)
            augmented = layout.load_into(model, out[b]).eval()(x)
            assert (augmented - original).abs().max() > 1e-3 * original.abs().max()


# -- views and errors --------------------------------------------------------------------------------------
def test_augment_view_permutes_flat_rows_before_taking_the_view():
    layout, flat = rows("mlp-digits", "w_asym")
    augmenter = PermutationAugmenter(layout, get_arch("mlp-digits", "w_asym"), allow_asymmetric=True)
    assert AUGMENTABLE_VIEWS == ("flat", "weights")
    assert torch.equal(augment_view(flat, "flat", layout, augmenter, gen(1)), augmenter(flat, gen(1)))
    weights = augment_view(flat, "weights", layout, augmenter, gen(1))
    assert weights.shape == (len(flat), layout.num_trainable)
    assert torch.equal(weights, trainable_view(augmenter(flat, gen(1)), layout))
    with pytest.raises(SpecError, match="statistics"):
        augment_view(flat, "statistics", layout, augmenter, gen(1))


def test_standard_weights_view_is_the_permuted_row():
    layout, flat = rows("cnn-mnist")
    augmenter = PermutationAugmenter(layout, get_arch("cnn-mnist"))
    # Standard layouts have no fixed entries: the weights view is the whole augmented row.
    assert torch.equal(augment_view(flat, "weights", layout, augmenter, gen(1)), augmenter(flat, gen(1)))


def test_bad_inputs_raise_clear_errors():
    layout, flat = rows("mlp-digits")
    augmenter = PermutationAugmenter(layout, get_arch("mlp-digits"))
    with pytest.raises(SpecError, match="expected"):
        augmenter(flat[:, :-1], gen(0))
    with pytest.raises(SpecError, match="expected"):
        augmenter(flat[0], gen(0))
    perms = augmenter.draw(len(flat), gen(0))
    with pytest.raises(SpecError, match="no permutation"):
        augmenter.apply(flat, {k: v for k, v in list(perms.items())[1:]})
    with pytest.raises(SpecError, match="shape"):
        augmenter.apply(flat, {k: v[:1] for k, v in perms.items()})
    for other, match in [("resnet8", "has no tensor"), ("cnn-mnist", "axes"), ("mlp-mnist", "units")]:
        with pytest.raises(SpecError, match=f"{match}.*do not match"):  # other names, ranks, widths
            PermutationAugmenter(ParamLayout.from_module(get_arch(other).build()), get_arch("mlp-digits"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_rows_and_generator_match_cpu_semantics():
    layout, flat = rows("resnet8")
    augmenter = PermutationAugmenter(layout, get_arch("resnet8"))
    perms = augmenter.draw(len(flat), gen(0))
    on_gpu = augmenter.apply(flat.cuda(), {k: v.cuda() for k, v in perms.items()})
    assert torch.equal(on_gpu.cpu(), augmenter.apply(flat, perms))
    out = augmenter(flat.cuda(), torch.Generator(device="cuda").manual_seed(0))
    assert out.device.type == "cuda" and torch.equal(out.sort(1).values.cpu(), flat.sort(1).values)


@pytest.mark.parametrize("arch, variant", [("resnet8", "standard"), ("mlp-digits", "sigma_asym")])
def test_index_plans_cover_the_flat_vector_exactly_once(arch, variant):
    """apply() fills an uninitialised index from the plans: a gap would read garbage positions."""
    layout, _ = rows(arch, variant, n=1)
    plans = PermutationAugmenter(layout, get_arch(arch, variant), allow_asymmetric=True)._plans
    spans = [(plan.offset, plan.offset + math.prod(plan.shape)) for plan in plans]
    assert spans[0][0] == 0 and spans[-1][1] == layout.size
    assert all(stop == start for (_, stop), (start, _) in zip(spans, spans[1:]))
