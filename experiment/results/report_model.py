"""The report model: one typed, frozen value per experiment and as-of time, built once and read by every surface.

Why typed: `abflow report` (md, html, json, csv and the terminal summary), the demo and the dashboard all show the
same numbers, so they read them from one value whose fields a type checker knows, instead of from a dict by string
keys that each surface re-reads with its own defaults. The statistics stay in the analysis' own typed tree
(`ExperimentAnalysis`: the per-arm × metric results, the verdict, the SRM test); the report adds what a reader needs
around them: the parsed definition, the per-variant totals, the sample size against the plan, the lift per day and
the job's word on the model. Two sections appear only when they apply, so a two-arm report is what it always was:
`arms` with two or more model arms (all arms compared together, Holm, P(best); and the verdict names a model arm only
if it beats the others too) and `segments` when asked for (the lift by segment and whether it differs between them).

Reproducibility is a feature: the model contains no "now" (only the requested `as_of` and the data's own times) and
the statistics are exact integer sums, so the same store and the same `as_of` give the same value, and
`Report.to_dict` (the JSON format) gives byte-identical JSON.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

from experiment.core.definition import ExperimentDefinition, Metric
from experiment.core.errors import ExperimentError
from experiment.results.store import ModelHealth, ResultsStore, to_epoch_ms
from experiment.stats.analysis import (
    METHODS,
    AnalysisConfig,
    ArmMetricResult,
    ExperimentAnalysis,
    Method,
    Verdict,
    analyse,
    compare_fixed,
)
from experiment.stats.cuped import CupedResult
from experiment.stats.results import Comparison, Interval, ProportionsResult, to_plain
from experiment.stats.sequential import DEFAULT_TUNING_USERS, compare_sequential
from experiment.stats.srm import SrmResult
from experiment.stats.sufficient import VariantStats

if TYPE_CHECKING:
    from experiment.stats.multiarm import MultiArmResult, ProbBestResult
    from experiment.stats.segments import HeterogeneityResult, SegmentAnalysis, SegmentLift

__all__ = [
    "ALL_SEGMENTS",
    "REPORT_VERSION",
    "ArmComparisonRow",
    "ArmInfo",
    "ArmsSection",
    "HeterogeneityRow",
    "LiftPoint",
    "MetricRow",
    "ModelNotice",
    "Report",
    "SampleSize",
    "SegmentDimension",
    "SegmentRow",
    "SegmentStore",
    "SegmentsSection",
    "VariantRow",
    "build_arms",
    "build_report",
    "build_segments",
    "iso_time",
    "resolve_dimensions",
    "short_versions",
]

#: Bumped when the JSON shape changes incompatibly; readers of saved reports branch on it.
REPORT_VERSION = 1


def iso_time(ms: int | None) -> str | None:
    """Epoch milliseconds as ISO-8601 UTC with a `Z` (e.g. `2026-01-08T23:59:59.999000Z`), or None."""
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class VariantRow:
    """One arm's totals: users, converters and revenue (currency units), whatever the metrics of the experiment."""

    name: str
    users: int
    conversions: int
    conversion_rate: float | None
    revenue: float
    revenue_per_user: float | None

    @classmethod
    def of(cls, name: str, stats: VariantStats) -> VariantRow:
        """The row of one arm's sufficient statistics."""
        return cls(
            name=name,
            users=stats.users,
            conversions=stats.conversions,
            conversion_rate=stats.conversion_rate,
            revenue=stats.revenue_sum,
            revenue_per_user=stats.revenue_per_user,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON entry under `variants`, where the arm's name is the key."""
        return {
            "users": self.users,
            "conversions": self.conversions,
            "conversion_rate": self.conversion_rate,
            "revenue": self.revenue,
            "revenue_per_user": self.revenue_per_user,
        }


@dataclass(frozen=True)
class SampleSize:
    """Users so far against the plan; `planned` is a total over all arms, None without a planned size or MDE."""

    users: Mapping[str, int]
    total: int
    planned: int | None
    planned_source: str | None
    progress: float | None

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON."""
        return {
            "users": dict(self.users),
            "total": self.total,
            "planned": self.planned,
            "planned_source": self.planned_source,
            "progress": self.progress,
        }


@dataclass(frozen=True)
class ModelNotice:
    """The job refuses the experiment's current model: it explains an experiment that gains no users.

    Every surface shows `message` (the same words in the CLI, the dashboard and each format).
    """

    health: ModelHealth
    ts_iso: str
    message: str

    @classmethod
    def of(cls, health: ModelHealth) -> ModelNotice:
        """The notice of one `model_unusable` health record."""
        return cls(health=health, ts_iso=str(iso_time(health.ts)), message=health.headline())

    def to_dict(self) -> dict[str, Any]:
        """The health record's fields plus `ts_iso` and `message`, flat (the JSON's `model_unusable`)."""
        return {**self.health.to_dict(), "ts_iso": self.ts_iso, "message": self.message}


@dataclass(frozen=True)
class LiftPoint:
    """The cumulative relative lift of one arm on the primary metric at the end of one UTC day."""

    date: str
    arm: str
    metric: Metric
    users_control: int
    users_treatment: int
    rel_lift: float | None
    rel_ci: Interval | None
    rel_ci_sequential: Interval | None
    p_value: float | None
    p_value_sequential: float | None

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON (intervals as `[lower, upper]`)."""
        plain: dict[str, Any] = to_plain(self)
        return plain


