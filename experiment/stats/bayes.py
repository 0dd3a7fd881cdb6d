"""Bayesian view of conversion: P(treatment beats control) and the expected loss (Beta–Binomial).

Posterior of a rate with x conversions in n users and a Beta(1, 1) prior: Beta(α = 1 + x, β = 1 + n − x).
Use these numbers to talk about risk ("if we ship and are wrong, we lose on average L conversions per user");
they are not p-values and are not corrected for peeking.

Exact computation (Evan Miller, "Formulas for Bayesian A/B testing", 2015, the closed form for P(p_B > p_A)):

    P(p_B > p_A) = Σ_{i=0}^{α_B−1} B(α_A + i, β_A + β_B) / ((β_B + i) · B(1 + i, β_B) · B(α_A, β_A))

evaluated in log space (scipy.special.betaln, summed with logsumexp). The sum has α_B terms; by the symmetries
P(p_B > p_A) = 1 − P(p_A > p_B) and p > q ⇔ 1 − p < 1 − q we may instead sum over α_A, β_A or β_B terms, and
we use the smallest of the four, so a 1 %-conversion experiment with 10^8 users sums ~10^6 terms.

When even the smallest count exceeds `EXACT_MAX_TERMS`, the sum is replaced by Gauss–Legendre quadrature of
the same probability, P = ∫ f_N(x) · G(x) dx, where f_N is the density of the *narrower* posterior and G the
(regularised incomplete beta) CDF of the other one; the integrand is then a narrow smooth bump times a smooth function,
the range is the narrow posterior's mean ± 14 standard deviations (mass outside < 1e-40 for such large parameters, which
are near-normal), and `QUAD_NODES` nodes give an absolute error below 1e-10 versus the exact sum. The tests measure that
error at the switch point (counts around `EXACT_MAX_TERMS`) and against a seeded Monte Carlo.

Precision: betaln of arguments near 10^8 is ~10^8 in magnitude, so the log-space terms carry an absolute error
of about 1e-8 (relative error of P about 1e-8) at n = 10^8, and ~1e-12 at n ≤ 10^5.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import betainc, betaln, logsumexp, xlog1py, xlogy

from experiment.stats.messages import Reason
from experiment.stats.results import check_finite
from experiment.stats.sufficient import VariantStats

__all__ = [
    "EXACT_MAX_TERMS",
    "METHOD",
    "BayesResult",
    "compare_bayes",
    "expected_loss",
    "prob_b_beats_a",
]

METHOD = "beta_binomial_uniform_prior_exact"
EXACT_MAX_TERMS = 200_000
QUAD_NODES = 400
_QUAD_HALF_WIDTH_SD = 14.0


@dataclass(frozen=True, kw_only=True)
class BayesResult:
    """P(treatment rate > control rate) and expected losses (absolute rate units: conversions per user).

    `expected_loss_treatment` = E[max(p_c − p_t, 0)]: what we lose on average by shipping treatment;
    `expected_loss_control` = E[max(p_t − p_c, 0)]: what we lose by keeping control. `evaluation` is
    "exact_sum" or "quadrature" (see the module docstring for the switch and its error).
    """

    method: str = METHOD
    prob_treatment_beats_control: float | None = field(default=None, metadata={"nullable": True})
    expected_loss_treatment: float | None = field(default=None, metadata={"nullable": True})
    expected_loss_control: float | None = field(default=None, metadata={"nullable": True})
    evaluation: str | None = None
    reasons: dict[str, Reason] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_finite(self)


def _check_params(*params: float) -> None:
    for p in params:
        if not (math.isfinite(p) and p > 0):
            raise ValueError(f"Beta parameters must be finite and > 0, got {p}")


def _miller_sum(a_a: float, b_a: float, a_b: float, b_b: float) -> float:
    """P(p_B > p_A) by Miller's sum over i < a_b (a_b must be an integer), in log space."""
    i = np.arange(int(a_b), dtype=np.float64)
    terms = betaln(a_a + i, b_a + b_b) - np.log(b_b + i) - betaln(1.0 + i, b_b) - betaln(a_a, b_a)
    return float(np.exp(logsumexp(terms)))


@functools.lru_cache(maxsize=4)
def _legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(n)


