"""Power, minimum detectable effect (MDE) and required sample size.

Conversion uses Cohen's effect size h = 2·asin(√p_t) − 2·asin(√p_c) and the power of the two-sided z-test on it
(the arcsine-transformed two-proportion test; Cohen 1988, Statistical Power Analysis, ch. 6), computed here exactly
as statsmodels' `NormalIndPower` computes it (`_normal_power`; the tests hold every function equal to statsmodels on
a grid). Revenue uses Cohen's d = Δ / σ with statsmodels' `TTestIndPower`. Use them before launch (how many users?)
and while running (is "no effect" just low power?). MDEs are relative (0.05 = +5 % over the control rate), as in the
experiment definition's `mde`.

Why not statsmodels for conversion: importing it (and pandas with it) cost about 0.8 s of every `abflow report`, more
than the report's whole query on 10 million exposures. The t-test solver is still statsmodels', imported inside
`sample_size_means` (no report calls it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from experiment.stats.messages import Reason
from experiment.stats.results import check_finite

__all__ = [
    "METHOD",
    "PowerResult",
    "mde_proportions",
    "power_proportions",
    "sample_size_means",
    "sample_size_proportions",
]

METHOD = "cohens_h_normal"
#: Bisection steps of the solvers: halving a bracket 200 times takes any float bracket to adjacent doubles.
_BISECTIONS = 200


@dataclass(frozen=True, kw_only=True)
class PowerResult:
    """Power analysis of a two-arm conversion test.

    `n_control`/`n_treatment` are users per arm; `mde_rel` is relative to `baseline_rate`; `power` in [0, 1].
    """

    method: str = METHOD
    alpha: float
    baseline_rate: float | None = field(default=None, metadata={"nullable": True})
    mde_rel: float | None = field(default=None, metadata={"nullable": True})
    n_control: int | None = field(default=None, metadata={"nullable": True})
    n_treatment: int | None = field(default=None, metadata={"nullable": True})
    power: float | None = field(default=None, metadata={"nullable": True})
    reasons: dict[str, Reason] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_finite(self)


def _normal_power(h: float, nobs1: float, ratio: float, alpha: float) -> float:
    """Power of the two-sided z-test for effect size `h` with `nobs1` users in control and `nobs1 * ratio` in treatment.

    statsmodels' `normal_power` with `NormalIndPower`'s effective sample size 1 / (1/n1 + 1/n2): power =
    P(Z > z_{1-α/2} − h√n) + P(Z < −z_{1-α/2} − h√n).
    """
    from scipy.special import ndtr, ndtri

    crit = -float(ndtri(alpha / 2.0))
    shift = h * math.sqrt(1.0 / (1.0 / nobs1 + 1.0 / (nobs1 * ratio)))
    return float(ndtr(-(crit - shift))) + float(ndtr(-crit - shift))


def _solve_increasing(f: Callable[[float], float], target: float, low: float, high: float) -> float:
    """The x in [low, high] where the increasing `f` reaches `target` (bisection to adjacent doubles)."""
    while f(high) < target:  # widen until the bracket holds the answer
        low, high = high, high * 2.0
    for _ in range(_BISECTIONS):
        middle = (low + high) / 2.0
        if middle in (low, high):
            break
        if f(middle) < target:
            low = middle
        else:
            high = middle
    return high


def _cohens_h(p_target: float, p_baseline: float) -> float:
    """|h| = |2·asin(√p_target) − 2·asin(√p_baseline)| (statsmodels' `proportion_effectsize`, unsigned)."""
    return abs(2.0 * math.asin(math.sqrt(p_target)) - 2.0 * math.asin(math.sqrt(p_baseline)))


def _check(alpha: float, power: float | None = None) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if power is not None and not 0.0 < power < 1.0:
        raise ValueError(f"power must lie in (0, 1), got {power}")


def _degenerate_baseline(p: float) -> bool:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"baseline rate must lie in [0, 1], got {p}")
    return p in (0.0, 1.0)


