"""Lift by segment: per-segment comparisons, Benjamini–Hochberg across segments, and a test of heterogeneity.

Segments are opaque labels ("age 25-34", "new customers"); each has its own sufficient statistics per arm, so the
per-segment comparison is the ordinary fixed-horizon test (`compare_proportions` for conversion, Welch for revenue per
user) on that segment's users only. Two questions follow, each with its own error control:

1. *In which segments does an arm move the metric?* Many segments are many tests: their p-values are adjusted by
   Benjamini–Hochberg (1995), which controls the false discovery rate (the expected share of false "this segment
   moved" claims). The family is one arm's segments (`fdr_family="per_arm"`, the default: disjoint users, so
   independent tests, BH's own setting) or every segment × arm cell of the table (`"all_arms"`: arms of a segment share
   its control; BH's guarantee under such dependence is proven for one-sided tests only, Benjamini & Yekutieli
   2001, Ann. Statist. 29(4), p. 1165-1188).
2. *Does the lift differ between segments?* A significant lift in one segment and not in another is not evidence
   that they differ (the difference of "significant" and "not significant" is not itself significant). The direct
   test is Cochran's Q on the per-segment absolute lifts d_s with inverse-variance weights w_s = 1 / SE_s²:

       d̄ = Σ w_s d_s / Σ w_s,   SE(d̄) = (Σ w_s)^(-1/2),   Q = Σ w_s (d_s − d̄)²,   Q ~ χ²(k − 1) under H0: all equal

   (Cochran 1954, "The combination of estimates from different experiments", Biometrics 10(1), p. 101-129; the
   fixed-effect model and Q of DerSimonian & Laird 1986, Control. Clin. Trials 7, p. 177-188), and the share of the
   variation due to heterogeneity rather than chance

       I² = max(0, (Q − (k − 1)) / Q)

   (Higgins, Thompson, Deeks & Altman 2003, "Measuring inconsistency in meta-analyses", BMJ 327, p. 557-560; derived
   in Higgins & Thompson 2002, Stat. Med. 21, p. 1539-1558). statsmodels' `combine_effects` computes the same.
   Q has low power with few segments; I² is a description, not a test. Both need segments large enough for the
   normal approximation of each d_s (as the per-segment z-test does).

Degenerate segments (an arm without users, zero variance) keep their row, with the comparison's own reasons, and are
left out of the Q test, which lists them in `excluded` with the reason. Nothing is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

# scipy.special's chi-square survival function (what scipy.stats.chi2.sf calls), without loading scipy.stats.
from scipy.special import chdtrc

from experiment.stats.corrections import adjust_p_values
from experiment.stats.means import WelchResult
from experiment.stats.messages import Reason
from experiment.stats.multiarm import Metric, compare_metric
from experiment.stats.proportions import z_quantile
from experiment.stats.results import Interval, ProportionsResult, check_finite, to_plain
from experiment.stats.sufficient import VariantStats

__all__ = [
    "HETEROGENEITY_METHOD",
    "CochranQ",
    "FdrFamily",
    "HeterogeneityResult",
    "SegmentAnalysis",
    "SegmentLift",
    "cochran_q",
    "segment_lift",
]

HETEROGENEITY_METHOD = "cochran_q_inverse_variance"
FdrFamily = Literal["per_arm", "all_arms"]


@dataclass(frozen=True, kw_only=True)
class SegmentLift:
    """One treatment arm versus control within one segment.

    `control_users`/`treatment_users` are users in the segment; `comparison` holds the rates (`control_value`,
    `treatment_value`: a proportion for conversion, currency units per user for revenue), the absolute lift
    `abs_diff` = treatment − control with `abs_ci`, the relative lift and the raw `p_value`. `p_value_bh` is the
    Benjamini–Hochberg adjusted p-value across the FDR family (`SegmentAnalysis.fdr_family`), null with the
    comparison's reason when the raw p-value is undefined.
    """

    segment: str
    arm: str
    control_users: int
    treatment_users: int
    comparison: ProportionsResult | WelchResult
    p_value_bh: float | None = field(default=None, metadata={"nullable": True})
    reasons: Mapping[str, Reason] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_finite(self)

    @property
    def significant_bh(self) -> bool | None:
        """BH-adjusted p < alpha (false discovery rate controlled at alpha); None when undefined."""
        return None if self.p_value_bh is None else self.p_value_bh < self.comparison.alpha


@dataclass(frozen=True, kw_only=True)
class HeterogeneityResult:
    """Cochran's Q test that one arm's absolute lift is the same in every segment (formulas: module docstring).

    Scales: `pooled_abs_diff`, `pooled_abs_ci` and `pooled_abs_se` are the inverse-variance (fixed-effect) mean lift
    in metric units per user; `statistic` is Q (dimensionless), `df` = k − 1 for the k segments in `segments`;
    `i_squared` is a fraction in [0, 1] (0.6 = 60 % of the variation between segments is beyond chance).
    `excluded` maps each segment left out to its reason (no users in an arm, zero variance). With fewer than two
    usable segments every number is null with reason `not_enough_data`.
    """

    method: str = HETEROGENEITY_METHOD
    arm: str
    alpha: float
    segments: tuple[str, ...]
    excluded: Mapping[str, Reason] = field(default_factory=dict)
    pooled_abs_diff: float | None = field(default=None, metadata={"nullable": True})
    pooled_abs_se: float | None = field(default=None, metadata={"nullable": True})
    pooled_abs_ci: Interval | None = field(default=None, metadata={"nullable": True})
    statistic: float | None = field(default=None, metadata={"nullable": True})
    df: int | None = field(default=None, metadata={"nullable": True})
    p_value: float | None = field(default=None, metadata={"nullable": True})
    i_squared: float | None = field(default=None, metadata={"nullable": True})
    reasons: Mapping[str, Reason] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_finite(self)

    @property
    def heterogeneous(self) -> bool | None:
        """Q-test p < alpha: the lift differs between segments; None when the test is undefined."""
        return None if self.p_value is None else self.p_value < self.alpha


@dataclass(frozen=True, kw_only=True)
class SegmentAnalysis:
    """Every segment × treatment arm, BH-adjusted, plus one heterogeneity test per treatment arm.

    `segments` and `arms` (treatment arms, control excluded) are in first-seen order; `lifts` is segment-major.
    """

    metric: Metric
    alpha: float
    control: str
    arms: tuple[str, ...]
    segments: tuple[str, ...]
    fdr_family: FdrFamily
    lifts: tuple[SegmentLift, ...]
    heterogeneity: Mapping[str, HeterogeneityResult]
    correction: str = "fdr_bh"

    def lift(self, segment: str, arm: str) -> SegmentLift:
        """The row of one segment and treatment arm."""
        for row in self.lifts:
            if row.segment == segment and row.arm == arm:
                return row
        raise KeyError(f"no lift for segment {segment!r} and arm {arm!r}; segments are {list(self.segments)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested dict."""
        return to_plain(self)