@dataclass(frozen=True)
class MetricRow:
    """One arm × metric × method, flat: a line of the CSV and of the metrics tables.

    Holm/BH p-values and P(beat) belong to the fixed-horizon row only; `reasons` says why a value is empty.
    """

    arm: str
    metric: str
    role: Literal["primary", "secondary", "guardrail"]
    analysis: Method
    method: str
    control_value: float | None
    treatment_value: float | None
    abs_diff: float | None
    abs_ci_lower: float | None
    abs_ci_upper: float | None
    rel_lift: float | None
    rel_ci_lower: float | None
    rel_ci_upper: float | None
    p_value: float | None
    p_value_holm: float | None
    p_value_bh: float | None
    variance_reduction: float | None
    prob_treatment_beats_control: float | None
    reasons: str

    @classmethod
    def of(cls, result: ArmMetricResult, method: Method) -> MetricRow:
        """The row of one result by one method."""
        c = result.comparison(method)
        fixed = method == "fixed_horizon"
        bayes = result.bayes if fixed else None
        return cls(
            arm=result.arm,
            metric=result.metric,
            role=result.role,
            analysis=method,
            method=c.method,
            control_value=c.control_value,
            treatment_value=c.treatment_value,
            **_estimates(c),
            p_value_holm=result.p_value_holm if fixed else None,
            p_value_bh=result.p_value_bh if fixed else None,
            variance_reduction=c.variance_reduction if isinstance(c, CupedResult) else None,
            prob_treatment_beats_control=None if bayes is None else bayes.prob_treatment_beats_control,
            reasons=";".join(f"{k}={v}" for k, v in sorted(c.reasons.items())),
        )


# -- several model arms -------------------------------------------------------------------------------------------

#: `--segments all` (`build_report(segments=["all"])`): every dimension the store holds for the experiment.
ALL_SEGMENTS = "all"


def _joined(reasons: Mapping[str, Any]) -> str:
    """Reasons as one sortable, CSV-friendly string: `abs_diff=no_users_in_variant;p_value=...`."""
    return ";".join(f"{k}={v}" for k, v in sorted(reasons.items()))


def _estimates(c: Comparison) -> dict[str, float | None]:
    """A comparison's lift, intervals and p-value as the flat, nullable fields every table row of a report carries."""
    return {
        "abs_diff": c.abs_diff,
        "abs_ci_lower": None if c.abs_ci is None else c.abs_ci.lower,
        "abs_ci_upper": None if c.abs_ci is None else c.abs_ci.upper,
        "rel_lift": c.rel_lift,
        "rel_ci_lower": None if c.rel_ci is None else c.rel_ci.lower,
        "rel_ci_upper": None if c.rel_ci is None else c.rel_ci.upper,
        "p_value": c.p_value,
    }


def short_versions(versions: Sequence[str | None], minimum: int = 12) -> dict[str, str]:
    """Each model version cut to the fewest leading characters (at least `minimum`) that still keep all apart."""
    distinct = sorted({v for v in versions if v})
    longest = max((len(v) for v in distinct), default=0)
    length = minimum
    while length < longest and len({v[:length] for v in distinct}) < len(distinct):
        length += 1
    return {v: v[:length] for v in distinct}


