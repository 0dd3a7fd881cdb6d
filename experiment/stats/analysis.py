"""Analyse one experiment: each treatment arm against control, every metric, every method, a verdict.

This is the single entry point the reports and the dashboard call. It is pure: sufficient statistics in (a
snapshot and, optionally, the cumulative daily history), a typed result tree out.

Verdict rule (documented in docs/statistics.md):
1. A sample-ratio mismatch (p < 0.001) makes every number suspect: **don't ship**, investigate.
2. Before the planned sample size is reached, decisions use the always-valid (sequential) p-values, since the
   analyst is peeking; at or after it, the fixed-horizon p-values. Primary-metric p-values are Holm-adjusted
   across the treatment arms; guardrails are Holm-adjusted across guardrails × arms.
3. An arm whose primary metric is significantly better and no guardrail significantly worse → **ship** (the
   best such arm by relative lift).
4. Otherwise, an arm significantly worse on the primary metric, or the planned sample size reached without a
   significant improvement → **don't ship**.
5. Otherwise → **keep running** (not enough power yet).
The planned sample size is the definition's `planned_sample_size` (total users across arms) or, without it,
the total needed to detect the definition's `mde` (relative lift) with 80 % power at the observed control rate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from experiment.core.definition import ExperimentDefinition, Metric
from experiment.stats.bayes import BayesResult, compare_bayes
from experiment.stats.corrections import adjust_p_values
from experiment.stats.cuped import CupedResult, compare_cuped
from experiment.stats.means import compare_revenue
from experiment.stats.messages import Reason
from experiment.stats.power import PowerResult, mde_proportions, power_proportions, sample_size_proportions
from experiment.stats.proportions import compare_proportions
from experiment.stats.results import Comparison, to_plain
from experiment.stats.sequential import DEFAULT_TUNING_USERS, SequentialResult, compare_sequential
from experiment.stats.srm import SrmResult, srm_test
from experiment.stats.sufficient import VariantStats

__all__ = [
    "METHODS",
    "METRICS",
    "AnalysisConfig",
    "ArmMetricResult",
    "ExperimentAnalysis",
    "Method",
    "Verdict",
    "analyse",
    "compare_fixed",
]

METRICS: tuple[Metric, ...] = ("conversion", "revenue_per_user")
Decision = Literal["ship", "dont_ship", "keep_running"]
#: The three ways every arm × metric is compared, in the order the reports list them.
Method = Literal["fixed_horizon", "sequential", "cuped"]
METHODS: tuple[Method, ...] = ("fixed_horizon", "sequential", "cuped")

METHOD_NOTES = {
    "conversion.fixed_horizon": (
        "Two-proportion z-test, unpooled (Wald) SE; CI on the absolute difference; relative lift CI by the "
        "delta method; pooled two-proportion z p-value also reported. Valid once, at the planned size."
    ),
    "revenue_per_user.fixed_horizon": (
        "Welch t-test on revenue per user (unequal variances, Welch–Satterthwaite df); relative lift CI by "
        "the delta method."
    ),
    "sequential": (
        "Always-valid mSPRT with a normal mixture (Johari et al. 2017/2022); p-values and CIs stay valid "
        "under continuous monitoring; wider than fixed-horizon."
    ),
    "cuped": (
        "CUPED (Deng et al. 2013) with the pre-period purchase count as covariate, theta pooled over both "
        "arms; same estimand, lower variance (the reported variance_reduction)."
    ),
    "bayes": "Beta–Binomial, uniform Beta(1,1) priors: exact P(treatment beats control) and expected loss.",
    "srm": "Chi-square goodness of fit of users per variant against the configured weights; alarm: p < 0.001",
    "corrections": (
        "Holm (family-wise error) across arms for the primary metric and across all arms × metrics; "
        "Benjamini–Hochberg (false discovery rate) across all arms × metrics."
    ),
    "power": "z-test power on Cohen's h (arcsine transform), as statsmodels NormalIndPower, 80 % power.",
}


@dataclass(frozen=True)
class AnalysisConfig:
    """What the analysis needs from an experiment definition; `control` names the control arm (never its position)."""

    experiment_id: str
    variants: tuple[tuple[str, float], ...]
    control: str
    primary_metric: Metric = "conversion"
    secondary_metrics: tuple[Metric, ...] = ()
    guardrail_metrics: tuple[Metric, ...] = ()
    planned_sample_size: int | None = None
    mde: float | None = None
    alpha: float = 0.05
    power: float = 0.8
    tuning_users: int | None = None

    def __post_init__(self) -> None:
        if len(self.variants) < 2:
            raise ValueError(f"experiment '{self.experiment_id}' needs a control and at least one treatment")
        names = [name for name, _ in self.variants]
        if self.control not in names:
            raise ValueError(
                f"experiment '{self.experiment_id}': control must name one of the variants ({', '.join(names)}); "
                f"got {self.control!r}"
            )
        for metric in self.metrics:
            if metric not in METRICS:
                raise ValueError(
                    f"experiment '{self.experiment_id}' uses metric '{metric}'; supported metrics are {list(METRICS)}"
                )
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must lie in (0, 1), got {self.alpha}")

    @property
    def treatments(self) -> tuple[str, ...]:
        """The treatment arms' names: every variant but the named control, in declared order."""
        return tuple(name for name, _ in self.variants if name != self.control)

    @property
    def metrics(self) -> tuple[Metric, ...]:
        """Primary, secondary and guardrail metrics, without repeats, in that order."""
        seen: list[Metric] = []
        for m in (self.primary_metric, *self.secondary_metrics, *self.guardrail_metrics):
            if m not in seen:
                seen.append(m)
        return tuple(seen)

    @classmethod
    def from_definition(cls, defn: ExperimentDefinition, *, alpha: float = 0.05) -> AnalysisConfig:
        """Build from a parsed experiment definition.

        It takes the typed definition, not its JSON, so that defaults (and the control of a definition written
        before `control` existed) are decided once, by the definition's parser, and never again here.
        """
        return cls(
            experiment_id=defn.id,
            variants=tuple((v.name, v.weight) for v in defn.variants),
            control=defn.control,
            primary_metric=defn.primary_metric,
            secondary_metrics=defn.secondary_metrics,
            guardrail_metrics=defn.guardrail_metrics,
            planned_sample_size=defn.planned_sample_size,
            mde=defn.mde,
            alpha=alpha,
        )


