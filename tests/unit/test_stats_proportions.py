"""Two-proportion statistics: golden values, statsmodels oracles on random cases, degenerate data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from statsmodels.stats import proportion as sm_prop

from experiment.stats.messages import Reason
from experiment.stats.proportions import compare_proportions
from experiment.stats.sufficient import VariantStats as V


def test_golden_10000_1000_vs_10000_1100() -> None:
    # Hand-computed: d = 0.01, SE = sqrt(.1*.9/1e4 + .11*.89/1e4) = 0.00433474336...; precision 1e-9.
    r = compare_proportions(V.from_counts(10_000, 1_000), V.from_counts(10_000, 1_100))
    assert r.abs_diff == pytest.approx(0.01, abs=1e-12)
    assert r.abs_se == pytest.approx(math.sqrt(0.09 / 1e4 + 0.0979 / 1e4), abs=1e-12)
    assert r.abs_ci.lower == pytest.approx(0.001504059131512, abs=1e-9)
    assert r.abs_ci.upper == pytest.approx(0.018495940868488, abs=1e-9)
    assert r.p_value == pytest.approx(0.021058073216078, abs=1e-9)
    assert r.p_value_pooled == pytest.approx(0.021075189273798, abs=1e-9)
    assert r.rel_lift == pytest.approx(0.1, abs=1e-12)
    assert r.rel_ci.lower == pytest.approx(0.010870112525621, abs=1e-9)
    assert r.method == "two_proportion_z_unpooled_wald"


def test_matches_statsmodels_on_random_cases() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        n_c, n_t = rng.integers(50, 200_000, size=2)
        p_c, p_t = rng.uniform(0.01, 0.9, size=2)
        x_c, x_t = rng.binomial(n_c, p_c), rng.binomial(n_t, p_t)
        r = compare_proportions(V.from_counts(int(n_c), int(x_c)), V.from_counts(int(n_t), int(x_t)), alpha=0.1)
        wald = sm_prop.test_proportions_2indep(x_t, n_t, x_c, n_c, method="wald", compare="diff")
        lo, hi = sm_prop.confint_proportions_2indep(x_t, n_t, x_c, n_c, method="wald", compare="diff", alpha=0.1)
        _, pooled = sm_prop.proportions_ztest([x_t, x_c], [n_t, n_c])
        assert r.p_value == pytest.approx(wald.pvalue, rel=1e-9, abs=1e-14)
        assert (r.abs_ci.lower, r.abs_ci.upper) == pytest.approx((lo, hi), rel=1e-9, abs=1e-14)
        assert r.p_value_pooled == pytest.approx(pooled, rel=1e-9, abs=1e-14)
        # p < alpha exactly when 0 lies outside the CI
        assert (r.p_value < 0.1) == (not r.abs_ci.contains(0.0))
        assert (r.rel_p_value < 0.1) == (not r.rel_ci.contains(0.0))


def test_zero_control_conversions_gives_null_relative_lift_with_reason() -> None:
    r = compare_proportions(V.from_counts(1000, 0), V.from_counts(1000, 5))
    assert r.rel_lift is None and r.rel_ci is None
    assert r.reasons["rel_lift"] == Reason.ZERO_BASELINE
    assert r.abs_diff == pytest.approx(0.005) and r.p_value is not None


def test_zero_users_and_zero_variance_are_null_not_nan() -> None:
    r = compare_proportions(V.from_counts(0, 0), V.from_counts(10, 1))
    assert r.control_value is None and r.reasons["control_value"] == Reason.NO_USERS
    assert r.p_value is None and r.reasons["p_value"] == Reason.NO_USERS
    z = compare_proportions(V.from_counts(100, 0), V.from_counts(100, 0))
    assert z.abs_diff == 0.0 and z.p_value is None and z.reasons["p_value"] == Reason.ZERO_VARIANCE
    assert z.to_dict()["abs_ci"] is None


def test_bad_alpha_raises() -> None:
    with pytest.raises(ValueError, match="alpha"):
        compare_proportions(V.from_counts(10, 1), V.from_counts(10, 1), alpha=1.5)