@dataclass(frozen=True)
class ArmInfo:
    """One arm of an experiment with several model arms: what it runs (from the definition), its users, P(best).

    `model_version` (the PMML's SHA-256), `pmml_path` and `threshold` are None for the control, which is never
    scored. `prob_best` is P(this arm has the highest conversion rate) under independent Beta(1 + x, 1 + n − x)
    posteriors; None (with the section's `prob_best_reasons`) while an arm has no users.
    """

    name: str
    role: Literal["control", "model"]
    weight: float
    model_version: str | None
    pmml_path: str | None
    threshold: float | None
    users: int
    conversions: int
    conversion_rate: float | None
    prob_best: float | None

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON."""
        plain: dict[str, Any] = to_plain(self)
        return plain


@dataclass(frozen=True)
class ArmComparisonRow:
    """One comparison of the multi-arm family on the primary metric: `arm − baseline`, fixed-horizon.

    `kind` is `vs_control` (baseline = control) or `between_arms` (baseline = the model arm declared earlier, so
    "challenger − champion"). `p_value_holm` is adjusted by Holm across every comparison of the section.
    """

    arm: str
    baseline: str
    kind: Literal["vs_control", "between_arms"]
    metric: str
    method: str
    baseline_value: float | None
    arm_value: float | None
    abs_diff: float | None
    abs_ci_lower: float | None
    abs_ci_upper: float | None
    rel_lift: float | None
    rel_ci_lower: float | None
    rel_ci_upper: float | None
    p_value: float | None
    p_value_holm: float | None
    significant_holm: bool | None
    reasons: str

    @property
    def label(self) -> str:
        """`challenger − champion`: what `abs_diff` measures."""
        return f"{self.arm} − {self.baseline}"

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON."""
        plain: dict[str, Any] = to_plain(self)
        return plain


