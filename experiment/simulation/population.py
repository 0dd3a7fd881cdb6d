"""The simulated customers: drawn from the ground truth, assigned and decided exactly as the job decides.

How the outcomes follow the truth without knowing the job's decisions: the decision is a pure function of the
definition and the features, so the simulator makes it with the job's own rules. It assigns every customer with
`experiment.core.assignment.assign` and decides with `experiment.core.decisions.decide_many` (the array form of
the job's `decide`: the control is never shown, a model arm is shown when its own model's score >= its own
threshold), scoring with each arm's verified PMML scorer in batch mode (proven equal to pypmml within 1e-9, as the
job's). A customer then converts with probability ``p1`` when shown and ``p0`` otherwise
(`data.ground_truth.true_conversion_probs`); a conversion is one purchase whose revenue is drawn from
`data.ground_truth.sample_revenue`. The true lift comes from the ground-truth probabilities, not from the draws: of
each model arm's policy versus the control (nobody shown) and versus each other model arm (challenger vs champion).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from experiment.core import events
from experiment.core.assignment import assign
from experiment.core.decisions import decide_many
from experiment.core.errors import ConfigError, ExperimentError

if TYPE_CHECKING:
    import numpy.typing as npt
    import pandas as pd

    from experiment.core.view import ExperimentView

__all__ = [
    "BatchScorer",
    "Population",
    "TrueLift",
    "build_population",
    "customer_ids",
    "segment_labels",
    "true_lift",
    "true_lifts",
    "true_segment_lifts",
]

_CATEGORY = re.compile(r"^cat([1-9]\d*)$")


class BatchScorer(Protocol):
    """What the simulator needs from a model: P(show) per row, columns in `feature_names` order."""

    feature_names: tuple[str, ...]

    def score_batch(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:  # pragma: no cover - protocol
        """P(class = 1) per row."""
        ...


def customer_ids(n: int, seed: int) -> list[str]:
    """Customer id strings ``c<seed>-<i>``: distinct per seed, so two simulations never share a customer."""
    return [f"c{seed}-{i:06d}" for i in range(1, n + 1)]


def _session_features(view: ExperimentView) -> tuple[str, ...]:
    """The features the simulated sessions carry: ``age, man, woman, cat1..catK``.

    K is the largest category any arm's model uses; each model picks its own (a challenger may take a subset).
    Anything else is refused.
    """
    names = {name for spec in view.arms for name in spec.features}
    cats = [int(match.group(1)) for name in names if (match := _CATEGORY.match(name))]
    expected = events.default_feature_names(max(cats)) if cats else ()
    if not expected or names - set(expected):
        raise ConfigError(
            "The simulator draws customers from the ground truth, whose features are age, man, woman, cat1..catK; "
            f"the arms' models use {sorted(names)[:6]}... ({len(names)} names)."
        )
    return tuple(expected)


def _scorers_by_arm(view: ExperimentView, scorers: BatchScorer | Mapping[str, BatchScorer]) -> dict[str, BatchScorer]:
    """Each model arm's scorer: `scorers` by arm name, or one scorer when every arm has the same model."""
    if isinstance(scorers, Mapping):
        missing = [spec.variant for spec in view.arms if spec.variant not in scorers]
        if missing:
            raise ConfigError(f"No scorer for the model arm(s) {', '.join(missing)} of experiment '{view.id}'.")
        return {spec.variant: scorers[spec.variant] for spec in view.arms}
    if len({(spec.model_version, spec.pmml_path) for spec in view.arms}) > 1:
        raise ConfigError(
            f"Experiment '{view.id}' has a model per arm; pass one scorer per model arm, not one for all of them."
        )
    return {spec.variant: scorers for spec in view.arms}


@dataclass(frozen=True)
class Population:
    """The simulated customers, their assignment, the models' decisions and their ground-truth probabilities.

    Arrays are aligned with `ids`. `variant` is None outside the experiment's traffic. `arm_scores` holds, per model
    arm, its model's P(show) for every customer (the true lift needs each arm's policy for everyone, control
    included), and `arm_thresholds` its threshold. `score` is each customer's own arm's model's P(show) (the first
    model arm's for the control and customers outside the traffic; with one model, that model's for everyone), and
    `shown` is the decision the job makes: a model arm and its own score >= its own threshold. `p0`/`p1` are the
    true conversion probabilities hidden/shown; `converted` and `revenue` are the draws (revenue 0 when not
    converted). `threshold` is the experiment's default threshold.
    """

    experiment_id: str
    control: str
    threshold: float
    ids: list[str]
    features: pd.DataFrame
    variant: list[str | None]
    score: npt.NDArray[np.float64]
    shown: npt.NDArray[np.bool_]
    p0: npt.NDArray[np.float64]
    p1: npt.NDArray[np.float64]
    converted: npt.NDArray[np.bool_]
    revenue: npt.NDArray[np.float64]
    purchase_category: list[str | None]
    arm_scores: Mapping[str, npt.NDArray[np.float64]]
    arm_thresholds: Mapping[str, float]

    @property
    def model_arms(self) -> tuple[str, ...]:
        """The scored arms, in declared order."""
        return tuple(self.arm_scores)

    def policy(self, arm: str) -> npt.NDArray[np.bool_]:
        """Whom `arm`'s model and threshold would show the category to, over every customer."""
        return self.arm_scores[arm] >= self.arm_thresholds[arm]

    @property
    def in_experiment(self) -> npt.NDArray[np.bool_]:
        """Boolean mask of the customers inside the experiment's traffic."""
        return np.array([v is not None for v in self.variant], dtype=bool)

    def customers_per_variant(self) -> dict[str, int]:
        """Unique customers per variant (what the report's sample sizes must equal)."""
        counts: dict[str, int] = {}
        for v in self.variant:
            if v is not None:
                counts[v] = counts.get(v, 0) + 1
        return dict(sorted(counts.items()))


