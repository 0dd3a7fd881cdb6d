"""Lift by segment: per-segment rows, BH across segments, Cochran's Q and I², degenerate segments, calibration."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from statsmodels.stats.meta_analysis import combine_effects
from statsmodels.stats.multitest import multipletests

from experiment.stats.means import WelchResult
from experiment.stats.messages import Reason
from experiment.stats.proportions import compare_proportions
from experiment.stats.segments import cochran_q, segment_lift
from experiment.stats.sufficient import VariantStats as V


def _two_segments() -> dict[str, dict[str, V]]:
    return {
        "age 25-34": {"control": V.from_counts(2_000, 200), "model": V.from_counts(2_000, 260)},
        "age 35-44": {"control": V.from_counts(1_000, 100), "model": V.from_counts(1_000, 100)},
    }


def test_cochran_q_golden_two_segments_by_hand() -> None:
    # d1 = 0.13 − 0.10 = 0.03, v1 = (0.10·0.90 + 0.13·0.87)/2000 = 1.0155e-4; d2 = 0, v2 = 2·0.09/1000 = 1.8e-4.
    # With two segments Q = (d1 − d2)² / (v1 + v2) = 0.0009 / 2.8155e-4, the square of the z of d1 − d2;
    # pooled = d1·v2/(v1 + v2); I² = 1 − 1/Q = 1 − 2.8155e-4/0.0009. Precision 1e-12 (1e-9 for the p-value).
    h = segment_lift(_two_segments(), control="control").heterogeneity["model"]
    assert h.statistic is not None
    assert h.statistic == pytest.approx(0.0009 / 2.8155e-4, abs=1e-12)
    assert h.statistic == pytest.approx(3.196590303676079, abs=1e-12)
    assert h.df == 1
    assert h.p_value == pytest.approx(0.07379196720510797, abs=1e-9)
    assert h.p_value == pytest.approx(2 * sps.norm.sf(math.sqrt(h.statistic)), abs=1e-12)
    assert h.p_value == pytest.approx(float(sps.chi2.sf(h.statistic, 1)), rel=1e-12)
    assert h.i_squared == pytest.approx(1 - 2.8155e-4 / 0.0009, abs=1e-12)
    assert h.pooled_abs_diff == pytest.approx(0.03 * 1.8e-4 / 2.8155e-4, abs=1e-12)
    assert h.pooled_abs_se == pytest.approx(math.sqrt(1.0155e-4 * 1.8e-4 / 2.8155e-4), abs=1e-12)
    assert h.segments == ("age 25-34", "age 35-44") and not h.excluded
    assert h.heterogeneous is False  # p ≈ 0.074 > 0.05


def test_cochran_q_matches_statsmodels_combine_effects() -> None:
    rng = np.random.default_rng(30)
    for _ in range(20):
        k = int(rng.integers(2, 9))
        d = rng.normal(0.01, 0.02, k)
        se = rng.uniform(0.002, 0.03, k)
        result = cochran_q(list(d), list(se))
        pooled, pooled_se, q, df, p, i2 = (
            result.pooled,
            result.pooled_se,
            result.statistic,
            result.df,
            result.p_value,
            result.i_squared,
        )
        with np.errstate(invalid="ignore"):  # its random-effects extras take sqrt of negatives at k = 2; unused here
            oracle = combine_effects(d, se**2, method_re="chi2")
        assert q == pytest.approx(oracle.q, rel=1e-10)
        assert df == k - 1
        assert p == pytest.approx(float(sps.chi2.sf(oracle.q, k - 1)), rel=1e-9, abs=1e-15)
        assert i2 == pytest.approx(max(0.0, float(oracle.i2)), abs=1e-10)
        assert pooled == pytest.approx(oracle.mean_effect_fe, rel=1e-10, abs=1e-15)
        assert pooled_se == pytest.approx(oracle.sd_eff_w_fe, rel=1e-10)


def test_rows_are_compare_proportions_and_bh_matches_multipletests() -> None:
    rng = np.random.default_rng(31)
    segs: dict[str, dict[str, V]] = {}
    for i in range(6):
        n = int(rng.integers(500, 5_000))
        segs[f"segment {i}"] = {
            arm: V.from_counts(n, int(rng.binomial(n, rate)))
            for arm, rate in (("control", 0.10), ("champion", 0.11), ("challenger", 0.10 + 0.01 * i))
        }
    r = segment_lift(segs, control="control")
    assert r.arms == ("champion", "challenger") and r.segments == tuple(segs)
    for row in r.lifts:
        expected = compare_proportions(segs[row.segment]["control"], segs[row.segment][row.arm])
        assert row.comparison == expected
        assert row.control_users == segs[row.segment]["control"].users
        assert row.treatment_users == segs[row.segment][row.arm].users
    for arm in r.arms:
        rows = [row for row in r.lifts if row.arm == arm]
        bh = multipletests([row.comparison.p_value for row in rows], method="fdr_bh")[1]
        assert [row.p_value_bh for row in rows] == [float(p) for p in bh]
    table = segment_lift(segs, control="control", fdr_family="all_arms")
    bh_all = multipletests([row.comparison.p_value for row in table.lifts], method="fdr_bh")[1]
    assert [row.p_value_bh for row in table.lifts] == [float(p) for p in bh_all]
    for row in r.lifts:
        assert row.p_value_bh is not None and row.comparison.p_value is not None
        assert row.p_value_bh >= row.comparison.p_value
    json.dumps(r.to_dict(), allow_nan=False)


def test_degenerate_segments_are_typed_with_reasons_never_nan() -> None:
    segs = {
        "ok 1": {"control": V.from_counts(1_000, 100), "model": V.from_counts(1_000, 130)},
        "ok 2": {"control": V.from_counts(800, 90), "model": V.from_counts(800, 95)},
        "empty arm": {"control": V.from_counts(300, 30)},  # no 'model' users in this segment
        "no conversions": {"control": V.from_counts(50, 0), "model": V.from_counts(40, 0)},
    }
    r = segment_lift(segs, control="control")
    empty = r.lift("empty arm", "model")
    assert empty.treatment_users == 0 and empty.comparison.treatment_value is None
    assert empty.comparison.reasons["treatment_value"] == Reason.NO_USERS
    assert empty.p_value_bh is None and empty.reasons["p_value_bh"] == Reason.NO_USERS
    flat = r.lift("no conversions", "model")
    assert flat.comparison.abs_diff == 0.0 and flat.comparison.p_value is None
    assert flat.reasons["p_value_bh"] == Reason.ZERO_VARIANCE
    h = r.heterogeneity["model"]
    assert h.segments == ("ok 1", "ok 2")
    assert h.excluded == {"empty arm": Reason.NO_USERS, "no conversions": Reason.ZERO_VARIANCE}
    assert h.statistic is not None and h.df == 1
    # BH family is the two defined p-values only
    rows = [r.lift("ok 1", "model"), r.lift("ok 2", "model")]
    expected = multipletests([row.comparison.p_value for row in rows], method="fdr_bh")[1]
    assert [row.p_value_bh for row in rows] == [float(p) for p in expected]
    text = json.dumps(r.to_dict(), allow_nan=False)
    assert '"no_users_in_variant"' in text and '"zero_variance"' in text


def test_fewer_than_two_usable_segments_gives_not_enough_data() -> None:
    segs = {
        "only": {"control": V.from_counts(1_000, 100), "model": V.from_counts(1_000, 130)},
        "dead": {"control": V(), "model": V()},
    }
    h = segment_lift(segs, control="control").heterogeneity["model"]
    assert h.statistic is None and h.p_value is None and h.i_squared is None and h.heterogeneous is None
    assert h.reasons["p_value"] == Reason.NOT_ENOUGH_DATA and h.excluded == {"dead": Reason.NO_USERS}


def test_revenue_metric_uses_welch_standard_errors() -> None:
    rng = np.random.default_rng(32)

    def arm(n: int, mu: float) -> V:
        conv = rng.random(n) < 0.3
        return V.of_users(conv, np.where(conv, np.round(rng.lognormal(mu, 1.0, n), 2), 0.0), rng.poisson(2, n))

    segs = {f"s{i}": {"control": arm(300, 3.0), "model": arm(300, 3.0 + 0.1 * i)} for i in range(3)}
    r = segment_lift(segs, control="control", metric="revenue_per_user")
    assert all(isinstance(row.comparison, WelchResult) for row in r.lifts)
    d = [row.comparison.abs_diff for row in r.lifts]
    se = [row.comparison.abs_se for row in r.lifts]
    with np.errstate(invalid="ignore"):
        oracle = combine_effects(np.array(d), np.array(se) ** 2)
    assert r.heterogeneity["model"].statistic == pytest.approx(oracle.q, rel=1e-10)


def test_misuse_raises_with_names() -> None:
    segs = _two_segments()
    with pytest.raises(ValueError, match=r"control 'ctrl' has statistics in no segment"):
        segment_lift(segs, control="ctrl")
    with pytest.raises(ValueError, match="fdr_family"):
        segment_lift(segs, control="control", fdr_family="everything")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one treatment arm"):
        segment_lift({"s": {"control": V.from_counts(10, 1)}}, control="control")
    with pytest.raises(ValueError, match="standard errors > 0"):
        cochran_q([0.1, 0.2], [0.01, 0.0])


# -- properties -----------------------------------------------------------------------------------------------------

_estimates = st.lists(
    st.tuples(st.floats(-0.5, 0.5), st.floats(1e-3, 0.2)),
    min_size=2,
    max_size=10,
)


@settings(max_examples=200, deadline=None)
@given(_estimates, st.floats(-0.3, 0.3), st.randoms(use_true_random=False))
def test_cochran_q_invariants(pairs: list[tuple[float, float]], shift: float, rnd: random.Random) -> None:
    d, se = [p[0] for p in pairs], [p[1] for p in pairs]
    r = cochran_q(d, se)
    assert r.statistic >= 0.0 and 0.0 <= r.p_value <= 1.0 and 0.0 <= r.i_squared <= 1.0 and r.df == len(d) - 1
    # Q measures spread: shifting every lift by a constant moves the pooled lift only.
    shifted = cochran_q([x + shift for x in d], se)
    assert shifted.statistic == pytest.approx(r.statistic, rel=1e-6, abs=1e-9)
    assert shifted.pooled == pytest.approx(r.pooled + shift, abs=1e-9)
    # The order of the segments does not matter.
    order = list(range(len(d)))
    rnd.shuffle(order)
    permuted = cochran_q([d[i] for i in order], [se[i] for i in order])
    assert permuted.statistic == pytest.approx(r.statistic, rel=1e-12, abs=1e-12)
    # Equal lifts: no heterogeneity.
    assert cochran_q([d[0]] * len(d), se).statistic == pytest.approx(0.0, abs=1e-18)


_segment = st.integers(20, 3_000).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(20, 3_000)).flatmap(
        lambda t: st.tuples(st.just(t[0]), st.just(t[1]), st.just(t[2]), st.integers(0, t[2]))
    )
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_segment, min_size=2, max_size=6))
def test_segment_order_does_not_change_results(cells: list[tuple[int, int, int, int]]) -> None:
    segs = {
        f"seg {i}": {"control": V.from_counts(nc, xc), "model": V.from_counts(nt, xt)}
        for i, (nc, xc, nt, xt) in enumerate(cells)
    }
    forward = segment_lift(segs, control="control")
    backward = segment_lift(dict(reversed(list(segs.items()))), control="control")
    for row in forward.lifts:
        other = backward.lift(row.segment, row.arm)
        assert other.comparison == row.comparison and other.p_value_bh == row.p_value_bh
    hf, hb = forward.heterogeneity["model"], backward.heterogeneity["model"]
    assert set(hf.segments) == set(hb.segments) and hf.excluded == hb.excluded
    if hf.statistic is not None:
        assert hb.statistic == pytest.approx(hf.statistic, rel=1e-9, abs=1e-12)
        assert hb.i_squared == pytest.approx(hf.i_squared, abs=1e-9)


# -- calibration by simulation --------------------------------------------------------------------------------------

_SIZES = np.array([3_000, 1_500, 800, 2_500])  # users per arm in each of 4 segments
_RATES = np.array([0.05, 0.12, 0.20, 0.08])


def _segments(n: np.ndarray, conversions: np.ndarray, arms: tuple[str, ...]) -> dict[str, dict[str, V]]:
    """Sufficient statistics from binomial draws: conversions[arm, segment]."""
    return {
        f"segment {s}": {arm: V.from_counts(int(n[s]), int(conversions[a, s])) for a, arm in enumerate(arms)}
        for s in range(len(n))
    }


def test_aa_three_arms_four_segments_bh_and_q_false_positive_rates() -> None:
    """A/A over 3 arms × 4 segments, 2000 replications.

    Every null is true, so the FDR equals the chance of any BH discovery: <= alpha within binomial error
    (0.05 + 2.33·sqrt(0.05·0.95/2000) = 0.061). Cochran's Q (two arms, each against the shared control) rejects
    at a rate near alpha: within ±0.015 (about 3 binomial standard errors of the pooled 4000 correlated tests).
    """
    reps, alpha = 2_000, 0.05
    rng = np.random.default_rng(33)
    arms = ("control", "champion", "challenger")
    draws = rng.binomial(_SIZES, _RATES, size=(reps, 3, 4))
    any_bh = q_reject = q_tests = 0
    for rep in range(reps):
        r = segment_lift(_segments(_SIZES, draws[rep], arms), control="control", alpha=alpha)
        any_bh += any(row.significant_bh for row in r.lifts if row.arm == "champion")
        for h in r.heterogeneity.values():
            q_tests += 1
            q_reject += bool(h.heterogeneous)
    fdr, q_rate = any_bh / reps, q_reject / q_tests
    assert fdr <= 0.061, fdr
    assert abs(q_rate - alpha) <= 0.015, q_rate


def test_bh_controls_fdr_with_some_real_effects() -> None:
    """8 segments, a real +3 points lift in 4 of them: FDR = E[false / max(discoveries, 1)] <= alpha·m0/m = 0.025.

    Bound checked: <= 0.05 (alpha) with margin; 1000 replications, mean of V/R has standard error < 0.005.
    Power must be real (most true effects found), so the bound is not met by never rejecting.
    """
    reps, alpha = 1_000, 0.05
    rng = np.random.default_rng(34)
    n = np.full(8, 4_000)
    base = np.full(8, 0.10)
    lift = np.r_[np.full(4, 0.03), np.zeros(4)]
    ctrl = rng.binomial(n, base, size=(reps, 8))
    treat = rng.binomial(n, base + lift, size=(reps, 8))
    fdp = np.empty(reps)
    found = 0
    for rep in range(reps):
        r = segment_lift(
            _segments(n, np.stack([ctrl[rep], treat[rep]]), ("control", "model")), control="control", alpha=alpha
        )
        hits = np.array([bool(row.significant_bh) for row in r.lifts])
        false = int(hits[4:].sum())
        fdp[rep] = false / max(1, int(hits.sum()))
        found += int(hits[:4].sum())
    assert float(fdp.mean()) <= 0.05, float(fdp.mean())
    assert found / (4 * reps) > 0.8


def test_q_has_power_against_a_known_heterogeneous_effect() -> None:
    """+8 points in one segment, +1 point in the other three; 4 segments, 2000 users per arm per segment.

    The lifts differ by 7 points against a per-segment SE near 0.01, so Q must reject in >= 95 % of 500 replications
    and I² be large; the same design with +1 everywhere rejects near alpha (the heterogeneity test, not the lift).
    """
    reps = 500
    rng = np.random.default_rng(35)
    n = np.full(4, 2_000)
    base = np.array([0.10, 0.12, 0.08, 0.10])
    power = fpr = 0
    i2: list[float] = []
    for lift, expect_power in ((np.array([0.08, 0.01, 0.01, 0.01]), True), (np.full(4, 0.01), False)):
        ctrl = rng.binomial(n, base, size=(reps, 4))
        treat = rng.binomial(n, base + lift, size=(reps, 4))
        for rep in range(reps):
            r = segment_lift(_segments(n, np.stack([ctrl[rep], treat[rep]]), ("control", "model")), control="control")
            h = r.heterogeneity["model"]
            if expect_power:
                power += bool(h.heterogeneous)
                assert h.i_squared is not None
                i2.append(h.i_squared)
            else:
                fpr += bool(h.heterogeneous)
    assert power / reps >= 0.95, power / reps
    assert float(np.median(i2)) > 0.7
    assert fpr / reps <= 0.05 + 2.33 * math.sqrt(0.05 * 0.95 / reps), fpr / reps