@dataclass(frozen=True)
class ArmsSection:
    """All arms together (`experiment.stats.multiarm`): shown when an experiment has two or more model arms.

    `comparisons` are each model arm against control, then each pair of model arms, Holm-adjusted as one family
    (`compare_arms` on the primary metric); `srm` is the chi-square across all arms; `arms` carry P(best) on
    conversion. `result` is the statistics' own typed tree (the JSON carries the flat rows instead).
    """

    metric: str
    alpha: float
    control: str
    arms: tuple[ArmInfo, ...]
    comparisons: tuple[ArmComparisonRow, ...]
    srm: SrmResult
    prob_best_method: str
    prob_best_reasons: str
    result: MultiArmResult

    @property
    def model_arms(self) -> tuple[str, ...]:
        """The scored arms, in declared order."""
        return tuple(a.name for a in self.arms if a.role == "model")

    def arm(self, name: str) -> ArmInfo:
        """The row of one arm."""
        for a in self.arms:
            if a.name == name:
                return a
        raise KeyError(f"no arm {name!r}; arms are {[a.name for a in self.arms]}")

    def comparison(self, arm: str, baseline: str) -> ArmComparisonRow:
        """The comparison of two arms, as stored (either orientation is accepted)."""
        for row in self.comparisons:
            if {row.arm, row.baseline} == {arm, baseline}:
                return row
        raise KeyError(f"no comparison of {arm!r} with {baseline!r}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON's `arms`: flat rows, the SRM test and how P(best) was computed."""
        return {
            "metric": self.metric,
            "alpha": self.alpha,
            "control": self.control,
            "correction": "holm",
            "arms": [a.to_dict() for a in self.arms],
            "comparisons": [c.to_dict() for c in self.comparisons],
            "srm": to_plain(self.srm),
            "prob_best_metric": "conversion",
            "prob_best_method": self.prob_best_method,
            "prob_best_reasons": self.prob_best_reasons,
        }


def build_arms(
    definition: ExperimentDefinition, stats: Mapping[str, VariantStats], *, alpha: float = 0.05
) -> ArmsSection | None:
    """The arms section of an experiment with two or more model arms (None otherwise); pure, no store query."""
    if len(definition.treatments) < 2:
        return None
    from experiment.stats.multiarm import compare_arms, prob_best

    weights = {v.name: v.weight for v in definition.variants}
    full = {name: stats.get(name, VariantStats()) for name in weights}
    metric = definition.primary_metric
    result = compare_arms(full, control=definition.control, weights=weights, metric=metric, alpha=alpha)
    best: ProbBestResult = result.prob_best if metric == "conversion" else prob_best(full)
    probabilities = best.prob_best or {}
    arms = []
    for name, weight in weights.items():
        model = definition.model_of(name)
        s = full[name]
        arms.append(
            ArmInfo(
                name=name,
                role="control" if name == definition.control else "model",
                weight=weight,
                model_version=None if model is None else model.model_version,
                pmml_path=None if model is None else model.pmml_path,
                threshold=None if model is None else definition.threshold_of(name),
                users=s.users,
                conversions=s.conversions,
                conversion_rate=s.conversion_rate,
                prob_best=probabilities.get(name),
            )
        )
    rows = []
    for c in result.comparisons:
        r = c.comparison
        rows.append(
            ArmComparisonRow(
                arm=c.arm,
                baseline=c.baseline,
                kind=c.kind,
                metric=metric,
                method=r.method,
                baseline_value=r.control_value,
                arm_value=r.treatment_value,
                **_estimates(r),
                p_value_holm=c.p_value_holm,
                significant_holm=c.significant_holm,
                reasons=_joined({**r.reasons, **c.reasons}),
            )
        )
    return ArmsSection(
        metric=metric,
        alpha=alpha,
        control=definition.control,
        arms=tuple(arms),
        comparisons=tuple(rows),
        srm=result.srm,
        prob_best_method=best.method,
        prob_best_reasons=_joined(best.reasons),
        result=result,
    )


def _diff_text(value: float | None, metric: str) -> str:
    """An absolute difference as a reader says it: percentage points for conversion."""
    if value is None:
        return "n/a"
    return f"{value * 100:+.2f} pp" if metric == "conversion" else f"{value:+.4g}"


def _arms_verdict(verdict: Verdict, arms: ArmsSection) -> Verdict:
    """The verdict names one model arm only if it beats every other model arm too, Holm-adjusted.

    The analysis ships the best arm among those significantly better than control, by point estimate; between
    model arms that is a claim only the between-arm comparisons may make. Without it the verdict keeps running.
    """
    chosen = verdict.arm
    if verdict.decision != "ship" or chosen is None or chosen not in arms.model_arms:
        return verdict
    details: list[str] = []
    unresolved: list[str] = []
    for other in arms.model_arms:
        if other == chosen:
            continue
        row = arms.comparison(chosen, other)
        diff = row.abs_diff if row.arm == chosen or row.abs_diff is None else -row.abs_diff
        p = row.p_value_holm
        details.append(f"{chosen} − {other}: {_diff_text(diff, arms.metric)}, Holm p = {_p_text(p)}")
        if p is None or p >= arms.alpha or diff is None or diff <= 0:
            unresolved.append(other)
    family = f"fixed-horizon, Holm-adjusted across the {len(arms.comparisons)} comparisons of {len(arms.arms)} arms"
    if not unresolved:
        return replace(
            verdict,
            codes=(*verdict.codes, "best_model_arm"),
            explanation=f"{verdict.explanation} It is also significantly better than every other model arm "
            f"({'; '.join(details)}; {family}).",
        )
    others = ", ".join(f"'{o}'" for o in unresolved)
    reached = (
        " The planned sample size is reached: extend the test to tell them apart, or choose on other grounds."
        if verdict.basis == "fixed_horizon"
        else ""
    )
    return Verdict(
        decision="keep_running",
        arm=None,
        basis=verdict.basis,
        codes=("no_winner_among_model_arms",),
        explanation=(
            f"Keep running: '{chosen}' beats control on {arms.metric}, but it is not significantly better than "
            f"{others} ({'; '.join(details)}; {family}), so the data do not yet say which model arm to ship."
            f"{reached}"
        ),
    )


def _p_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2g}"


# -- lift by segment ----------------------------------------------------------------------------------------------


class SegmentStore(Protocol):
    """What the segments section reads from the results store."""

    def segment_dimensions(self, experiment_id: str) -> list[str]:
        """The segment dimensions recorded for the experiment's first exposures."""
        ...

    def segment_stats(
        self, experiment_id: str, dimension: str, as_of: Any = None
    ) -> dict[str, dict[str, VariantStats]]:
        """Segment value → variant → statistics, grouped by the segment of each customer's first exposure."""
        ...


