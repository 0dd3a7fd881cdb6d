"""Welch's t-test for a per-user mean (revenue per user), from sufficient statistics.

Use it for continuous per-user metrics whose variances differ between arms (revenue is heavy-tailed and
treatment may change its spread, so the pooled-variance Student test is not safe). For large samples it agrees with a
z-test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# scipy.special's Student t (what scipy.stats.t calls: isf(q, df) = -stdtrit(df, q), sf(x, df) = stdtr(df, -x)),
# without loading scipy.stats.
from scipy.special import stdtr, stdtrit

from experiment.stats.messages import Reason
from experiment.stats.proportions import z_quantile
from experiment.stats.results import Comparison, Interval
from experiment.stats.sufficient import VariantStats

__all__ = ["METHOD", "WelchResult", "compare_revenue", "welch_from_moments"]

METHOD = "welch_t"


@dataclass(frozen=True, kw_only=True)
class WelchResult(Comparison):
    """Welch comparison; `df` is the Welch–Satterthwaite degrees of freedom, `abs_se` the standard error."""

    df: float | None = field(default=None, metadata={"nullable": True})
    abs_se: float | None = field(default=None, metadata={"nullable": True})


def welch_from_moments(
    n_c: int, mean_c: float, var_c: float, n_t: int, mean_t: float, var_t: float, *, alpha: float = 0.05
) -> WelchResult:
    """Welch test of mean_t − mean_c from per-arm n, mean and sample variance (n − 1 denominator).

    SE = sqrt(s_c²/n_c + s_t²/n_t); df = SE⁴ / ((s_c²/n_c)²/(n_c − 1) + (s_t²/n_t)²/(n_t − 1)) (Welch 1947,
    Biometrika 34, eq. 9); CI d ± t_{1−α/2, df}·SE and p = 2·P(T_df > |d|/SE). The relative lift d / mean_c
    uses the delta method with a normal quantile: Var ≈ s_t²/(n_t·m_c²) + m_t²·s_c²/(n_c·m_c⁴).
    """
    z_quantile(alpha)  # validates alpha
    reasons: dict[str, Reason] = {}
    if n_c < 2 or n_t < 2:
        reason = Reason.NO_USERS if min(n_c, n_t) == 0 else Reason.TOO_FEW_USERS
        for name in ("abs_diff", "abs_ci", "abs_se", "rel_lift", "rel_ci", "p_value", "df"):
            reasons[name] = reason
        return WelchResult(
            method=METHOD,
            alpha=alpha,
            control_value=mean_c if n_c else None,
            treatment_value=mean_t if n_t else None,
            reasons={
                **reasons,
                **({} if n_c else {"control_value": Reason.NO_USERS}),
                **({} if n_t else {"treatment_value": Reason.NO_USERS}),
            },
        )
    diff = mean_t - mean_c
    v_c, v_t = var_c / n_c, var_t / n_t
    se2 = v_c + v_t
    abs_ci = p_value = df = se = None
    if se2 > 0.0:
        se = math.sqrt(se2)
        df = se2**2 / (v_c**2 / (n_c - 1) + v_t**2 / (n_t - 1))
        q = float(-stdtrit(df, alpha / 2.0))
        abs_ci = Interval(diff - q * se, diff + q * se)
        p_value = float(min(1.0, 2.0 * stdtr(df, -(abs(diff) / se))))
    else:
        reasons.update(
            abs_ci=Reason.ZERO_VARIANCE,
            p_value=Reason.ZERO_VARIANCE,
            df=Reason.ZERO_VARIANCE,
            abs_se=Reason.ZERO_VARIANCE,
        )
    rel = rel_ci = None
    if mean_c == 0.0:
        reasons.update(rel_lift=Reason.ZERO_BASELINE, rel_ci=Reason.ZERO_BASELINE)
    else:
        rel = diff / mean_c
        rel_var = v_t / mean_c**2 + mean_t**2 * v_c / mean_c**4
        if rel_var > 0.0:
            half = z_quantile(alpha) * math.sqrt(rel_var)
            rel_ci = Interval(rel - half, rel + half)
        else:
            reasons["rel_ci"] = Reason.ZERO_VARIANCE
    return WelchResult(
        method=METHOD,
        alpha=alpha,
        control_value=mean_c,
        treatment_value=mean_t,
        abs_diff=diff,
        abs_ci=abs_ci,
        abs_se=se,
        rel_lift=rel,
        rel_ci=rel_ci,
        p_value=p_value,
        df=df,
        reasons=reasons,
    )


def compare_revenue(control: VariantStats, treatment: VariantStats, *, alpha: float = 0.05) -> WelchResult:
    """Welch test of revenue per user (currency units per user; zero-revenue users included)."""
    return welch_from_moments(
        control.users,
        control.revenue_per_user or 0.0,
        control.revenue_variance or 0.0,
        treatment.users,
        treatment.revenue_per_user or 0.0,
        treatment.revenue_variance or 0.0,
        alpha=alpha,
    )