def build_population(
    view: ExperimentView, scorers: BatchScorer | Mapping[str, BatchScorer], *, customers: int, seed: int
) -> Population:
    """Sample `customers` from the ground truth, assign and decide like the job, and draw their outcomes.

    `scorers` is each model arm's scorer by arm name, or one scorer when every arm has the same model.
    """
    from data import ground_truth

    if customers < 1:
        raise ConfigError(f"--customers must be >= 1. Got {customers}.")
    by_arm = _scorers_by_arm(view, scorers)
    names = _session_features(view)
    k = sum(1 for name in names if _CATEGORY.match(name))
    rng = np.random.default_rng(seed)
    features = ground_truth.sample_customers(customers, k, rng)
    ids = customer_ids(customers, seed)
    features.index = ids
    features.index.name = "customer_id"
    features = features[list(names)]

    variant = [assign(view.salt, cid, view.traffic, view.weights) for cid in ids]
    arm_scores: dict[str, npt.NDArray[np.float64]] = {}
    scored_by: dict[int, npt.NDArray[np.float64]] = {}  # one pass per model, however many arms share it
    for spec in view.arms:
        scorer = by_arm[spec.variant]
        if id(scorer) not in scored_by:
            scored_by[id(scorer)] = _score(view, scorer, features, customers)
        arm_scores[spec.variant] = scored_by[id(scorer)]
    arm_thresholds = {spec.variant: spec.threshold for spec in view.arms}
    arms = np.array([v or "" for v in variant], dtype=object)
    shown = np.zeros(customers, dtype=bool)
    score = arm_scores[view.arms[0].variant].copy()
    for spec in view.arms:
        mine = arms == spec.variant
        shown |= decide_many(arm_scores[spec.variant], spec.threshold, mine)
        score[mine] = arm_scores[spec.variant][mine]
    p0, p1 = ground_truth.true_conversion_probs(features)
    p = np.where(shown, p1, p0)
    converted = rng.random(customers) < p
    revenue = np.where(converted, np.round(ground_truth.sample_revenue(features, rng), 2), 0.0)
    # The purchase goes to one of the categories the customer already likes (counts + a little smoothing).
    cats = features[[c for c in features.columns if _CATEGORY.match(c)]].to_numpy(dtype=float) + 0.1
    category: list[str | None] = [None] * customers
    for i in np.flatnonzero(converted):
        weights = cats[i] / cats[i].sum()
        category[i] = f"cat{int(rng.choice(k, p=weights)) + 1}"
    return Population(
        experiment_id=view.id,
        control=view.control,
        threshold=view.threshold,
        ids=ids,
        features=features,
        variant=variant,
        score=score,
        shown=shown,
        p0=p0,
        p1=p1,
        converted=converted,
        revenue=revenue,
        purchase_category=category,
        arm_scores=arm_scores,
        arm_thresholds=arm_thresholds,
    )


def _score(
    view: ExperimentView, scorer: BatchScorer, features: pd.DataFrame, customers: int
) -> npt.NDArray[np.float64]:
    """One model's P(show) for every customer, its features taken by name (absent ones count as 0)."""
    matrix = features.reindex(columns=list(scorer.feature_names), fill_value=0).to_numpy(dtype=np.float64)
    score = np.asarray(scorer.score_batch(matrix), dtype=np.float64)
    if score.shape != (customers,) or not np.all(np.isfinite(score)):
        raise ExperimentError(
            f"The model of experiment '{view.id}' returned {score.shape} scores for {customers} customers, "
            f"{int(np.sum(~np.isfinite(score)))} of them not finite."
        )
    return score


@dataclass(frozen=True)
class TrueLift:
    """The exact lift of one model arm's policy on the simulated customers, from the ground-truth probabilities.

    ``treatment_rate = mean(p1 if the arm's score >= its threshold else p0)`` and ``control_rate`` the same for the
    baseline: ``mean(p0)`` when the baseline is the control (nobody shown), else the baseline arm's policy
    (challenger vs champion); both over the customers inside the experiment's traffic, as if everyone got each
    policy. ``abs_lift`` is their difference (conversion rate, absolute scale); ``rel_lift = abs_lift /
    control_rate``. The revenue figures are the same for expected revenue per user (currency units). `customers`
    is how many customers the means cover; `shown_fraction` is the share the arm's policy shows the category to.
    `arm` and `baseline` name what is compared.
    """

    customers: int
    control_rate: float
    treatment_rate: float
    abs_lift: float
    rel_lift: float
    shown_fraction: float
    control_revenue_per_user: float
    treatment_revenue_per_user: float
    revenue_abs_lift: float
    arm: str = ""
    baseline: str = ""

    def as_dict(self) -> dict[str, float | int | str]:
        """Plain values for JSON."""
        return asdict(self)