@dataclass(frozen=True)
class ArmMetricResult:
    """One treatment arm versus control on one metric, by every method."""

    arm: str
    metric: str
    role: Literal["primary", "secondary", "guardrail"]
    fixed_horizon: Comparison
    sequential: SequentialResult
    cuped: CupedResult
    bayes: BayesResult | None
    p_value_holm: float | None = None
    p_value_bh: float | None = None
    reasons: dict[str, Reason] = field(default_factory=dict)

    def comparison(self, method: Method) -> Comparison:
        """The comparison by one of `METHODS`: what the tables loop over, one row per method."""
        by_method: dict[str, Comparison] = {
            "fixed_horizon": self.fixed_horizon,
            "sequential": self.sequential,
            "cuped": self.cuped,
        }
        return by_method[method]


@dataclass(frozen=True)
class Verdict:
    """The plain-language decision and the machine-readable codes behind it."""

    decision: Decision
    arm: str | None
    basis: Literal["fixed_horizon", "sequential"]
    explanation: str
    codes: tuple[str, ...]


@dataclass(frozen=True)
class ExperimentAnalysis:
    """The full result tree of one experiment."""

    experiment_id: str
    alpha: float
    control: str
    treatments: tuple[str, ...]
    users: dict[str, int]
    total_users: int
    planned_sample_size: int | None
    target_source: str | None
    srm: SrmResult
    power: PowerResult | None
    achievable_mde: PowerResult | None
    results: tuple[ArmMetricResult, ...]
    verdict: Verdict
    methods: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested dict."""
        return to_plain(self)

    def result(self, arm: str, metric: str) -> ArmMetricResult:
        """The result of one arm on one metric."""
        for r in self.results:
            if r.arm == arm and r.metric == metric:
                return r
        raise KeyError(f"no result for arm '{arm}' and metric '{metric}'")


def compare_fixed(control: VariantStats, treatment: VariantStats, metric: Metric, alpha: float = 0.05) -> Comparison:
    """The fixed-horizon test of a metric: two proportions for conversion, Welch's t for revenue per user."""
    if metric == "conversion":
        return compare_proportions(control, treatment, alpha=alpha)
    return compare_revenue(control, treatment, alpha=alpha)