def resolve_dimensions(store: SegmentStore, experiment_id: str, requested: Sequence[str]) -> tuple[str, ...]:
    """The dimensions to report: `requested` in order without repeats, or every recorded one for `all`.

    Raises `ExperimentError` (one line naming the known dimensions) for a dimension the store does not hold.
    """
    names = list(dict.fromkeys(n.strip() for n in requested if n.strip()))
    if not names:
        raise ExperimentError(f"no segment dimension given; name one or more dimensions, or '{ALL_SEGMENTS}'")
    present = list(store.segment_dimensions(experiment_id))
    if ALL_SEGMENTS in names:
        return tuple(present)
    unknown = [n for n in names if n not in present]
    if unknown:
        raise ExperimentError(
            f"unknown segment dimension{'s' if len(unknown) > 1 else ''} {', '.join(repr(n) for n in unknown)} "
            f"for experiment '{experiment_id}'; its dimensions are: {', '.join(present) or 'none recorded yet'} "
            f"(or '{ALL_SEGMENTS}')"
        )
    return tuple(names)


@dataclass(frozen=True)
class SegmentRow:
    """One treatment arm against control within one segment of one dimension (a table row and a forest marker).

    Values as in `MetricRow` (rates for conversion, absolute lift treatment − control with its CI, relative lift);
    `p_value_bh` is Benjamini–Hochberg across the arm's segments of the dimension. `reasons` says why a value is
    empty (an arm without users in the segment, zero variance).
    """

    dimension: str
    segment: str
    arm: str
    metric: str
    method: str
    control_users: int
    treatment_users: int
    control_value: float | None
    treatment_value: float | None
    abs_diff: float | None
    abs_ci_lower: float | None
    abs_ci_upper: float | None
    rel_lift: float | None
    rel_ci_lower: float | None
    rel_ci_upper: float | None
    p_value: float | None
    p_value_bh: float | None
    significant_bh: bool | None
    reasons: str

    @classmethod
    def of(cls, dimension: str, lift: SegmentLift) -> SegmentRow:
        """The row of one `segment_lift` result."""
        c = lift.comparison
        return cls(
            dimension=dimension,
            segment=lift.segment,
            arm=lift.arm,
            metric="conversion" if isinstance(c, ProportionsResult) else "revenue_per_user",
            method=c.method,
            control_users=lift.control_users,
            treatment_users=lift.treatment_users,
            control_value=c.control_value,
            treatment_value=c.treatment_value,
            **_estimates(c),
            p_value_bh=lift.p_value_bh,
            significant_bh=lift.significant_bh,
            reasons=_joined({**c.reasons, **lift.reasons}),
        )

    @property
    def note(self) -> str:
        """Why values are missing, for a reader: `no_users_in_variant`, or `rel_lift, rel_ci: zero_control_mean`."""
        by_reason: dict[str, list[str]] = {}
        for part in filter(None, self.reasons.split(";")):
            key, _, reason = part.partition("=")
            by_reason.setdefault(reason, []).append(key)
        return "; ".join(
            reason if "abs_diff" in keys else f"{', '.join(keys)}: {reason}" for reason, keys in by_reason.items()
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON."""
        plain: dict[str, Any] = to_plain(self)
        return plain


@dataclass(frozen=True)
class HeterogeneityRow:
    """Cochran's Q test of one arm's lift across the segments of one dimension, with its plain-language summary.

    `statistic` is Q, `df` = k − 1 for the k segments used (`segments`), `i_squared` a fraction; `excluded` maps a
    segment left out to its reason; the pooled (fixed-effect) absolute lift is in metric units.
    """

    dimension: str
    arm: str
    metric: str
    method: str
    segments: tuple[str, ...]
    excluded: Mapping[str, str]
    statistic: float | None
    df: int | None
    p_value: float | None
    i_squared: float | None
    pooled_abs_diff: float | None
    pooled_abs_ci_lower: float | None
    pooled_abs_ci_upper: float | None
    heterogeneous: bool | None
    summary: str
    reasons: str

    @classmethod
    def of(cls, dimension: str, metric: str, h: HeterogeneityResult, *, name_arm: bool) -> HeterogeneityRow:
        """The row of one arm's `HeterogeneityResult`; `name_arm` names the arm in the summary (several arms)."""
        return cls(
            dimension=dimension,
            arm=h.arm,
            metric=metric,
            method=h.method,
            segments=h.segments,
            excluded={k: str(v) for k, v in h.excluded.items()},
            statistic=h.statistic,
            df=h.df,
            p_value=h.p_value,
            i_squared=h.i_squared,
            pooled_abs_diff=h.pooled_abs_diff,
            pooled_abs_ci_lower=None if h.pooled_abs_ci is None else h.pooled_abs_ci.lower,
            pooled_abs_ci_upper=None if h.pooled_abs_ci is None else h.pooled_abs_ci.upper,
            heterogeneous=h.heterogeneous,
            summary=_heterogeneity_summary(dimension, h, name_arm=name_arm),
            reasons=_joined(h.reasons),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON."""
        plain: dict[str, Any] = to_plain(self)
        return plain


def _heterogeneity_summary(dimension: str, h: HeterogeneityResult, *, name_arm: bool) -> str:
    """`The lift differs across age_band (Q=12.1, df=3, p=0.0071, I²=75%).` or `No evidence that it differs ...`."""
    lift = f"the lift of '{h.arm}'" if name_arm else "the lift"
    left_out = (
        " Left out: " + ", ".join(f"{segment} ({reason})" for segment, reason in h.excluded.items()) + "."
        if h.excluded
        else ""
    )
    if h.statistic is None or h.p_value is None or h.df is None or h.i_squared is None:
        return (
            f"{lift[0].upper()}{lift[1:]} cannot be tested for differences across {dimension}: fewer than two "
            f"segments have a defined lift.{left_out}"
        )
    numbers = f"Q={h.statistic:.3g}, df={h.df}, p={h.p_value:.2g}, I²={h.i_squared:.0%}"
    if h.heterogeneous:
        return f"{lift[0].upper()}{lift[1:]} differs across {dimension} ({numbers}).{left_out}"
    return f"No evidence that {lift} differs across {dimension} ({numbers}).{left_out}"


@dataclass(frozen=True)
class SegmentDimension:
    """The lift by the segments of one dimension (e.g. `age_band`): rows segment-major, one Q test per arm."""

    dimension: str
    metric: str
    control: str
    segments: tuple[str, ...]
    arms: tuple[str, ...]
    rows: tuple[SegmentRow, ...]
    heterogeneity: tuple[HeterogeneityRow, ...]
    note: str | None = None

    def row(self, segment: str, arm: str) -> SegmentRow:
        """The row of one segment and treatment arm."""
        for r in self.rows:
            if r.segment == segment and r.arm == arm:
                return r
        raise KeyError(f"no row for segment {segment!r} and arm {arm!r} in {self.dimension}")

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON."""
        return {
            "dimension": self.dimension,
            "metric": self.metric,
            "control": self.control,
            "segments": list(self.segments),
            "arms": list(self.arms),
            "rows": [r.to_dict() for r in self.rows],
            "heterogeneity": [h.to_dict() for h in self.heterogeneity],
            "note": self.note,
        }


@dataclass(frozen=True)
class SegmentsSection:
    """Lift by segment for the requested dimensions (`abflow report --segments`), on the primary metric."""

    metric: str
    alpha: float
    control: str
    fdr_family: str
    dimensions: tuple[SegmentDimension, ...]

    def dimension(self, name: str) -> SegmentDimension:
        """One dimension's breakdown."""
        for d in self.dimensions:
            if d.dimension == name:
                return d
        raise KeyError(f"no segment dimension {name!r}; shown are {[d.dimension for d in self.dimensions]}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON's `segments`."""
        from experiment.stats.segments import HETEROGENEITY_METHOD

        return {
            "metric": self.metric,
            "alpha": self.alpha,
            "control": self.control,
            "correction": "fdr_bh",
            "fdr_family": self.fdr_family,
            "heterogeneity_method": HETEROGENEITY_METHOD,
            "dimensions": [d.to_dict() for d in self.dimensions],
        }


def segment_dimension(
    definition: ExperimentDefinition,
    dimension: str,
    cells: Mapping[str, Mapping[str, VariantStats]],
    *,
    alpha: float = 0.05,
) -> SegmentDimension:
    """One dimension's section from the store's `segment_stats` (segment → variant → statistics); pure.

    Segments keep the store's order (a built-in dimension's natural order, age bands upwards; "missing" and
    "unknown" last); every declared arm is filled in each segment (an arm nobody reached there shows its reason).
    """
    from experiment.stats.segments import segment_lift

    names = [v.name for v in definition.variants]
    metric = definition.primary_metric
    labels = list(cells)
    if not labels:
        return SegmentDimension(
            dimension=dimension,
            metric=metric,
            control=definition.control,
            segments=(),
            arms=definition.treatments,
            rows=(),
            heterogeneity=(),
            note=f"no first exposure with a {dimension} recorded yet",
        )
    full = {label: {name: cells[label].get(name, VariantStats()) for name in names} for label in labels}
    analysis: SegmentAnalysis = segment_lift(full, control=definition.control, metric=metric, alpha=alpha)
    several = len(analysis.arms) > 1
    return SegmentDimension(
        dimension=dimension,
        metric=metric,
        control=definition.control,
        segments=analysis.segments,
        arms=analysis.arms,
        rows=tuple(SegmentRow.of(dimension, lift) for lift in analysis.lifts),
        heterogeneity=tuple(
            HeterogeneityRow.of(dimension, metric, analysis.heterogeneity[arm], name_arm=several)
            for arm in analysis.arms
        ),
    )


def build_segments(
    store: SegmentStore,
    definition: ExperimentDefinition,
    dimensions: Sequence[str],
    *,
    as_of: Any = None,
    alpha: float = 0.05,
) -> SegmentsSection:
    """The segments section: one `segment_stats` query per dimension (already resolved, see `resolve_dimensions`)."""
    source = store
    as_of_ms = to_epoch_ms(as_of)
    return SegmentsSection(
        metric=definition.primary_metric,
        alpha=alpha,
        control=definition.control,
        fdr_family="per_arm",
        dimensions=tuple(
            segment_dimension(definition, name, source.segment_stats(definition.id, name, as_of=as_of_ms), alpha=alpha)
            for name in dimensions
        ),
    )


@dataclass(frozen=True)
class Report:
    """Everything a report shows about one experiment as of a time (`as_of` None = all data)."""

    experiment: ExperimentDefinition
    model_unusable: ModelNotice | None
    as_of: int | None
    as_of_iso: str | None
    data_through: str | None
    sample_size: SampleSize
    variants: tuple[VariantRow, ...]
    analysis: ExperimentAnalysis
    lift_over_time: tuple[LiftPoint, ...]
    report_version: int = REPORT_VERSION
    #: Present when the experiment has two or more model arms (absent from the JSON otherwise).
    arms: ArmsSection | None = None
    #: Present when segments were asked for (`abflow report --segments`; absent from the JSON otherwise).
    segments: SegmentsSection | None = None

    @property
    def verdict(self) -> Verdict:
        """The decision (ship, don't ship, keep running) and why."""
        return self.analysis.verdict

    @property
    def srm(self) -> SrmResult:
        """The sample-ratio-mismatch test: read it first, it can void every other number."""
        return self.analysis.srm

    @property
    def results(self) -> tuple[ArmMetricResult, ...]:
        """Each treatment arm against the control on each metric, by every method."""
        return self.analysis.results

    @property
    def days(self) -> tuple[str, ...]:
        """The UTC days (ISO dates) from the first exposure to the last day with data, or to the as-of day.

        Read off `lift_over_time`, which has one point per arm and day.
        """
        return tuple(dict.fromkeys(p.date for p in self.lift_over_time))

    @property
    def metric_rows(self) -> tuple[MetricRow, ...]:
        """Flat rows: per result, one for each of `METHODS` (the CSV and the tables)."""
        return tuple(MetricRow.of(r, method) for r in self.analysis.results for method in METHODS)

    def to_dict(self) -> dict[str, Any]:
        """The JSON format's tree: the keys and values saved reports and scripts rely on."""
        analysis: dict[str, Any] = self.analysis.to_dict()
        tree: dict[str, Any] = {
            "report_version": self.report_version,
            "experiment": self.experiment.to_dict(),
            "model_unusable": None if self.model_unusable is None else self.model_unusable.to_dict(),
            "as_of": self.as_of,
            "as_of_iso": self.as_of_iso,
            "data_through": self.data_through,
            "sample_size": self.sample_size.to_dict(),
            "variants": {v.name: v.to_dict() for v in self.variants},
            "analysis": analysis,
            "verdict": analysis["verdict"],
            "lift_over_time": [p.to_dict() for p in self.lift_over_time],
        }
        # Added only when present, so a two-arm report without segments keeps the JSON it always had.
        if self.arms is not None:
            tree["arms"] = self.arms.to_dict()
        if self.segments is not None:
            tree["segments"] = self.segments.to_dict()
        return tree


def build_report(
    store: ResultsStore,
    experiment_id: str,
    *,
    as_of: Any = None,
    alpha: float = 0.05,
    segments: Sequence[str] | None = None,
) -> Report:
    """The report of one experiment as of a time (None = all data); runs the analysis once.

    With two or more model arms it adds the arms section (no extra query: the per-variant statistics suffice) and
    names a model arm in the verdict only if it beats every other model arm too. `segments` (dimension names, or
    `["all"]`) adds the segments section, one store query per dimension; without it no segment query runs. An
    unknown dimension raises `ExperimentError` before any statistic is computed.
    """
    definition = store.experiment(experiment_id)
    if definition is None:
        raise ExperimentError(
            f"experiment '{experiment_id}' is not in the results store {store.path}; "
            f"known experiments: {store.experiment_ids()}"
        )
    dimensions = None if segments is None else resolve_dimensions(store, experiment_id, segments)
    as_of_ms = to_epoch_ms(as_of)
    config = AnalysisConfig.from_definition(definition, alpha=alpha)
    stats = store.variant_stats(experiment_id, as_of=as_of_ms)
    daily = store.daily_stats(experiment_id, as_of=as_of_ms)
    analysis = analyse(config, stats, [snapshot for _, snapshot in daily])
    arms = build_arms(definition, stats, alpha=alpha)
    if arms is not None:
        analysis = replace(analysis, verdict=_arms_verdict(analysis.verdict, arms))
    target = analysis.planned_sample_size
    # Only the models this version's arms run count (a replaced model's problem is history), and only each one's
    # newest record (a repaired model, reported `model_ready` later, clears the notice). One unusable model arm is
    # enough: the job then assigns nobody to the experiment.
    versions = dict.fromkeys(ref.model_version for ref in definition.models().values())
    health = next(
        (found for version in versions if (found := store.unusable_model(definition.id, version)) is not None), None
    )
    return Report(
        experiment=definition,
        model_unusable=None if health is None else ModelNotice.of(health),
        as_of=as_of_ms,
        as_of_iso=iso_time(as_of_ms),
        data_through=iso_time(store.last_event_ts(experiment_id, as_of=as_of_ms)),
        sample_size=SampleSize(
            users=analysis.users,
            total=analysis.total_users,
            planned=target,
            planned_source=analysis.target_source,
            progress=None if not target else analysis.total_users / target,
        ),
        variants=tuple(VariantRow.of(name, s) for name, s in stats.items()),
        analysis=analysis,
        lift_over_time=_lift_over_time(config, daily, config.tuning_users or target or DEFAULT_TUNING_USERS),
        arms=arms,
        segments=None
        if dimensions is None
        else build_segments(store, definition, dimensions, as_of=as_of_ms, alpha=alpha),
    )


def _lift_over_time(
    config: AnalysisConfig, daily: Sequence[tuple[dt.date, Mapping[str, VariantStats]]], tuning_users: int
) -> tuple[LiftPoint, ...]:
    """Per treatment arm and day: the fixed-horizon and the always-valid lift of the primary metric so far."""
    metric, alpha = config.primary_metric, config.alpha
    points: list[LiftPoint] = []
    for arm in config.treatments:
        snapshots: list[tuple[VariantStats, VariantStats]] = []
        for day, snapshot in daily:
            pair = (snapshot.get(config.control, VariantStats()), snapshot.get(arm, VariantStats()))
            snapshots.append(pair)
            fixed = compare_fixed(*pair, metric, alpha)
            seq = compare_sequential(snapshots, alpha=alpha, tuning_users=tuning_users, metric=metric)
            points.append(
                LiftPoint(
                    date=day.isoformat(),
                    arm=arm,
                    metric=metric,
                    users_control=pair[0].users,
                    users_treatment=pair[1].users,
                    rel_lift=fixed.rel_lift,
                    rel_ci=fixed.rel_ci,
                    rel_ci_sequential=seq.rel_ci,
                    p_value=fixed.p_value,
                    p_value_sequential=seq.p_value,
                )
            )
    return tuple(points)
