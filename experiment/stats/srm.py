"""Sample-ratio mismatch (SRM): are users split between variants as configured.

An SRM means the assignment or the logging is broken (bots, a crashing variant, lost events), so every other
number of the experiment is suspect. Run it first, on users per variant, against the configured weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

# scipy.special's chi-square survival function (what scipy.stats.chi2.sf calls), without loading scipy.stats.
from scipy.special import chdtrc

from experiment.stats.messages import Reason
from experiment.stats.results import check_finite

__all__ = ["DEFAULT_SRM_THRESHOLD", "METHOD", "SrmResult", "srm_test"]

METHOD = "chi_square_goodness_of_fit"
DEFAULT_SRM_THRESHOLD = 0.001


@dataclass(frozen=True, kw_only=True)
class SrmResult:
    """Pearson chi-square goodness of fit of users per variant against the configured weights.

    `alarm` is True when `p_value < threshold` (default 0.001: SRM checks run on every refresh, so the
    threshold is strict to keep false alarms rare). `expected` is in users.
    """

    method: str = METHOD
    threshold: float = DEFAULT_SRM_THRESHOLD
    observed: Mapping[str, int]
    expected: Mapping[str, float]
    statistic: float | None = field(default=None, metadata={"nullable": True})
    df: int
    p_value: float | None = field(default=None, metadata={"nullable": True})
    alarm: bool = False
    reasons: Mapping[str, Reason] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_finite(self)


def srm_test(
    observed: Mapping[str, int], weights: Mapping[str, float], *, threshold: float = DEFAULT_SRM_THRESHOLD
) -> SrmResult:
    """Chi-square test of `observed` users per variant against `weights` (same keys, positive, summing to 1).

    Statistic Σ (O − E)² / E with E = N·w, df = k − 1 (Pearson 1900; scipy.stats.chisquare computes the same).
    Zero users in total: p-value null with reason `no_users_in_variant`, no alarm.
    """
    if set(observed) != set(weights):
        raise ValueError(f"SRM needs the same variants in observed {sorted(observed)} and weights {sorted(weights)}")
    if len(weights) < 2:
        raise ValueError(f"SRM needs at least two variants, got {sorted(weights)}")
    for name, w in weights.items():
        if not (math.isfinite(w) and w > 0.0):
            raise ValueError(f"the weight of variant '{name}' must be > 0, got {w}")
    total_w = math.fsum(weights.values())
    if abs(total_w - 1.0) > 1e-6:
        shown = " + ".join(f"{w:g}" for w in weights.values())
        raise ValueError(f"variant weights must sum to 1.0. Got {shown} = {total_w:g}")
    for name, n in observed.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"observed users of variant '{name}' must be an int >= 0, got {n!r}")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"SRM threshold must lie in (0, 1), got {threshold}")

    names = sorted(weights)
    total = sum(observed.values())
    expected = {name: total * weights[name] / total_w for name in names}
    df = len(names) - 1
    if total == 0:
        return SrmResult(
            threshold=threshold,
            observed=dict(observed),
            expected=expected,
            df=df,
            reasons={"statistic": Reason.NO_USERS, "p_value": Reason.NO_USERS},
        )
    statistic = math.fsum((observed[n] - expected[n]) ** 2 / expected[n] for n in names)
    p_value = 1.0 if statistic <= 0.0 else float(chdtrc(df, statistic))
    return SrmResult(
        threshold=threshold,
        observed=dict(observed),
        expected=expected,
        statistic=statistic,
        df=df,
        p_value=p_value,
        alarm=p_value < threshold,
    )
