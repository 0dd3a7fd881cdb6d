"""The report model: one typed, frozen value per experiment and as-of time, built once and read by every surface.

Why typed: `abflow report` (md, html, json, csv and the terminal summary), the demo and the dashboard all show the
same numbers, so they read them from one value whose fields a type checker knows, instead of from a dict by string
keys that each surface re-reads with its own defaults. The statistics stay in the analysis' own typed tree
(`ExperimentAnalysis`: the per-arm × metric results, the verdict, the SRM test); the report adds what a reader needs
around them: the parsed definition, the per-variant totals, the sample size against the plan, the lift per day and
the job's word on the model.

Reproducibility is a feature: the model contains no "now" (only the requested `as_of` and the data's own times) and
the statistics are exact integer sums, so the same store and the same `as_of` give the same value, and
`Report.to_dict` (the JSON format) gives byte-identical JSON.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

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
from experiment.stats.results import Interval, to_plain
from experiment.stats.sequential import DEFAULT_TUNING_USERS, compare_sequential
from experiment.stats.srm import SrmResult
from experiment.stats.sufficient import VariantStats

__all__ = [
    "REPORT_VERSION",
    "LiftPoint",
    "MetricRow",
    "ModelNotice",
    "Report",
    "SampleSize",
    "VariantRow",
    "build_report",
    "iso_time",
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
            abs_diff=c.abs_diff,
            abs_ci_lower=None if c.abs_ci is None else c.abs_ci.lower,
            abs_ci_upper=None if c.abs_ci is None else c.abs_ci.upper,
            rel_lift=c.rel_lift,
            rel_ci_lower=None if c.rel_ci is None else c.rel_ci.lower,
            rel_ci_upper=None if c.rel_ci is None else c.rel_ci.upper,
            p_value=c.p_value,
            p_value_holm=result.p_value_holm if fixed else None,
            p_value_bh=result.p_value_bh if fixed else None,
            variance_reduction=c.variance_reduction if isinstance(c, CupedResult) else None,
            prob_treatment_beats_control=None if bayes is None else bayes.prob_treatment_beats_control,
            reasons=";".join(f"{k}={v}" for k, v in sorted(c.reasons.items())),
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
        return {
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


def build_report(store: ResultsStore, experiment_id: str, *, as_of: Any = None, alpha: float = 0.05) -> Report:
    """The report of one experiment as of a time (None = all data); runs the analysis once."""
    definition = store.experiment(experiment_id)
    if definition is None:
        raise ExperimentError(
            f"experiment '{experiment_id}' is not in the results store {store.path}; "
            f"known experiments: {store.experiment_ids()}"
        )
    as_of_ms = to_epoch_ms(as_of)
    config = AnalysisConfig.from_definition(definition, alpha=alpha)
    stats = store.variant_stats(experiment_id, as_of=as_of_ms)
    daily = store.daily_stats(experiment_id, as_of=as_of_ms)
    analysis = analyse(config, stats, [snapshot for _, snapshot in daily])
    target = analysis.planned_sample_size
    # Only the current model version counts (a replaced model's problem is history), and only its newest record
    # (a repaired model, reported `model_ready` later, clears the notice).
    health = store.unusable_model(definition.id, definition.model.model_version)
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