def true_lift(
    population: Population,
    mask: npt.NDArray[np.bool_] | None = None,
    *,
    arm: str | None = None,
    baseline: str | None = None,
) -> TrueLift:
    """`TrueLift` of `arm` (default: the first model arm) versus `baseline` (default: the control).

    Over the in-experiment customers, restricted further by `mask` when given.
    """
    from data import ground_truth

    keep = population.in_experiment if mask is None else population.in_experiment & mask
    n = int(keep.sum())
    if n == 0:
        raise ExperimentError(f"No simulated customer of experiment '{population.experiment_id}' is in traffic.")
    arm = population.model_arms[0] if arm is None else arm
    baseline = population.control if baseline is None else baseline
    for name in (arm, *([baseline] if baseline != population.control else [])):
        if name not in population.arm_scores:
            raise ExperimentError(f"'{name}' is not a model arm of experiment '{population.experiment_id}'.")
    policy = population.policy(arm)[keep]
    base: npt.NDArray[np.bool_] | bool = False if baseline == population.control else population.policy(baseline)[keep]
    p0, p1 = population.p0[keep], population.p1[keep]
    p_base, p_arm = np.where(base, p1, p0), np.where(policy, p1, p0)
    features = population.features[keep]
    rev0 = ground_truth.expected_revenue(features, base)
    rev1 = ground_truth.expected_revenue(features, policy)
    control_rate, treatment_rate = float(p_base.mean()), float(p_arm.mean())
    return TrueLift(
        customers=n,
        control_rate=control_rate,
        treatment_rate=treatment_rate,
        abs_lift=treatment_rate - control_rate,
        rel_lift=(treatment_rate - control_rate) / control_rate,
        shown_fraction=float(policy.mean()),
        control_revenue_per_user=float(rev0.mean()),
        treatment_revenue_per_user=float(rev1.mean()),
        revenue_abs_lift=float(rev1.mean() - rev0.mean()),
        arm=arm,
        baseline=baseline,
    )


def _pairs(population: Population) -> Iterable[tuple[str, str]]:
    """(arm, baseline): every model arm vs the control, then each later model arm vs each earlier one.

    An earlier arm is skipped when both arms have the same scorer and threshold (the same policy: a lift of 0).
    """
    arms = population.model_arms
    for arm in arms:
        yield arm, population.control
    for j, arm in enumerate(arms):
        for earlier in arms[:j]:
            same_model = population.arm_scores[arm] is population.arm_scores[earlier]
            if not (same_model and population.arm_thresholds[arm] == population.arm_thresholds[earlier]):
                yield arm, earlier


def true_lifts(population: Population, mask: npt.NDArray[np.bool_] | None = None) -> list[TrueLift]:
    """The true lift of every model arm vs the control, and of each challenger vs each earlier model arm."""
    return [true_lift(population, mask, arm=arm, baseline=baseline) for arm, baseline in _pairs(population)]


def segment_labels(population: Population) -> dict[str, list[str]]:
    """Each customer's built-in segments, by dimension, exactly as the job records them at the first exposure.

    Why the job's own function: the true lift of a segment must be over the customers the store puts in it. A
    simulated customer sends the same features in every session and buys only after the first one, so the first
    exposure's pre-period purchases are the sum of the purchase counts.
    """
    from experiment.core.segments import BUILTIN_SEGMENTS, segments_of

    names = list(population.features.columns)
    categories = [j for j, name in enumerate(names) if _CATEGORY.match(name)]
    labels: dict[str, list[str]] = {dimension: [] for dimension in BUILTIN_SEGMENTS}
    for row in population.features.to_numpy(dtype=np.float64):
        found = segments_of(dict(zip(names, row.tolist(), strict=True)), int(row[categories].sum()))
        for dimension, values in labels.items():
            values.append(found[dimension])
    return labels


def true_segment_lifts(
    population: Population, mask: npt.NDArray[np.bool_] | None = None
) -> dict[str, dict[str, list[TrueLift]]]:
    """`true_lifts` within every segment of every built-in dimension: dimension -> segment -> lifts.

    A segment without a customer in the experiment's traffic (under `mask`) is left out.
    """
    keep = population.in_experiment if mask is None else population.in_experiment & mask
    out: dict[str, dict[str, list[TrueLift]]] = {}
    for dimension, labels in segment_labels(population).items():
        column = np.asarray(labels, dtype=object)
        out[dimension] = {
            value: true_lifts(population, keep & (column == value))
            for value in dict.fromkeys(labels)
            if (keep & (column == value)).any()
        }
    return out