@dataclass(frozen=True, slots=True)
class CochranQ:
    """Cochran's Q of k estimates with known standard errors.

    `pooled` (fixed-effect, inverse-variance) and `pooled_se` are in the estimates' units; `statistic` is Q,
    `df` = k − 1, `p_value` = P(χ²_{k−1} > Q), `i_squared` a fraction in [0, 1].
    """

    pooled: float
    pooled_se: float
    statistic: float
    df: int
    p_value: float
    i_squared: float


def cochran_q(estimates: Sequence[float], standard_errors: Sequence[float]) -> CochranQ:
    """Cochran's Q of estimates with known standard errors (all > 0); formulas and references: module docstring.

    The p-value is scipy.special.chdtrc(k − 1, Q) (what scipy.stats.chi2.sf computes).
    """
    k = len(estimates)
    if k < 2 or len(standard_errors) != k:
        raise ValueError(
            f"Cochran's Q needs >= 2 estimates with one standard error each, got {k} and {len(standard_errors)}"
        )
    for d, se in zip(estimates, standard_errors, strict=True):
        if not (math.isfinite(d) and math.isfinite(se) and se > 0.0):
            raise ValueError(f"Cochran's Q needs finite estimates and standard errors > 0, got ({d}, {se})")
    weights = [1.0 / se**2 for se in standard_errors]
    total = math.fsum(weights)
    pooled = math.fsum(w * d for w, d in zip(weights, estimates, strict=True)) / total
    q = math.fsum(w * (d - pooled) ** 2 for w, d in zip(weights, estimates, strict=True))
    df = k - 1
    return CochranQ(
        pooled=pooled,
        pooled_se=1.0 / math.sqrt(total),
        statistic=q,
        df=df,
        p_value=1.0 if q <= 0.0 else float(chdtrc(df, q)),
        i_squared=max(0.0, (q - df) / q) if q > 0.0 else 0.0,
    )