def _quadrature(a_a: float, b_a: float, a_b: float, b_b: float) -> float:
    """P(p_B > p_A) = ∫ f_narrow · G, integrating over the posterior with the smaller standard deviation."""
    sd_a = math.sqrt(a_a * b_a / ((a_a + b_a) ** 2 * (a_a + b_a + 1)))
    sd_b = math.sqrt(a_b * b_b / ((a_b + b_b) ** 2 * (a_b + b_b + 1)))
    nodes, weights = _legendre(QUAD_NODES)
    if sd_a <= sd_b:
        # P(B > A) = E_A[1 − F_B(p_A)] = E_A[I_{1−x}(b_b, a_b)]  (upper tail without cancellation)
        mean, sd, narrow = a_a / (a_a + b_a), sd_a, (a_a, b_a)

        def other(x: np.ndarray) -> np.ndarray:
            return betainc(b_b, a_b, 1.0 - x)
    else:
        # P(B > A) = E_B[F_A(p_B)]
        mean, sd, narrow = a_b / (a_b + b_b), sd_b, (a_b, b_b)

        def other(x: np.ndarray) -> np.ndarray:
            return betainc(a_a, b_a, x)

    lo = max(0.0, mean - _QUAD_HALF_WIDTH_SD * sd)
    hi = min(1.0, mean + _QUAD_HALF_WIDTH_SD * sd)
    x = 0.5 * (hi - lo) * nodes + 0.5 * (hi + lo)
    density = np.exp(_beta_logpdf(x, *narrow))
    value = 0.5 * (hi - lo) * float(np.sum(weights * density * other(x)))
    return min(1.0, max(0.0, value))


def _beta_logpdf(x: np.ndarray, a: float, b: float) -> np.ndarray:
    """The log Beta(a, b) density at x in (0, 1): scipy.stats.beta's own formula, without loading scipy.stats."""
    return xlog1py(b - 1.0, -x) + xlogy(a - 1.0, x) - betaln(a, b)


def prob_b_beats_a(a_a: float, b_a: float, a_b: float, b_b: float) -> tuple[float, str]:
    """P(p_B > p_A) for p_A ~ Beta(a_a, b_a), p_B ~ Beta(a_b, b_b).

    Returns (probability, evaluation) with evaluation "exact_sum" or "quadrature".
    """
    _check_params(a_a, b_a, a_b, b_b)
    options = [
        # (number of terms, function returning P(p_B > p_A))
        (a_b, lambda: _miller_sum(a_a, b_a, a_b, b_b)),
        (a_a, lambda: 1.0 - _miller_sum(a_b, b_b, a_a, b_a)),
        # p_B > p_A ⇔ q_A > q_B with q = 1 − p ~ Beta(β, α)
        (b_a, lambda: _miller_sum(b_b, a_b, b_a, a_a)),
        (b_b, lambda: 1.0 - _miller_sum(b_a, a_a, b_b, a_b)),
    ]
    integer_options = [(n, f) for n, f in options if float(n).is_integer()]
    if integer_options:
        n_terms, fn = min(integer_options, key=lambda item: item[0])
        if n_terms <= EXACT_MAX_TERMS:
            return min(1.0, max(0.0, fn())), "exact_sum"
    return _quadrature(a_a, b_a, a_b, b_b), "quadrature"


def expected_loss(a_a: float, b_a: float, a_b: float, b_b: float) -> float:
    """E[max(p_A − p_B, 0)]: the expected loss of choosing B.

    Stucchio (2015), "Bayesian A/B testing at VWO" (the loss function of Section 4).

    Uses E[p_A·1{p_A > p_B}] = E[p_A]·P(p'_A > p_B) with p'_A ~ Beta(a_a + 1, b_a) (size-biased posterior),
    and likewise for p_B, so the loss reduces to two P(beat) evaluations.
    """
    mean_a = a_a / (a_a + b_a)
    mean_b = a_b / (a_b + b_b)
    p_a_plus_beats_b = 1.0 - prob_b_beats_a(a_a + 1.0, b_a, a_b, b_b)[0]
    p_a_beats_b_plus = 1.0 - prob_b_beats_a(a_a, b_a, a_b + 1.0, b_b)[0]
    return max(0.0, mean_a * p_a_plus_beats_b - mean_b * p_a_beats_b_plus)


def compare_bayes(control: VariantStats, treatment: VariantStats) -> BayesResult:
    """P(treatment beats control) and expected losses for conversion, uniform Beta(1, 1) priors.

    With zero users in an arm the posterior is just the prior; the probability would be 0.5 by symmetry but
    says nothing, so it is null with reason `no_users_in_variant`.
    """
    if control.users == 0 or treatment.users == 0:
        reasons = dict.fromkeys(
            ("prob_treatment_beats_control", "expected_loss_treatment", "expected_loss_control"),
            Reason.NO_USERS,
        )
        return BayesResult(reasons=reasons)
    a_c, b_c = 1.0 + control.conversions, 1.0 + control.users - control.conversions
    a_t, b_t = 1.0 + treatment.conversions, 1.0 + treatment.users - treatment.conversions
    prob, evaluation = prob_b_beats_a(a_c, b_c, a_t, b_t)
    return BayesResult(
        prob_treatment_beats_control=prob,
        expected_loss_treatment=expected_loss(a_c, b_c, a_t, b_t),
        expected_loss_control=expected_loss(a_t, b_t, a_c, b_c),
        evaluation=evaluation,
    )
