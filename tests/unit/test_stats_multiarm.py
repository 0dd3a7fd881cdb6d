"""Multi-arm analysis: P(best) golden values and oracles, the Holm family, SRM over k arms, A/A calibration."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from experiment.stats import bayes
from experiment.stats.means import WelchResult
from experiment.stats.messages import Reason
from experiment.stats.multiarm import compare_arms, prob_best, prob_best_beta
from experiment.stats.proportions import compare_proportions
from experiment.stats.sufficient import VariantStats as V

WEIGHTS3 = {"control": 0.34, "champion": 0.33, "challenger": 0.33}


def _quad_prob_best(params: list[tuple[float, float]], j: int) -> float:
    """Independent oracle: scipy.integrate.quad of f_j · Π F_i over the central range of arm j (scipy.stats)."""
    a, b = params[j]
    lo, hi = sps.beta.ppf([1e-14, 1 - 1e-14], a, b)
    points = np.linspace(lo, hi, 41)

    def integrand(x: float) -> float:
        value = sps.beta.pdf(x, a, b)
        for i, (ai, bi) in enumerate(params):
            if i != j:
                value *= sps.beta.cdf(x, ai, bi)
        return float(value)

    return sum(integrate.quad(integrand, points[k], points[k + 1], epsabs=1e-15, epsrel=1e-12)[0] for k in range(40))


# -- P(best) ---------------------------------------------------------------------------------------------------------


def test_prob_best_golden_closed_forms() -> None:
    # Beta(2,1) vs two Beta(1,2): f = 2x, F_other = 2x − x², P = ∫ 2x (2x − x²)² dx = 11/15; the others share 4/15.
    assert prob_best_beta([(2, 1), (1, 2), (1, 2)]) == pytest.approx([11 / 15, 2 / 15, 2 / 15], abs=1e-13)
    assert prob_best_beta([(3, 7), (3, 7), (3, 7)]) == pytest.approx([1 / 3] * 3, abs=1e-13)
    # Beta(1,1) vs Beta(2,1): P(second is best) = 2/3 exactly (as in bayes' golden test).
    assert prob_best_beta([(1, 1), (2, 1)]) == pytest.approx([1 / 3, 2 / 3], abs=1e-13)


@pytest.mark.parametrize(
    "params",
    [
        (101, 901, 121, 881),
        (4, 48, 10, 72),
        (9_001, 11_001, 8_701, 10_301),
        (150_001, 2_850_001, 15_501, 284_501),
    ],
)
def test_prob_best_two_arms_equals_exact_miller_sum(params: tuple[int, int, int, int]) -> None:
    a_a, b_a, a_b, b_b = params
    exact, evaluation = bayes.prob_b_beats_a(a_a, b_a, a_b, b_b)
    assert evaluation == "exact_sum"
    p = prob_best_beta([(a_a, b_a), (a_b, b_b)])
    assert p[1] == pytest.approx(exact, abs=1e-8)  # the exact sum's own precision at 3e6 users is ~1e-9
    assert sum(p) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(
    "params",
    [
        # posteriors of very different widths (10^2 vs 10^7 users): the case the quantile panels exist for
        [(2, 99), (100_001, 9_900_001)],
        [(11, 91), (1_000_001, 9_000_000), (120_001, 879_999)],
        # Beta(1, b) is exponential-like near 0: about 1 − (1/2)^3 by the Gamma limit
        [(1, 1_000_000), (3, 1_000_000)],
        [(30, 70), (40, 60), (35, 65), (38, 62)],
    ],
)
def test_prob_best_matches_scipy_integrate_quad(params: list[tuple[float, float]]) -> None:
    p = prob_best_beta(params)
    for j in range(len(params)):
        assert p[j] == pytest.approx(_quad_prob_best(params, j), abs=1e-10), j
    assert sum(p) == pytest.approx(1.0, abs=1e-11)


def test_prob_best_matches_seeded_monte_carlo() -> None:
    rng = np.random.default_rng(20)
    draws = 1_000_000
    for counts in [[(1000, 100), (1000, 120), (1000, 111)], [(50, 3), (80, 9), (60, 5), (20, 2)]]:
        result = prob_best({f"arm{i}": V.from_counts(n, x) for i, (n, x) in enumerate(counts)})
        assert result.prob_best is not None
        samples = np.stack([rng.beta(1 + x, 1 + n - x, draws) for n, x in counts])
        mc = np.bincount(samples.argmax(axis=0), minlength=len(counts)) / draws
        for i, p in enumerate(mc):
            se = math.sqrt(p * (1 - p) / draws)
            assert abs(result.prob_best[f"arm{i}"] - p) < 5 * se + 1e-6, (i, result.prob_best, mc)


def test_prob_best_without_users_is_null_with_reason() -> None:
    r = prob_best({"control": V.from_counts(0, 0), "a": V.from_counts(10, 1)})
    assert r.prob_best is None and r.reasons["prob_best"] == Reason.NO_USERS
    with pytest.raises(ValueError, match="at least two"):
        prob_best({"control": V.from_counts(10, 1)})
    with pytest.raises(ValueError, match="Beta parameters"):
        prob_best_beta([(1.0, 0.0), (1.0, 1.0)])


# -- comparisons, Holm and SRM --------------------------------------------------------------------------------------


def test_compare_arms_golden_family_and_orientation() -> None:
    stats = {
        "control": V.from_counts(10_000, 1_000),
        "champion": V.from_counts(10_000, 1_100),
        "challenger": V.from_counts(10_000, 1_150),
    }
    r = compare_arms(stats, control="control", weights=WEIGHTS3)
    assert [(c.arm, c.baseline, c.kind) for c in r.comparisons] == [
        ("champion", "control", "vs_control"),
        ("challenger", "control", "vs_control"),
        ("challenger", "champion", "between_arms"),
    ]
    assert r.model_arms == ("champion", "challenger") and r.arms == tuple(WEIGHTS3)
    between = r.comparison("champion", "challenger")
    assert between.comparison.abs_diff == pytest.approx(0.005, abs=1e-12)  # challenger − champion
    assert between.comparison == compare_proportions(stats["champion"], stats["challenger"])
    # Golden p-value of champion vs control (test_stats_proportions' hand computation), precision 1e-9.
    assert r.comparison("champion", "control").comparison.p_value == pytest.approx(0.021058073216078, abs=1e-9)
    raw = [c.comparison.p_value for c in r.comparisons]
    expected = multipletests(raw, method="holm")[1]
    assert [c.p_value_holm for c in r.comparisons] == [float(e) for e in expected]
    assert [c.significant_holm for c in r.comparisons] == [bool(e < 0.05) for e in expected]
    # P(best): the three rates 0.10 < 0.11 < 0.115 order the probabilities; they sum to one.
    pb = r.prob_best.prob_best
    assert pb is not None and pb["control"] < pb["champion"] < pb["challenger"]
    assert sum(pb.values()) == pytest.approx(1.0, abs=1e-11)
    json.dumps(r.to_dict(), allow_nan=False)


def test_srm_over_all_arms_matches_scipy_chisquare() -> None:
    users = {"control": 5_000, "champion": 4_700, "challenger": 5_100}
    stats = {name: V.from_counts(n, n // 10) for name, n in users.items()}
    r = compare_arms(stats, control="control", weights={"control": 0.4, "champion": 0.3, "challenger": 0.3})
    total = sum(users.values())
    oracle = sps.chisquare(list(users.values()), [0.4 * total, 0.3 * total, 0.3 * total])
    assert r.srm.df == 2
    assert r.srm.p_value == pytest.approx(oracle.pvalue, rel=1e-12)
    assert r.srm.alarm  # 5000 is far below the 40 % expected (5920)


def test_degenerate_arm_gives_reasons_not_nan() -> None:
    stats = {"control": V.from_counts(1_000, 100), "champion": V.from_counts(1_000, 120)}  # challenger: no users
    r = compare_arms(stats, control="control", weights=WEIGHTS3)
    dead = r.comparison("challenger", "control")
    assert dead.comparison.p_value is None and dead.p_value_holm is None
    assert dead.reasons["p_value_holm"] == Reason.NO_USERS
    # the undefined comparisons leave the family: Holm over the one defined p-value is that p-value
    alive = r.comparison("champion", "control")
    assert alive.p_value_holm == alive.comparison.p_value
    assert r.prob_best.prob_best is None and r.prob_best.reasons["prob_best"] == Reason.NO_USERS
    assert r.users["challenger"] == 0
    json.dumps(r.to_dict(), allow_nan=False)


def test_revenue_metric_uses_welch_and_has_no_prob_best() -> None:
    rng = np.random.default_rng(21)
    stats = {
        name: V.of_users(rng.random(400) < 0.3, np.round(rng.lognormal(3.0, 1.0, 400), 2), rng.poisson(2, 400))
        for name in WEIGHTS3
    }
    r = compare_arms(stats, control="control", weights=WEIGHTS3, metric="revenue_per_user")
    assert all(isinstance(c.comparison, WelchResult) for c in r.comparisons)
    assert r.prob_best.prob_best is None and r.prob_best.reasons["prob_best"] == Reason.NOT_A_PROPORTION


def test_misuse_raises_with_names() -> None:
    stats = {"control": V.from_counts(10, 1), "a": V.from_counts(10, 2)}
    with pytest.raises(ValueError, match=r"control must name one of the arms.*'ctrl'"):
        compare_arms(stats, control="ctrl", weights={"control": 0.5, "a": 0.5})
    with pytest.raises(ValueError, match=r"\['zzz'\] that have no weight"):
        compare_arms({**stats, "zzz": V()}, control="control", weights={"control": 0.5, "a": 0.5})
    with pytest.raises(ValueError, match="metric"):
        compare_arms(stats, control="control", weights={"control": 0.5, "a": 0.5}, metric="ctr")  # type: ignore[arg-type]


# -- properties -----------------------------------------------------------------------------------------------------

_arm = st.integers(1, 5_000).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n)))


@settings(max_examples=60, deadline=None)
@given(st.lists(_arm, min_size=3, max_size=5), st.randoms(use_true_random=False))
def test_arm_order_does_not_change_results_and_holm_is_monotone(
    counts: list[tuple[int, int]], rnd: random.Random
) -> None:
    names = [f"arm{i}" for i in range(len(counts))]
    stats = {name: V.from_counts(n, x) for name, (n, x) in zip(names, counts, strict=True)}
    weights = dict.fromkeys(names, 1.0 / len(names))
    first = compare_arms(stats, control="arm0", weights=weights)
    shuffled = names[1:]
    rnd.shuffle(shuffled)
    order = ["arm0", *shuffled]
    second = compare_arms(
        {n: stats[n] for n in reversed(order)}, control="arm0", weights={n: weights[n] for n in order}
    )
    for c in first.comparisons:
        other = second.comparison(c.arm, c.baseline)
        assert other.p_value_holm == c.p_value_holm
        assert other.comparison.p_value == c.comparison.p_value
        if c.comparison.abs_diff is not None:
            assert other.comparison.abs_diff is not None
            sign = 1.0 if other.arm == c.arm else -1.0
            assert other.comparison.abs_diff == pytest.approx(sign * c.comparison.abs_diff, abs=1e-15)
    assert first.prob_best.prob_best is not None and second.prob_best.prob_best is not None
    for name in names:
        assert second.prob_best.prob_best[name] == pytest.approx(first.prob_best.prob_best[name], abs=1e-12)
    # Holm: adjusted >= raw, and the adjusted p-values are ordered like the raw ones.
    defined = sorted(
        (c.comparison.p_value, c.p_value_holm) for c in first.comparisons if c.comparison.p_value is not None
    )
    for raw, adjusted in defined:
        assert adjusted is not None and raw <= adjusted <= 1.0
    adjusted_in_raw_order = [a for _, a in defined]
    assert adjusted_in_raw_order == sorted(adjusted_in_raw_order)  # type: ignore[type-var]


# -- calibration by simulation --------------------------------------------------------------------------------------


def test_aa_three_arms_four_segments_holm_keeps_family_wise_error() -> None:
    """A/A: 3 identical arms, 4 segments of different sizes and rates, summed per arm; 1000 replications.

    Family = 2 model arms vs control + challenger vs champion. FWER must be <= alpha within binomial error (upper
    bound 0.05 + 2.33·sqrt(0.05·0.95/1000) = 0.066); the uncorrected family must exceed alpha, so the test can fail.
    """
    reps, alpha = 1_000, 0.05
    rng = np.random.default_rng(22)
    sizes = np.array([3_000, 1_500, 800, 2_500])  # users per arm per segment
    rates = np.array([0.05, 0.12, 0.20, 0.08])
    conversions = rng.binomial(sizes, rates, size=(reps, 3, 4))  # replication × arm × segment
    totals = conversions.sum(axis=2)  # sufficient statistics add: the arm's total is the sum of its segments
    any_holm = any_raw = 0
    for rep in range(reps):
        stats = {arm: V.from_counts(int(sizes.sum()), int(totals[rep, i])) for i, arm in enumerate(WEIGHTS3)}
        r = compare_arms(stats, control="control", weights=WEIGHTS3, alpha=alpha)
        any_holm += any(c.significant_holm for c in r.comparisons)
        any_raw += any(c.comparison.significant for c in r.comparisons)
    fwer, fwer_raw = any_holm / reps, any_raw / reps
    print(f"fwer_holm={fwer} fwer_raw={fwer_raw}")
    assert fwer <= 0.066, fwer
    assert fwer_raw > 0.075, fwer_raw
