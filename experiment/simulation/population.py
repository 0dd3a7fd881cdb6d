"""The simulated customers: drawn from the ground truth, assigned and decided exactly as the job decides.

How the outcomes follow the truth without knowing the job's decisions: the decision is a pure function of the
definition and the features, so the simulator makes it with the job's own rules. It assigns every customer with
`experiment.core.assignment.assign` and decides with `experiment.core.decisions.decide_many` (the array form of
the job's `decide`: the control is never shown, a treatment arm is shown when score >= threshold), scoring with the
experiment's verified PMML scorer in batch mode (proven equal to pypmml within 1e-9, as the job's). A customer then
converts with probability ``p1`` when shown and ``p0`` otherwise (`data.ground_truth.true_conversion_probs`); a
conversion is one purchase whose revenue is drawn from `data.ground_truth.sample_revenue`. The true lift comes from
the ground-truth probabilities, not from the draws.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
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

__all__ = ["BatchScorer", "Population", "TrueLift", "build_population", "customer_ids", "true_lift"]

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


def _categories_of(feature_names: Sequence[str]) -> int:
    """K, the number of purchase-count columns, checked to be exactly ``cat1..catK`` after age/man/woman."""
    cats = [name for name in feature_names if _CATEGORY.match(name)]
    expected = events.default_feature_names(len(cats)) if cats else ()
    if tuple(feature_names) != tuple(expected):
        raise ConfigError(
            "The simulator draws customers from the ground truth, whose features are age, man, woman, cat1..catK "
            f"in that order; the model's features are {list(feature_names)[:6]}... ({len(feature_names)} names)."
        )
    return len(cats)


@dataclass(frozen=True)
class Population:
    """The simulated customers, their assignment, the model's decision and their ground-truth probabilities.

    Arrays are aligned with `ids`. `variant` is None outside the experiment's traffic. `score` is the model's
    P(show) for every customer (the true lift needs the policy's decision for everyone, control included), and
    `shown` is the decision the job makes: treatment and score >= threshold. `p0`/`p1` are the true conversion
    probabilities hidden/shown; `converted` and `revenue` are the draws (revenue 0 when not converted).
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


def build_population(view: ExperimentView, scorer: BatchScorer, *, customers: int, seed: int) -> Population:
    """Sample `customers` from the ground truth, assign and decide like the job, and draw their outcomes."""
    from data import ground_truth

    if customers < 1:
        raise ConfigError(f"--customers must be >= 1. Got {customers}.")
    k = _categories_of(view.features)
    rng = np.random.default_rng(seed)
    features = ground_truth.sample_customers(customers, k, rng)
    ids = customer_ids(customers, seed)
    features.index = ids
    features.index.name = "customer_id"
    features = features[list(view.features)]

    variant = [assign(view.salt, cid, view.traffic, view.weights) for cid in ids]
    matrix = features.reindex(columns=list(scorer.feature_names), fill_value=0).to_numpy(dtype=np.float64)
    score = np.asarray(scorer.score_batch(matrix), dtype=np.float64)
    if score.shape != (customers,) or not np.all(np.isfinite(score)):
        raise ExperimentError(
            f"The model of experiment '{view.id}' returned {score.shape} scores for {customers} customers, "
            f"{int(np.sum(~np.isfinite(score)))} of them not finite."
        )
    scored = np.array([v is not None and view.is_scored(v) for v in variant], dtype=bool)
    shown = decide_many(score, view.threshold, scored)
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
    )


@dataclass(frozen=True)
class TrueLift:
    """The exact lift of the treatment policy on the simulated customers, from the ground-truth probabilities.

    ``control_rate = mean(p0)``; ``treatment_rate = mean(p1 if score >= threshold else p0)``, both over the
    customers inside the experiment's traffic, as if everyone got the policy. ``abs_lift`` is their difference
    (conversion rate, absolute scale); ``rel_lift = abs_lift / control_rate``. The revenue figures are the same
    for expected revenue per user (currency units). `customers` is how many customers the means cover.
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

    def as_dict(self) -> dict[str, float | int]:
        """Plain numbers for JSON."""
        return asdict(self)


def true_lift(population: Population, mask: npt.NDArray[np.bool_] | None = None) -> TrueLift:
    """Compute `TrueLift` over the in-experiment customers (restricted further by `mask` when given)."""
    from data import ground_truth

    keep = population.in_experiment if mask is None else population.in_experiment & mask
    n = int(keep.sum())
    if n == 0:
        raise ExperimentError(f"No simulated customer of experiment '{population.experiment_id}' is in traffic.")
    policy = population.score >= population.threshold
    p0 = population.p0[keep]
    p_t = np.where(policy, population.p1, population.p0)[keep]
    features = population.features[keep]
    rev0 = ground_truth.expected_revenue(features, False)
    rev1 = ground_truth.expected_revenue(features, policy[keep])
    control_rate, treatment_rate = float(p0.mean()), float(p_t.mean())
    return TrueLift(
        customers=n,
        control_rate=control_rate,
        treatment_rate=treatment_rate,
        abs_lift=treatment_rate - control_rate,
        rel_lift=(treatment_rate - control_rate) / control_rate,
        shown_fraction=float(policy[keep].mean()),
        control_revenue_per_user=float(rev0.mean()),
        treatment_revenue_per_user=float(rev1.mean()),
        revenue_abs_lift=float(rev1.mean() - rev0.mean()),
    )
