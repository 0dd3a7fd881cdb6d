"""Two-proportion comparison (conversion rate): the fixed-horizon frequentist workhorse.

Use it for any 0/1 per-user metric at a planned sample size. For peeking use `sequential`; for a variance
reduction with the pre-period covariate use `cuped`.
"""

from __future__ import annotations

import math

# scipy.special, not scipy.stats: the same functions (norm.isf(q) is -ndtri(q), norm.sf(x) is ndtr(-x)) without
# loading every distribution, which was most of `abflow report`'s import time.
from scipy.special import ndtr, ndtri

from experiment.stats.messages import Reason
from experiment.stats.results import Interval, ProportionsResult
from experiment.stats.sufficient import VariantStats

__all__ = ["METHOD", "compare_proportions", "two_sided_p", "z_quantile"]

METHOD = "two_proportion_z_unpooled_wald"


def z_quantile(alpha: float) -> float:
    """The two-sided normal critical value z_{1−α/2}."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    return float(-ndtri(alpha / 2.0))


def two_sided_p(z: float) -> float:
    """2·P(Z > |z|) for a standard normal Z, via the survival function so tiny p-values keep precision."""
    return float(min(1.0, 2.0 * ndtr(-abs(z))))


def compare_proportions(control: VariantStats, treatment: VariantStats, *, alpha: float = 0.05) -> ProportionsResult:
    """Compare conversion rates: treatment − control (absolute) and treatment / control − 1 (relative).

    Formulas, with p̂ = conversions / users and n = users per arm:
    - abs: d = p̂_t − p̂_c, SE = sqrt(p̂_t(1−p̂_t)/n_t + p̂_c(1−p̂_c)/n_c) (unpooled Wald), CI d ±
      z_{1−α/2}·SE and p = 2Φ(−|d|/SE), so p < α ⇔ 0 ∉ CI.
    - pooled p-value: p̄ = (x_c + x_t)/(n_c + n_t), SE₀ = sqrt(p̄(1−p̄)(1/n_c + 1/n_t)) (the score test
      under H0).
    - rel: r = p̂_t/p̂_c − 1, delta method Var(r) ≈ Var(p̂_t)/p̂_c² + p̂_t²·Var(p̂_c)/p̂_c⁴
      (Casella & Berger, Statistical Inference, 2nd ed., Thm 5.5.24), normal CI.
    """
    z_crit = z_quantile(alpha)
    reasons: dict[str, Reason] = {}
    nc, nt = control.users, treatment.users
    pc, pt = control.conversion_rate, treatment.conversion_rate
    if pc is None:
        reasons["control_value"] = Reason.NO_USERS
    if pt is None:
        reasons["treatment_value"] = Reason.NO_USERS
    if pc is None or pt is None:
        for name in (
            "abs_diff",
            "abs_ci",
            "abs_se",
            "rel_lift",
            "rel_ci",
            "rel_se",
            "rel_p_value",
            "p_value",
            "p_value_pooled",
        ):
            reasons[name] = Reason.NO_USERS
        return ProportionsResult(method=METHOD, alpha=alpha, control_value=pc, treatment_value=pt, reasons=reasons)

    var_c = pc * (1.0 - pc) / nc
    var_t = pt * (1.0 - pt) / nt
    diff = pt - pc
    abs_se: float | None = math.sqrt(var_c + var_t)
    abs_ci: Interval | None = None
    p_value: float | None = None
    if abs_se:
        abs_ci = Interval(diff - z_crit * abs_se, diff + z_crit * abs_se)
        p_value = two_sided_p(diff / abs_se)
    else:
        abs_se = None
        reasons.update(abs_se=Reason.ZERO_VARIANCE, abs_ci=Reason.ZERO_VARIANCE, p_value=Reason.ZERO_VARIANCE)

    pooled = (control.conversions + treatment.conversions) / (nc + nt)
    pooled_se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / nc + 1.0 / nt))
    p_value_pooled = two_sided_p(diff / pooled_se) if pooled_se else None
    if p_value_pooled is None:
        reasons["p_value_pooled"] = Reason.ZERO_VARIANCE

    rel: float | None = None
    rel_se: float | None = None
    rel_ci: Interval | None = None
    rel_p: float | None = None
    if pc == 0.0:
        reasons.update(
            rel_lift=Reason.ZERO_BASELINE,
            rel_se=Reason.ZERO_BASELINE,
            rel_ci=Reason.ZERO_BASELINE,
            rel_p_value=Reason.ZERO_BASELINE,
        )
    else:
        rel = pt / pc - 1.0
        rel_var = var_t / pc**2 + pt**2 * var_c / pc**4
        if rel_var > 0.0:
            rel_se = math.sqrt(rel_var)
            rel_ci = Interval(rel - z_crit * rel_se, rel + z_crit * rel_se)
            rel_p = two_sided_p(rel / rel_se)
        else:
            reasons.update(rel_se=Reason.ZERO_VARIANCE, rel_ci=Reason.ZERO_VARIANCE, rel_p_value=Reason.ZERO_VARIANCE)

    return ProportionsResult(
        method=METHOD,
        alpha=alpha,
        control_value=pc,
        treatment_value=pt,
        abs_diff=diff,
        abs_se=abs_se,
        abs_ci=abs_ci,
        p_value=p_value,
        p_value_pooled=p_value_pooled,
        rel_lift=rel,
        rel_se=rel_se,
        rel_ci=rel_ci,
        rel_p_value=rel_p,
        reasons=reasons,
    )