def _heterogeneity(arm: str, rows: Sequence[SegmentLift], alpha: float) -> HeterogeneityResult:
    segments: list[str] = []
    estimates: list[float] = []
    errors: list[float] = []
    excluded: dict[str, Reason] = {}
    for row in rows:
        c = row.comparison
        if c.abs_diff is None or c.abs_se is None:
            excluded[row.segment] = c.reasons.get("abs_se", c.reasons.get("abs_diff", Reason.NOT_ENOUGH_DATA))
        else:
            segments.append(row.segment)
            estimates.append(c.abs_diff)
            errors.append(c.abs_se)
    if len(segments) < 2:
        names = ("pooled_abs_diff", "pooled_abs_se", "pooled_abs_ci", "statistic", "df", "p_value", "i_squared")
        return HeterogeneityResult(
            arm=arm,
            alpha=alpha,
            segments=tuple(segments),
            excluded=excluded,
            reasons=dict.fromkeys(names, Reason.NOT_ENOUGH_DATA),
        )
    q = cochran_q(estimates, errors)
    half = z_quantile(alpha) * q.pooled_se
    return HeterogeneityResult(
        arm=arm,
        alpha=alpha,
        segments=tuple(segments),
        excluded=excluded,
        pooled_abs_diff=q.pooled,
        pooled_abs_se=q.pooled_se,
        pooled_abs_ci=Interval(q.pooled - half, q.pooled + half),
        statistic=q.statistic,
        df=q.df,
        p_value=q.p_value,
        i_squared=q.i_squared,
    )


def segment_lift(
    segments: Mapping[str, Mapping[str, VariantStats]],
    *,
    control: str,
    metric: Metric = "conversion",
    alpha: float = 0.05,
    fdr_family: FdrFamily = "per_arm",
) -> SegmentAnalysis:
    """Per segment and treatment arm: users, rates, absolute lift with CI; BH across segments; Cochran's Q per arm.

    `segments` maps segment label → arm → statistics of that segment's users. Treatment arms are every arm named
    anywhere except `control`; an arm missing from a segment counts as empty (its row says `no_users_in_variant`).
    """
    z_quantile(alpha)  # validates alpha
    if fdr_family not in ("per_arm", "all_arms"):
        raise ValueError(f"fdr_family must be 'per_arm' or 'all_arms', got {fdr_family!r}")
    if not segments:
        raise ValueError("segment_lift needs at least one segment, got none")
    names = tuple(segments)
    arms_seen: dict[str, None] = {}
    for by_arm in segments.values():
        arms_seen.update(dict.fromkeys(by_arm))
    if control not in arms_seen:
        raise ValueError(f"control {control!r} has statistics in no segment; arms seen are {list(arms_seen)}")
    arms = tuple(a for a in arms_seen if a != control)
    if not arms:
        raise ValueError(f"segment_lift needs at least one treatment arm besides control {control!r}")

    raw: list[tuple[str, str, VariantStats, VariantStats, ProportionsResult | WelchResult]] = []
    for seg in names:
        c_stats = segments[seg].get(control, VariantStats())
        for arm in arms:
            t_stats = segments[seg].get(arm, VariantStats())
            raw.append((seg, arm, c_stats, t_stats, compare_metric(c_stats, t_stats, metric, alpha=alpha)))

    families: dict[str, dict[str, float | None]] = {}
    for i, (_, arm, _, _, comp) in enumerate(raw):
        family = arm if fdr_family == "per_arm" else ""
        families.setdefault(family, {})[f"{i:06d}"] = comp.p_value
    adjusted: dict[str, float | None] = {}
    for family_p in families.values():
        adjusted.update(adjust_p_values(family_p, method="fdr_bh", alpha=alpha))

    lifts: list[SegmentLift] = []
    for i, (seg, arm, c_stats, t_stats, comp) in enumerate(raw):
        p_bh = adjusted[f"{i:06d}"]
        lifts.append(
            SegmentLift(
                segment=seg,
                arm=arm,
                control_users=c_stats.users,
                treatment_users=t_stats.users,
                comparison=comp,
                p_value_bh=p_bh,
                reasons={} if p_bh is not None else {"p_value_bh": comp.reasons.get("p_value", Reason.NO_P_VALUE)},
            )
        )
    heterogeneity = {arm: _heterogeneity(arm, [r for r in lifts if r.arm == arm], alpha) for arm in arms}
    return SegmentAnalysis(
        metric=metric,
        alpha=alpha,
        control=control,
        arms=arms,
        segments=names,
        fdr_family=fdr_family,
        lifts=tuple(lifts),
        heterogeneity=heterogeneity,
    )
