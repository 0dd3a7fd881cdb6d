"""Always-valid inference for peeking: the normal-mixture mSPRT.

Johari, Koomen, Pekelis & Walsh (2017), "Peeking at A/B tests: why it matters, and what to do about it", KDD,
Section 4; and Johari, Pekelis & Walsh (2022), "Always valid inference: continuous monitoring of A/B tests",
Operations Research 70(3). For a difference estimate θ̂_n with variance V_n and a N(θ₀, τ²) mixing
distribution over the alternative, the mixture likelihood ratio against H0: θ = θ₀ is

    Λ_n = sqrt(V_n / (V_n + τ²)) · exp( τ² (θ̂_n − θ₀)² / (2 V_n (V_n + τ²)) )

which for two equal streams of n normal observations with variance σ² (V_n = 2σ²/n) is exactly the paper's
two-sample statistic sqrt(2σ² / (2σ² + nτ²)) · exp(n²τ²(Ȳ_n − X̄_n − θ₀)² / (4σ²(2σ² + nτ²))).
Λ_n is a non-negative martingale under H0, so by Ville's inequality P(∃n: Λ_n ≥ 1/α) ≤ α. Hence:

- the always-valid p-value p_n = min(1, 1/Λ_n) (running minimum over looks, when the history is known);
- the always-valid confidence sequence {θ₀ : Λ_n(θ₀) < 1/α}, i.e. θ̂_n ± sqrt( V_n(V_n + τ²)/τ² ·
  (2 ln(1/α) + ln((V_n + τ²)/V_n)) ).

Binary and revenue data use the CLT (Johari et al. 2022, Section 5: the asymptotic version with plug-in
variances). τ² is set so that the boundary is tightest near `tuning_users` total users, the tuning rule for the
normal-mixture boundary of Howard, Ramdas, McAuliffe & Sekhon (2021), "Time-uniform, nonparametric, nonasymptotic
confidence sequences", Ann. Statist. 49(2) (the same rule GrowthBook exposes as its "sequential tuning parameter"): with
the per-user variance s² = V_n·N, τ² = s²·(−2 ln α + ln(1 − 2 ln α)) / tuning_users. Any fixed τ² > 0 keeps validity;
the choice only moves where the interval is narrowest.

Use it when analysts look at results before the planned sample size; the price is wider intervals than the
fixed-horizon test at the planned size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from experiment.stats.means import WelchResult, compare_revenue
from experiment.stats.messages import Reason
from experiment.stats.proportions import compare_proportions
from experiment.stats.results import Comparison, Interval, ProportionsResult
from experiment.stats.sufficient import VariantStats

__all__ = [
    "DEFAULT_TUNING_USERS",
    "METHOD",
    "SequentialResult",
    "compare_sequential",
    "mixture_variance",
    "msprt_half_width",
    "msprt_p_value",
]

METHOD = "msprt_normal_mixture"
DEFAULT_TUNING_USERS = 10_000


@dataclass(frozen=True, kw_only=True)
class SequentialResult(Comparison):
    """Always-valid comparison: `p_value` and the CIs stay valid however often one looks.

    `tau2` is the mixing variance on the absolute scale; `looks` the number of snapshots folded into the
    running minimum p-value and the running intersection of the intervals.
    """

    tau2: float | None = field(default=None, metadata={"nullable": True})
    looks: int = 1


def mixture_variance(per_user_variance: float | np.ndarray, alpha: float, tuning_users: int) -> float | np.ndarray:
    """τ² = s²·(−2 ln α + ln(1 − 2 ln α)) / tuning_users (see the module docstring)."""
    if tuning_users <= 0:
        raise ValueError(f"tuning_users must be > 0, got {tuning_users}")
    return per_user_variance * (-2.0 * math.log(alpha) + math.log(1.0 - 2.0 * math.log(alpha))) / tuning_users


def msprt_p_value(diff: np.ndarray | float, var: np.ndarray | float, tau2: np.ndarray | float) -> np.ndarray:
    """min(1, 1/Λ_n) for H0: θ = 0, vectorised; computed as exp(−ln Λ) to avoid overflow."""
    diff, var, tau2 = np.asarray(diff, float), np.asarray(var, float), np.asarray(tau2, float)
    log_lambda = 0.5 * np.log(var / (var + tau2)) + tau2 * diff**2 / (2.0 * var * (var + tau2))
    return np.minimum(1.0, np.exp(-log_lambda))


def msprt_half_width(var: float, tau2: float, alpha: float) -> float:
    """Half-width of the always-valid confidence sequence at the current look."""
    return math.sqrt(var * (var + tau2) / tau2 * (2.0 * math.log(1.0 / alpha) + math.log((var + tau2) / var)))


def compare_sequential(
    history: Sequence[tuple[VariantStats, VariantStats]] | tuple[VariantStats, VariantStats],
    *,
    alpha: float = 0.05,
    tuning_users: int = DEFAULT_TUNING_USERS,
    metric: str = "conversion",
) -> SequentialResult:
    """Always-valid comparison of `metric` ("conversion" or "revenue_per_user").

    Takes one snapshot (control, treatment) or a history of cumulative snapshots.

    With a history (cumulative snapshots, oldest first) the p-value is the running minimum and the intervals
    the running intersection, both still always valid (the running min/intersection of always-valid objects is always
    valid).
    """
    snapshots: list[tuple[VariantStats, VariantStats]] = (
        [cast(tuple[VariantStats, VariantStats], history)]
        if isinstance(history, tuple) and isinstance(history[0], VariantStats)
        else list(cast(Sequence[tuple[VariantStats, VariantStats]], history))
    )
    if not snapshots:
        raise ValueError("compare_sequential needs at least one (control, treatment) snapshot")
    p_run = 1.0
    abs_lo, abs_hi = -math.inf, math.inf
    rel_lo, rel_hi = -math.inf, math.inf
    looks = 0
    last = None
    tau2_used = None
    for control, treatment in snapshots:
        last, rel_se = _fixed(control, treatment, metric, alpha)
        if last.abs_se is None or last.abs_diff is None:
            continue
        looks += 1
        var = last.abs_se**2
        n_total = control.users + treatment.users
        tau2 = float(mixture_variance(var * n_total, alpha, tuning_users))
        tau2_used = tau2
        p_run = min(p_run, float(msprt_p_value(last.abs_diff, var, tau2)))
        half = msprt_half_width(var, tau2, alpha)
        abs_lo, abs_hi = max(abs_lo, last.abs_diff - half), min(abs_hi, last.abs_diff + half)
        if rel_se is not None and last.rel_lift is not None:
            rel_var = rel_se**2
            rel_tau2 = float(mixture_variance(rel_var * n_total, alpha, tuning_users))
            rel_half = msprt_half_width(rel_var, rel_tau2, alpha)
            rel_lo, rel_hi = max(rel_lo, last.rel_lift - rel_half), min(rel_hi, last.rel_lift + rel_half)
    assert last is not None
    reasons: dict[str, Reason] = {}
    for name in ("control_value", "treatment_value", "abs_diff", "rel_lift"):
        if name in last.reasons:
            reasons[name] = last.reasons[name]
    if looks == 0:
        base = last.reasons.get("abs_ci", Reason.NOT_ENOUGH_DATA)
        reasons.update(abs_ci=base, rel_ci=last.reasons.get("rel_ci", base), p_value=base, tau2=base)
        return SequentialResult(
            method=METHOD,
            alpha=alpha,
            control_value=last.control_value,
            treatment_value=last.treatment_value,
            abs_diff=last.abs_diff,
            rel_lift=last.rel_lift,
            reasons=reasons,
            looks=0,
        )
    # The running intersection can be empty only with probability <= alpha; then report the latest interval.
    abs_ci = Interval(abs_lo, abs_hi) if abs_lo <= abs_hi else None
    if abs_ci is None:
        reasons["abs_ci"] = Reason.NOT_ENOUGH_DATA
    rel_ci = Interval(rel_lo, rel_hi) if math.isfinite(rel_lo) and rel_lo <= rel_hi else None
    if rel_ci is None:
        reasons["rel_ci"] = last.reasons.get("rel_ci", Reason.NOT_ENOUGH_DATA)
    return SequentialResult(
        method=METHOD,
        alpha=alpha,
        control_value=last.control_value,
        treatment_value=last.treatment_value,
        abs_diff=last.abs_diff,
        abs_ci=abs_ci,
        rel_lift=last.rel_lift,
        rel_ci=rel_ci,
        p_value=p_run,
        tau2=tau2_used,
        looks=looks,
        reasons=reasons,
    )


def _fixed(
    control: VariantStats, treatment: VariantStats, metric: str, alpha: float
) -> tuple[ProportionsResult | WelchResult, float | None]:
    """The fixed-horizon comparison of one snapshot and the standard error of its relative lift."""
    if metric == "conversion":
        result = compare_proportions(control, treatment, alpha=alpha)
        return result, result.rel_se
    if metric == "revenue_per_user":
        welch = compare_revenue(control, treatment, alpha=alpha)
        rel_se = None
        if welch.rel_lift is not None and welch.control_value and control.users and treatment.users:
            v_c = (control.revenue_variance or 0.0) / control.users
            v_t = (treatment.revenue_variance or 0.0) / treatment.users
            m_c, m_t = welch.control_value, welch.treatment_value or 0.0
            rel_var = v_t / m_c**2 + m_t**2 * v_c / m_c**4
            rel_se = math.sqrt(rel_var) if rel_var > 0 else None
        return welch, rel_se
    raise ValueError(f"unknown metric {metric!r}; sequential supports 'conversion' and 'revenue_per_user'")