# Each function below binds its inputs once with `functools.partial(PowerResult, ...)`: every return, defined or
# undefined-with-reason, echoes the same inputs and adds only its answer or its reasons.


def sample_size_proportions(
    baseline_rate: float, mde_rel: float, *, alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0
) -> PowerResult:
    """Users per arm to detect a relative lift `mde_rel` with probability `power`; ratio = n_t / n_c."""
    _check(alpha, power)
    result = partial(PowerResult, alpha=alpha, baseline_rate=baseline_rate, mde_rel=mde_rel, power=power)
    target = baseline_rate * (1.0 + mde_rel)
    if _degenerate_baseline(baseline_rate) or mde_rel == 0.0 or not 0.0 < target < 1.0:
        reason = Reason.ZERO_BASELINE if baseline_rate == 0.0 else Reason.NOT_ENOUGH_DATA
        return result(reasons={"n_control": reason, "n_treatment": reason})
    h = _cohens_h(target, baseline_rate)
    n_c = _solve_increasing(lambda n: _normal_power(h, n, ratio, alpha), power, 1e-9, 1.0)
    return result(n_control=math.ceil(n_c), n_treatment=math.ceil(n_c * ratio))


def power_proportions(
    baseline_rate: float, mde_rel: float, n_control: int, n_treatment: int, *, alpha: float = 0.05
) -> PowerResult:
    """Probability of a significant result at these sample sizes if the true relative lift is `mde_rel`."""
    _check(alpha)
    result = partial(
        PowerResult,
        alpha=alpha,
        baseline_rate=baseline_rate,
        mde_rel=mde_rel,
        n_control=n_control,
        n_treatment=n_treatment,
    )
    target = baseline_rate * (1.0 + mde_rel)
    if n_control <= 0 or n_treatment <= 0:
        return result(reasons={"power": Reason.NO_USERS})
    if _degenerate_baseline(baseline_rate) or not 0.0 < target < 1.0:
        return result(reasons={"power": Reason.ZERO_BASELINE})
    h = _cohens_h(target, baseline_rate)
    return result(power=_normal_power(h, n_control, n_treatment / n_control, alpha))


def mde_proportions(
    baseline_rate: float, n_control: int, n_treatment: int, *, alpha: float = 0.05, power: float = 0.8
) -> PowerResult:
    """Smallest relative lift (upwards) detectable with `power` at these sample sizes.

    Solves for Cohen's h (the power is increasing in h), then inverts h = 2·asin(√p_t) − 2·asin(√p_c) for p_t.
    """
    _check(alpha, power)
    result = partial(
        PowerResult, alpha=alpha, baseline_rate=baseline_rate, n_control=n_control, n_treatment=n_treatment, power=power
    )
    if n_control <= 0 or n_treatment <= 0:
        return result(reasons={"mde_rel": Reason.NO_USERS})
    if _degenerate_baseline(baseline_rate):
        return result(reasons={"mde_rel": Reason.ZERO_BASELINE})
    ratio = n_treatment / n_control
    h = _solve_increasing(lambda e: _normal_power(e, n_control, ratio, alpha), power, 0.0, 1.0)
    angle = math.asin(math.sqrt(baseline_rate)) + h / 2.0
    if angle >= math.pi / 2:
        return result(reasons={"mde_rel": Reason.NOT_ENOUGH_DATA})
    target = math.sin(angle) ** 2
    return result(mde_rel=target / baseline_rate - 1.0)


def sample_size_means(
    sd: float, mde_abs: float, *, alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0
) -> int | None:
    """Users in the control arm for a t-test to detect an absolute difference `mde_abs` (units of sd).

    None when sd is 0 or mde_abs is 0 (the question has no finite answer).
    """
    _check(alpha, power)
    if sd <= 0.0 or mde_abs == 0.0:
        return None
    from statsmodels.stats.power import TTestIndPower

    n = float(TTestIndPower().solve_power(effect_size=abs(mde_abs) / sd, alpha=alpha, power=power, ratio=ratio))
    return math.ceil(n)
