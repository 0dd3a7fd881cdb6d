"""Power, minimum detectable effect (MDE) and required sample size, via statsmodels.

Conversion uses Cohen's effect size h = 2·asin(√p_t) − 2·asin(√p_c) with `NormalIndPower` (the arcsine-transformed
two-proportion z-test; Cohen 1988, Statistical Power Analysis, ch. 6). Revenue uses Cohen's d = Δ / σ with
`TTestIndPower`. Use them before launch (how many users?) and while running (is "no effect" just low power?). MDEs are
relative (0.05 = +5 % over the control rate), as in the experiment definition's `mde`.

statsmodels is imported inside the functions: loading it (and pandas with it) costs about a second, which every
importer of `experiment.stats` (the report command, the dashboard) would otherwise pay up front.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial

from experiment.stats.messages import Reason
from experiment.stats.results import check_finite

__all__ = [
    "METHOD",
    "PowerResult",
    "load_solver",
    "mde_proportions",
    "power_proportions",
    "sample_size_means",
    "sample_size_proportions",
]

METHOD = "cohens_h_normal_statsmodels"


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


def load_solver() -> None:
    """Import statsmodels' power solver now: for a caller that can overlap its ~1 s import with other work."""
    import statsmodels.stats.power  # noqa: F401


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
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    h = abs(float(proportion_effectsize(target, baseline_rate)))
    n_c = float(NormalIndPower().solve_power(effect_size=h, alpha=alpha, power=power, ratio=ratio))
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
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    h = abs(float(proportion_effectsize(target, baseline_rate)))
    value = float(NormalIndPower().power(effect_size=h, nobs1=n_control, alpha=alpha, ratio=n_treatment / n_control))
    return result(power=value)


def mde_proportions(
    baseline_rate: float, n_control: int, n_treatment: int, *, alpha: float = 0.05, power: float = 0.8
) -> PowerResult:
    """Smallest relative lift (upwards) detectable with `power` at these sample sizes.

    Solves Cohen's h with statsmodels, then inverts h = 2·asin(√p_t) − 2·asin(√p_c) for p_t.
    """
    _check(alpha, power)
    result = partial(
        PowerResult, alpha=alpha, baseline_rate=baseline_rate, n_control=n_control, n_treatment=n_treatment, power=power
    )
    if n_control <= 0 or n_treatment <= 0:
        return result(reasons={"mde_rel": Reason.NO_USERS})
    if _degenerate_baseline(baseline_rate):
        return result(reasons={"mde_rel": Reason.ZERO_BASELINE})
    from statsmodels.stats.power import NormalIndPower

    h = float(
        NormalIndPower().solve_power(
            effect_size=None, nobs1=n_control, alpha=alpha, power=power, ratio=n_treatment / n_control
        )
    )
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
