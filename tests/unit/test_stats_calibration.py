"""Calibration by seeded simulation: false-positive rate, CI coverage, the sequential mode under peeking."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from experiment.stats.proportions import compare_proportions
from experiment.stats.sequential import compare_sequential, mixture_variance, msprt_p_value
from experiment.stats.sufficient import VariantStats as V

SIMS = 5_000


def _simulate(seed: int, n: int, p_c: float, p_t: float):
    rng = np.random.default_rng(seed)
    return rng.binomial(n, p_c, SIMS), rng.binomial(n, p_t, SIMS)


def test_aa_false_positive_rate_is_alpha() -> None:
    x_c, x_t = _simulate(11, 5_000, 0.10, 0.10)
    p = np.array(
        [
            compare_proportions(V.from_counts(5_000, int(a)), V.from_counts(5_000, int(b))).p_value
            for a, b in zip(x_c, x_t, strict=True)
        ]
    )
    fpr = float(np.mean(p < 0.05))
    assert 0.04 <= fpr <= 0.06, fpr
    # p-values are uniform under H0: a coarse KS-style check on deciles
    counts, _ = np.histogram(p, bins=10, range=(0, 1))
    assert counts.min() > 0.8 * SIMS / 10 and counts.max() < 1.2 * SIMS / 10


def test_ci_coverage_of_true_absolute_and_relative_lift() -> None:
    n, p_c, p_t = 8_000, 0.10, 0.12
    x_c, x_t = _simulate(12, n, p_c, p_t)
    cover_abs = cover_rel = 0
    for a, b in zip(x_c, x_t, strict=True):
        r = compare_proportions(V.from_counts(n, int(a)), V.from_counts(n, int(b)))
        cover_abs += r.abs_ci.contains(p_t - p_c)
        cover_rel += r.rel_ci.contains(p_t / p_c - 1)
    assert 0.94 <= cover_abs / SIMS <= 0.96, cover_abs / SIMS
    assert 0.94 <= cover_rel / SIMS <= 0.96, cover_rel / SIMS


def _peeking_paths(seed: int, sims: int, looks: int, step_per_arm: int, p: float):
    rng = np.random.default_rng(seed)
    inc_c = rng.binomial(step_per_arm, p, (sims, looks))
    inc_t = rng.binomial(step_per_arm, p, (sims, looks))
    n = step_per_arm * np.arange(1, looks + 1)
    return np.cumsum(inc_c, axis=1), np.cumsum(inc_t, axis=1), n


def test_sequential_keeps_fpr_under_peeking_every_500_users() -> None:
    sims, looks, alpha = 4_000, 40, 0.05  # a look after every 500 users (250 per arm), up to 20,000 users
    x_c, x_t, n = _peeking_paths(13, sims, looks, 250, 0.10)
    p_c, p_t = x_c / n, x_t / n
    diff = p_t - p_c
    var = p_c * (1 - p_c) / n + p_t * (1 - p_t) / n
    valid = var > 0
    tau2 = mixture_variance(var * 2 * n, alpha, 10_000)
    p_seq = np.where(valid, msprt_p_value(diff, np.where(valid, var, 1.0), np.where(valid, tau2, 1.0)), 1.0)
    fpr_seq = float(np.mean(p_seq.min(axis=1) < alpha))
    assert fpr_seq <= 0.05, fpr_seq
    # The test can fail: naive fixed-horizon p-values checked at every look are far above alpha.
    z = np.where(valid, diff / np.sqrt(np.where(valid, var, 1.0)), 0.0)
    fpr_naive = float(np.mean((2 * norm.sf(np.abs(z)) < alpha).any(axis=1)))
    assert fpr_naive > 0.15, fpr_naive


def test_sequential_scalar_path_matches_vectorised_and_covers() -> None:
    x_c, x_t, n = _peeking_paths(14, 3, 10, 250, 0.2)
    for s in range(3):
        history = [
            (V.from_counts(int(n[k]), int(x_c[s, k])), V.from_counts(int(n[k]), int(x_t[s, k]))) for k in range(10)
        ]
        r = compare_sequential(history, tuning_users=10_000)
        pc, pt = x_c[s] / n, x_t[s] / n
        var = pc * (1 - pc) / n + pt * (1 - pt) / n
        expected = msprt_p_value(pt - pc, var, mixture_variance(var * 2 * n, 0.05, 10_000)).min()
        assert r.p_value == pytest.approx(float(expected), rel=1e-12)
        assert r.looks == 10
        fixed = compare_proportions(*history[-1])
        assert r.abs_ci.width > fixed.abs_ci.width  # always-valid intervals are wider


def test_sequential_detects_a_real_effect() -> None:
    x_c, x_t, n = _peeking_paths(15, 1, 40, 250, 0.10)
    rng = np.random.default_rng(16)
    x_t = np.cumsum(rng.binomial(250, 0.13, (1, 40)), axis=1)
    history = [(V.from_counts(int(n[k]), int(x_c[0, k])), V.from_counts(int(n[k]), int(x_t[0, k]))) for k in range(40)]
    assert compare_sequential(history).p_value < 0.05
