import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zoo.errors import SpecError
from zoo.masks import make_mask
from zoo.seeding import seeded_generator


def rows_of(mask: torch.Tensor) -> list[tuple[bool, ...]]:
    return [tuple(row.tolist()) for row in mask.reshape(mask.shape[0], -1)]


@settings(max_examples=60, deadline=None)
@given(out=st.integers(1, 40), fan_in=st.integers(2, 30), frac=st.floats(0.05, 0.95), seed=st.integers(0, 2**31))
def test_random_subsets_fixes_n_fix_per_row_and_rows_are_unique(out, fan_in, frac, seed):
    n_fix = max(1, min(fan_in - 1, round(frac * fan_in)))
    if math.comb(fan_in, n_fix) < out:
        with pytest.raises(SpecError, match="distinct rows"):
            make_mask((out, fan_in), mask_type="random_subsets", n_fix=n_fix, generator=seeded_generator(seed))
        return
    mask = make_mask((out, fan_in), mask_type="random_subsets", n_fix=n_fix, generator=seeded_generator(seed))
    assert mask.dtype == torch.bool and mask.shape == (out, fan_in)
    assert ((~mask).sum(dim=1) == n_fix).all()
    assert len(set(rows_of(mask))) == out


def test_random_subsets_conv_is_over_flattened_positions():
    mask = make_mask((16, 3, 3, 3), mask_type="random_subsets", n_fix=12, generator=seeded_generator(1))
    assert mask.shape == (16, 3, 3, 3)
    assert ((~mask).reshape(16, -1).sum(1) == 12).all()
    # Fixed entries are spread over the 27 positions, not whole filters.
    per_filter = (~mask).sum(dim=(2, 3))
    assert ((per_filter > 0) & (per_filter < 9)).any()
    assert len(set(rows_of(mask))) == 16


def test_random_subsets_redraws_until_unique_when_subsets_are_scarce():
    # C(6, 3) = 20 subsets for 20 rows: every subset must be used exactly once.
    mask = make_mask((20, 6), mask_type="random_subsets", n_fix=3, generator=seeded_generator(5))
    assert len(set(rows_of(mask))) == 20


def test_filter_random_subsets_fixes_whole_filters():
    mask = make_mask((32, 16, 3, 3), mask_type="filter_random_subsets", n_fix=8, generator=seeded_generator(2))
    per_filter = (~mask).sum(dim=(2, 3))
    assert set(per_filter.unique().tolist()) <= {0, 9}  # a filter is entirely fixed or entirely free
    assert ((per_filter == 9).sum(dim=1) == 8).all()
    assert len(set(rows_of(mask))) == 32


def test_filter_random_subsets_with_n_fix_at_least_in_channels_fixes_everything():
    mask = make_mask((16, 3, 3, 3), mask_type="filter_random_subsets", n_fix=8, generator=seeded_generator(0))
    assert not mask.any()


def test_filter_random_subsets_rejects_linear_weights():
    with pytest.raises(SpecError, match="conv weights only"):
        make_mask((4, 8), mask_type="filter_random_subsets", n_fix=2, generator=seeded_generator(0))


def test_densest_rows_follow_the_minimal_construction():
    mask = make_mask((8, 4), mask_type="densest", n_fix=0, generator=seeded_generator(0))
    fixed_counts = (~mask).sum(dim=1).tolist()
    assert fixed_counts == [0, 1, 1, 1, 1, 2, 2, 2]
    assert len(set(rows_of(mask))) == 8
    assert not mask[1, 0] and not mask[2, 1]  # lexicographic order of fixed positions


def test_densest_rejects_more_rows_than_subsets():
    with pytest.raises(SpecError, match="do not fit"):
        make_mask((9, 3), mask_type="densest", n_fix=0, generator=seeded_generator(0))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mask_type": "nope", "n_fix": 1}, "unknown mask_type"),
        ({"mask_type": "random_subsets", "n_fix": -1}, "n_fix must be >= 0"),
        ({"mask_type": "random_subsets", "n_fix": 9}, "exceeds the fan-in"),
    ],
)
def test_bad_settings_raise_clear_errors(kwargs, message):
    with pytest.raises(SpecError, match=message):
        make_mask((4, 8), generator=seeded_generator(0), **kwargs)


def test_same_seed_same_mask_other_seed_other_mask():
    a = make_mask((64, 100), mask_type="random_subsets", n_fix=10, generator=seeded_generator(3, "layer"))
    b = make_mask((64, 100), mask_type="random_subsets", n_fix=10, generator=seeded_generator(3, "layer"))
    c = make_mask((64, 100), mask_type="random_subsets", n_fix=10, generator=seeded_generator(4, "layer"))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
