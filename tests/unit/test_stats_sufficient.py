"""Sufficient statistics merge exactly, in any order (hypothesis), and match a batch recomputation."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiment.stats.sufficient import VariantStats

users = st.lists(
    st.tuples(st.booleans(), st.floats(0, 5_000, allow_nan=False).map(lambda r: round(r, 2)), st.integers(0, 50)),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(users, st.randoms(use_true_random=False))
def test_merging_in_any_order_is_equal(rows, rnd: random.Random) -> None:
    singles = [VariantStats.of_user(c, r, x) for c, r, x in rows]
    forward = sum(singles, VariantStats())
    shuffled = singles[:]
    rnd.shuffle(shuffled)
    # Tree-shaped merge in a random order must give the very same object as a left fold.
    while len(shuffled) > 1:
        i = rnd.randrange(len(shuffled) - 1)
        shuffled[i : i + 2] = [shuffled[i] + shuffled[i + 1]]
    tree = shuffled[0] if shuffled else VariantStats()
    assert tree == forward
    assert forward == VariantStats.of_users([c for c, _, _ in rows], [r for _, r, _ in rows], [x for *_, x in rows])


@given(users, users)
def test_addition_is_commutative(a, b) -> None:
    sa = VariantStats.of_users(*zip(*a, strict=True)) if a else VariantStats()
    sb = VariantStats.of_users(*zip(*b, strict=True)) if b else VariantStats()
    assert sa + sb == sb + sa


def test_derived_values_golden() -> None:
    s = VariantStats.of_users([True, False, True, False], [10.0, 0.0, 30.0, 0.0], [1, 2, 3, 4])
    assert s.users == 4 and s.conversions == 2
    assert s.conversion_rate == 0.5
    assert s.revenue_per_user == pytest.approx(10.0, abs=1e-12)
    # sample variance of [10, 0, 30, 0] = 200 (n - 1 denominator)
    assert s.revenue_variance == pytest.approx(200.0, abs=1e-9)
    assert s.pre_mean == 2.5 and s.pre_revenue_cross == pytest.approx(100.0)


def test_cents_are_exact_for_amounts_floats_cannot_represent() -> None:
    s = sum((VariantStats.of_user(True, 0.1) for _ in range(10)), VariantStats())
    assert s.revenue_cents_sum == 100 and s.revenue_sum == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"users": -1}, "users must be >= 0"),
        ({"users": 1, "conversions": 2}, "conversions must lie"),
        ({"users": 1.5}, "must be an int"),
    ],
)
def test_misuse_raises(kwargs, message) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        VariantStats(**kwargs)
