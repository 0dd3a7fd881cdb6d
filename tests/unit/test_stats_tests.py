"""Welch, SRM, Bayes, CUPED, power and corrections: golden values and independent oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare, ttest_ind
from statsmodels.stats.multitest import multipletests

from experiment.stats import bayes
from experiment.stats.corrections import adjust_p_values
from experiment.stats.cuped import compare_cuped
from experiment.stats.means import compare_revenue
from experiment.stats.messages import Reason
from experiment.stats.power import mde_proportions, power_proportions, sample_size_proportions
from experiment.stats.srm import srm_test
from experiment.stats.sufficient import VariantStats as V


def _arm(rng, n, p, mu):
    conv = rng.random(n) < p
    rev = np.where(conv, np.round(rng.lognormal(mu, 1.0, n), 2), 0.0)
    return conv, rev, rng.poisson(2, n)


def test_welch_matches_scipy_on_random_cases() -> None:
    rng = np.random.default_rng(2)
    for _ in range(30):
        n_c, n_t = (int(v) for v in rng.integers(5, 3000, size=2))
        c, t = _arm(rng, n_c, 0.3, 3.0), _arm(rng, n_t, 0.35, 3.2)
        r = compare_revenue(V.of_users(*c), V.of_users(*t))
        oracle = ttest_ind(t[1], c[1], equal_var=False)
        ci = oracle.confidence_interval(0.95)
        assert r.p_value == pytest.approx(oracle.pvalue, rel=1e-7)
        assert (r.abs_ci.lower, r.abs_ci.upper) == pytest.approx((ci.low, ci.high), rel=1e-7)
        assert r.df == pytest.approx(oracle.df, rel=1e-7)


def test_welch_degenerate() -> None:
    r = compare_revenue(V.of_users([True], [5.0], [0]), V.of_users([True, False], [5.0, 0.0], [0, 0]))
    assert r.p_value is None and r.reasons["p_value"] == Reason.TOO_FEW_USERS
    z = compare_revenue(V.from_counts(10, 0), V.from_counts(10, 0))
    assert z.p_value is None and z.reasons["p_value"] == Reason.ZERO_VARIANCE
    assert z.rel_lift is None and z.reasons["rel_lift"] == Reason.ZERO_BASELINE


def test_srm_matches_scipy_and_alarms() -> None:
    r = srm_test({"control": 10_000, "treatment": 10_400}, {"control": 0.5, "treatment": 0.5})
    assert r.p_value == pytest.approx(chisquare([10_000, 10_400]).pvalue, rel=1e-12)
    assert not r.alarm
    three = srm_test({"a": 500, "b": 300, "c": 200}, {"a": 0.5, "b": 0.25, "c": 0.25})
    assert three.p_value == pytest.approx(chisquare([500, 300, 200], [500, 250, 250]).pvalue, rel=1e-12)
    assert three.alarm  # p ~ 4.5e-4 < 0.001
    empty = srm_test({"a": 0, "b": 0}, {"a": 0.5, "b": 0.5})
    assert empty.p_value is None and empty.reasons["p_value"] == Reason.NO_USERS and not empty.alarm


def test_srm_weights_must_sum_to_one() -> None:
    with pytest.raises(ValueError, match=r"must sum to 1.0. Got 0.6 \+ 0.6 = 1.2"):
        srm_test({"a": 1, "b": 1}, {"a": 0.6, "b": 0.6})


def test_prob_beat_golden_and_symmetry() -> None:
    # Beta(2,2) vs Beta(2,2): exactly 0.5 by symmetry; Beta(1,1) vs Beta(2,1): P = 2/3 exactly.
    assert bayes.prob_b_beats_a(2, 2, 2, 2)[0] == pytest.approx(0.5, abs=1e-13)
    assert bayes.prob_b_beats_a(1, 1, 2, 1)[0] == pytest.approx(2 / 3, abs=1e-13)
    assert bayes.prob_b_beats_a(30, 70, 40, 60)[0] + bayes.prob_b_beats_a(40, 60, 30, 70)[0] == pytest.approx(1.0)


def test_prob_beat_against_monte_carlo() -> None:
    rng = np.random.default_rng(3)
    for n_c, x_c, n_t, x_t in [(1000, 100, 1000, 120), (50, 3, 80, 9), (20_000, 9_000, 19_000, 8_700)]:
        r = bayes.compare_bayes(V.from_counts(n_c, x_c), V.from_counts(n_t, x_t))
        draws = 400_000
        pc = rng.beta(1 + x_c, 1 + n_c - x_c, draws)
        pt = rng.beta(1 + x_t, 1 + n_t - x_t, draws)
        mc = float(np.mean(pt > pc))
        se = math.sqrt(mc * (1 - mc) / draws) + 1e-6
        assert abs(r.prob_treatment_beats_control - mc) < 5 * se
        loss = float(np.mean(np.maximum(pc - pt, 0)))
        assert r.expected_loss_treatment == pytest.approx(loss, rel=0.05, abs=1e-6)


def test_quadrature_agrees_with_exact_sum_at_the_switch() -> None:
    # Measured error of the documented switch: the two evaluations agree to < 1e-8 around EXACT_MAX_TERMS.
    for params in [
        (150_001, 150_001, 150_501, 149_501),
        (150_001, 2_850_001, 15_501, 284_501),
        (2_001, 198_001, 2_101, 197_901),
    ]:
        exact = bayes._miller_sum(*params)
        quad = bayes._quadrature(*params)
        assert abs(exact - quad) < 1e-8, (params, exact, quad)


def test_prob_beat_stable_at_1e8_users() -> None:
    # Normal approximation is excellent at this size: skewness ~ 1e-4; check agreement to 1e-3 and no NaN.
    n = 100_000_000
    for x_c, x_t in [(1_000_000, 1_003_000), (50_000_000, 50_005_000), (10, 25)]:
        r = bayes.compare_bayes(V.from_counts(n, x_c), V.from_counts(n, x_t))
        pc, pt = (1 + x_c) / (n + 2), (1 + x_t) / (n + 2)
        se = math.sqrt(pc * (1 - pc) / n + pt * (1 - pt) / n)
        from scipy.stats import norm

        approx = float(norm.cdf((pt - pc) / se))
        assert r.prob_treatment_beats_control is not None and math.isfinite(r.prob_treatment_beats_control)
        assert abs(r.prob_treatment_beats_control - approx) < 2e-3
    assert (
        bayes.compare_bayes(V.from_counts(0, 0), V.from_counts(5, 1)).reasons["prob_treatment_beats_control"]
        == Reason.NO_USERS
    )


def test_cuped_reduces_variance_and_keeps_the_estimand() -> None:
    rng = np.random.default_rng(4)
    n = 20_000
    latent = rng.gamma(0.5, 2.0, 2 * n)
    pre = rng.poisson(4 * latent)
    conv = rng.random(2 * n) < np.minimum(0.99, 0.1 * latent * np.r_[np.ones(n), np.full(n, 1.1)])
    c = V.of_users(conv[:n], np.zeros(n), pre[:n])
    t = V.of_users(conv[n:], np.zeros(n), pre[n:])
    r = compare_cuped(c, t, metric="conversion")
    rho2 = np.corrcoef(pre, conv)[0, 1] ** 2
    assert r.variance_reduction == pytest.approx(rho2, abs=0.02)
    assert r.variance_reduction > 0.1
    # theta = pooled Cov(x, y) / Var(x)
    assert r.theta == pytest.approx(np.cov(pre, conv)[0, 1] / np.var(pre, ddof=1), rel=1e-9)
    plain = t.conversion_rate - c.conversion_rate
    assert abs(r.abs_diff - plain) < 3 * r.abs_se
    no_cov = compare_cuped(V.from_counts(100, 10), V.from_counts(100, 12))
    assert no_cov.abs_diff is None and no_cov.reasons["abs_diff"] == Reason.NO_PRE_PERIOD_VARIANCE


def test_power_golden_and_round_trip() -> None:
    n = sample_size_proportions(0.10, 0.10)
    # Cohen's h for 0.11 vs 0.10 = 0.03262; n = ((1.95996 + 0.84162) / h)^2 = 7373 per arm... per statsmodels:
    assert n.n_control == pytest.approx(14745, abs=2)
    p = power_proportions(0.10, 0.10, n.n_control, n.n_treatment)
    assert p.power == pytest.approx(0.8, abs=1e-3)
    m = mde_proportions(0.10, n.n_control, n.n_treatment)
    assert m.mde_rel == pytest.approx(0.10, abs=1e-3)
    assert sample_size_proportions(0.0, 0.1).n_control is None


def test_corrections_match_multipletests_and_keep_nulls() -> None:
    ps = {"a": 0.01, "b": 0.04, "c": 0.03, "d": None}
    holm = adjust_p_values(ps, method="holm")
    bh = adjust_p_values(ps, method="fdr_bh")
    expected_holm = multipletests([0.01, 0.04, 0.03], method="holm")[1]
    expected_bh = multipletests([0.01, 0.04, 0.03], method="fdr_bh")[1]
    assert [holm[k] for k in "abc"] == pytest.approx(list(expected_holm))
    assert [bh[k] for k in "abc"] == pytest.approx(list(expected_bh))
    assert holm["d"] is None and holm["a"] == pytest.approx(0.03)
    with pytest.raises(ValueError, match="holm"):
        adjust_p_values(ps, method="bonferroni")  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([0.0, 1.0, 0.5, 0.01, 0.04]) | st.floats(0.0, 1.0), min_size=1, max_size=12))
def test_corrections_equal_multipletests_exactly(ps: list[float]) -> None:
    """Holm and BH are computed without statsmodels; they must be its numbers, bit for bit (ties included)."""
    keyed = {f"k{i:02d}": p for i, p in enumerate(ps)}
    for method in ("holm", "fdr_bh"):
        expected = multipletests(ps, method=method)[1]
        assert adjust_p_values(keyed, method=method) == {k: float(e) for k, e in zip(keyed, expected, strict=True)}


def test_distribution_functions_equal_scipy_stats_exactly() -> None:
    """proportions, means, srm and bayes call scipy.special (cheaper to import): the numbers of scipy.stats."""
    from scipy import stats as sps

    from experiment.stats.bayes import _beta_logpdf
    from experiment.stats.means import welch_from_moments
    from experiment.stats.proportions import two_sided_p, z_quantile
    from experiment.stats.srm import srm_test

    for alpha in (0.001, 0.01, 0.05, 0.1, 0.5, 0.9):
        assert z_quantile(alpha) == float(sps.norm.isf(alpha / 2))
    for z in (0.0, 0.3, -1.96, 5.0, 12.0, 40.0):
        assert two_sided_p(z) == float(min(1.0, 2.0 * sps.norm.sf(abs(z))))
    welch = welch_from_moments(50, 1.0, 4.0, 70, 1.7, 9.0, alpha=0.05)
    assert welch.df is not None and welch.abs_ci is not None and welch.abs_se is not None
    assert welch.abs_diff is not None
    q = float(sps.t.isf(0.025, welch.df))
    assert welch.abs_ci.lower == welch.abs_diff - q * welch.abs_se
    assert welch.p_value == float(min(1.0, 2.0 * sps.t.sf(abs(welch.abs_diff) / welch.abs_se, welch.df)))
    for observed in ({"a": 500, "b": 500}, {"a": 480, "b": 520}, {"a": 0, "b": 7}, {"a": 1, "b": 10_000}):
        result = srm_test(observed, {"a": 0.5, "b": 0.5})
        assert result.statistic is not None
        assert result.p_value == float(sps.chi2.sf(result.statistic, 1))
    x = np.linspace(1e-6, 1 - 1e-6, 101)
    for a, b in ((1.0, 1.0), (3.0, 900.0), (25_001.0, 224_000.0)):
        assert np.array_equal(_beta_logpdf(x, a, b), sps.beta.logpdf(x, a, b))


def test_power_equals_statsmodels_normal_ind_power_on_a_grid() -> None:
    """The conversion power functions compute what statsmodels' NormalIndPower computes, without importing it.

    Sample sizes are equal exactly, power to 1e-12; the MDE solves the power equation to 1e-9 (statsmodels' own
    solver stops earlier, so the two MDEs agree to 1e-3 relative, and ours is the closer solution).
    """
    import itertools
    import math

    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    solver = NormalIndPower()
    grid = itertools.product((0.01, 0.1, 0.3, 0.6), (0.02, 0.1, -0.2), (0.01, 0.05), (0.5, 0.8, 0.95), (0.5, 1.0, 2.0))
    for p0, mde, alpha, power, ratio in grid:
        h = abs(float(proportion_effectsize(p0 * (1 + mde), p0)))
        n = float(solver.solve_power(effect_size=h, alpha=alpha, power=power, ratio=ratio))
        ours = sample_size_proportions(p0, mde, alpha=alpha, power=power, ratio=ratio)
        assert (ours.n_control, ours.n_treatment) == (math.ceil(n), math.ceil(n * ratio)), (p0, mde, alpha, power)
        for n1, n2 in ((100, 100), (1_000, 2_000), (50_000, 49_000)):
            expected = float(solver.power(effect_size=h, nobs1=n1, alpha=alpha, ratio=n2 / n1))
            assert power_proportions(p0, mde, n1, n2, alpha=alpha).power == pytest.approx(expected, abs=1e-12)
            found = mde_proportions(p0, n1, n2, alpha=alpha, power=power).mde_rel
            if found is None:
                continue
            assert power_proportions(p0, found, n1, n2, alpha=alpha).power == pytest.approx(power, abs=1e-9)
            h_ref = float(solver.solve_power(effect_size=None, nobs1=n1, alpha=alpha, power=power, ratio=n2 / n1))
            reference = math.sin(math.asin(math.sqrt(p0)) + h_ref / 2) ** 2 / p0 - 1
            assert found == pytest.approx(reference, rel=1e-3)
            # and where they differ, ours is the one that solves the equation
            theirs = power_proportions(p0, reference, n1, n2, alpha=alpha).power
            assert theirs is not None
            assert abs(power_proportions(p0, found, n1, n2, alpha=alpha).power - power) <= abs(theirs - power) + 1e-12