def _target(config: AnalysisConfig, stats: Mapping[str, VariantStats]) -> tuple[int | None, str | None]:
    if config.planned_sample_size:
        return int(config.planned_sample_size), "planned_sample_size"
    baseline = stats[config.control].conversion_rate
    if config.mde and baseline:
        ratio = 1.0
        needed = sample_size_proportions(baseline, config.mde, alpha=config.alpha, power=config.power, ratio=ratio)
        if needed.n_control is not None:
            return needed.n_control * len(config.variants), "mde_at_observed_control_rate"
    return None, None


def analyse(
    config: AnalysisConfig,
    stats: Mapping[str, VariantStats],
    history: Sequence[Mapping[str, VariantStats]] = (),
) -> ExperimentAnalysis:
    """Analyse a snapshot `stats` (variant → statistics).

    `history` (cumulative daily snapshots, oldest first) feeds the sequential running minimum. Variants
    missing from `stats` count as empty.
    """
    alpha = config.alpha
    names = [name for name, _ in config.variants]
    stats = {name: stats.get(name, VariantStats()) for name in names}
    weights = {name: w for name, w in config.variants}
    srm = srm_test({n: stats[n].users for n in names}, weights)
    total = sum(s.users for s in stats.values())
    target, target_source = _target(config, stats)
    tuning = config.tuning_users or target or DEFAULT_TUNING_USERS
    control = stats[config.control]

    raw: list[ArmMetricResult] = []
    for arm in config.treatments:
        treatment = stats[arm]
        for metric in config.metrics:
            role: Literal["primary", "secondary", "guardrail"] = (
                "primary"
                if metric == config.primary_metric
                else "guardrail"
                if metric in config.guardrail_metrics
                else "secondary"
            )
            snapshots = [(h.get(config.control, VariantStats()), h.get(arm, VariantStats())) for h in history]
            if not snapshots or snapshots[-1] != (control, treatment):
                snapshots.append((control, treatment))
            raw.append(
                ArmMetricResult(
                    arm=arm,
                    metric=metric,
                    role=role,
                    fixed_horizon=compare_fixed(control, treatment, metric, alpha),
                    sequential=compare_sequential(snapshots, alpha=alpha, tuning_users=tuning, metric=metric),
                    cuped=compare_cuped(control, treatment, metric=metric, alpha=alpha),
                    bayes=compare_bayes(control, treatment) if metric == "conversion" else None,
                )
            )
    family = {f"{r.arm}/{r.metric}": r.fixed_horizon.p_value for r in raw}
    holm = adjust_p_values(family, method="holm", alpha=alpha)
    bh = adjust_p_values(family, method="fdr_bh", alpha=alpha)
    results = tuple(
        ArmMetricResult(
            arm=r.arm,
            metric=r.metric,
            role=r.role,
            fixed_horizon=r.fixed_horizon,
            sequential=r.sequential,
            cuped=r.cuped,
            bayes=r.bayes,
            p_value_holm=holm[f"{r.arm}/{r.metric}"],
            p_value_bh=bh[f"{r.arm}/{r.metric}"],
            reasons={
                k: Reason.NO_P_VALUE for k in ("p_value_holm", "p_value_bh") if holm[f"{r.arm}/{r.metric}"] is None
            },
        )
        for r in raw
    )

    baseline = control.conversion_rate
    power = achievable = None
    if baseline is not None and config.mde:
        n_t = min(stats[a].users for a in config.treatments)
        power = power_proportions(baseline, config.mde, control.users, max(n_t, 0), alpha=alpha)
    if baseline is not None:
        achievable = (
            mde_proportions(
                baseline, control.users, max(1, min(stats[a].users for a in config.treatments)), alpha=alpha
            )
            if control.users
            else None
        )

    verdict = _verdict(config, results, srm, total, target)
    return ExperimentAnalysis(
        experiment_id=config.experiment_id,
        alpha=alpha,
        control=config.control,
        treatments=config.treatments,
        users={n: stats[n].users for n in names},
        total_users=total,
        planned_sample_size=target,
        target_source=target_source,
        srm=srm,
        power=power,
        achievable_mde=achievable,
        results=results,
        verdict=verdict,
        methods=dict(METHOD_NOTES),
    )


def _verdict(
    config: AnalysisConfig, results: Sequence[ArmMetricResult], srm: SrmResult, total: int, target: int | None
) -> Verdict:
    alpha = config.alpha
    reached = target is not None and total >= target
    basis: Literal["fixed_horizon", "sequential"] = "fixed_horizon" if reached else "sequential"
    if srm.alarm:
        return Verdict(
            decision="dont_ship",
            arm=None,
            basis=basis,
            codes=("sample_ratio_mismatch",),
            explanation=(
                "Don't ship: users are not split as configured "
                f"(SRM p = {srm.p_value:.2g} < {srm.threshold}). "
                "The assignment or the logging is broken, so no result can be trusted; investigate first."
            ),
        )

    def comparison(r: ArmMetricResult) -> Comparison:
        return r.fixed_horizon if basis == "fixed_horizon" else r.sequential

    primary = [r for r in results if r.role == "primary"]
    primary_p = adjust_p_values({r.arm: comparison(r).p_value for r in primary}, method="holm", alpha=alpha)
    guard = [r for r in results if r.role == "guardrail"]
    guard_p = adjust_p_values({f"{r.arm}/{r.metric}": comparison(r).p_value for r in guard}, method="holm", alpha=alpha)
    harmed = {
        r.arm
        for r in guard
        if (p := guard_p[f"{r.arm}/{r.metric}"]) is not None and p < alpha and (comparison(r).abs_diff or 0) < 0
    }
    better: list[ArmMetricResult] = []
    worse: list[ArmMetricResult] = []
    for r in primary:
        p = primary_p[r.arm]
        diff = comparison(r).abs_diff
        if p is None or diff is None or p >= alpha:
            continue
        (better if diff > 0 else worse).append(r)
    winners = [r for r in better if r.arm not in harmed]
    label = "fixed-horizon" if basis == "fixed_horizon" else "always-valid (sequential)"
    if winners:
        best = max(winners, key=lambda r: comparison(r).rel_lift or comparison(r).abs_diff or 0.0)
        c = comparison(best)
        lift = f"{c.rel_lift:+.2%}" if c.rel_lift is not None else f"{c.abs_diff:+.4g}"
        return Verdict(
            decision="ship",
            arm=best.arm,
            basis=basis,
            codes=("significant_improvement",),
            explanation=(
                f"Ship '{best.arm}': {config.primary_metric} changes by {lift} versus control "
                f"({label} p = {primary_p[best.arm]:.2g} < {alpha}, Holm-adjusted across arms) "
                "and no guardrail "
                "is significantly worse."
            ),
        )
    codes: list[str] = []
    if better and not winners:
        codes.append("guardrail_regression")
    if worse:
        codes.append("significant_regression")
    if worse or (better and not winners):
        arms = ", ".join(sorted({r.arm for r in worse} | {r.arm for r in better}))
        return Verdict(
            decision="dont_ship",
            arm=None,
            basis=basis,
            codes=tuple(codes),
            explanation=(
                f"Don't ship: {arms} is significantly worse on {config.primary_metric} or on a guardrail "
                f"({label} test)."
            ),
        )
    if reached:
        return Verdict(
            decision="dont_ship",
            arm=None,
            basis=basis,
            codes=("no_significant_effect_at_planned_size",),
            explanation=(
                f"Don't ship: the planned sample size ({target} users) is reached and no arm shows "
                f"a significant change in {config.primary_metric}; an effect as large as planned for "
                "would likely have shown."
            ),
        )
    if target is None:
        return Verdict(
            decision="keep_running",
            arm=None,
            basis=basis,
            codes=("no_plan",),
            explanation=(
                "Keep running: no significant effect yet, and without a planned sample size or MDE "
                "abflow cannot "
                "tell when the test has enough power. Set planned_sample_size or mde in the definition."
            ),
        )
    return Verdict(
        decision="keep_running",
        arm=None,
        basis=basis,
        codes=("not_enough_power",),
        explanation=(
            f"Keep running, not enough power yet: {total} of {target} planned users "
            f"({total / target:.0%}); no significant effect so far (always-valid test)."
        ),
    )
