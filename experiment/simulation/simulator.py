"""The traffic simulator: website sessions and purchases drawn from the ground truth, so the true lift is known.

Why it exists: a platform that claims to measure lift must be tested on traffic whose lift is known exactly. The
simulator samples customers from the same ground-truth model the training data came from (`data.ground_truth`:
same feature distribution, fresh individuals, as when a model meets new customers), sends their sessions to
`sessions` and the purchases that the ground truth implies to `outcomes`, and computes the true lift of the
treatment policy from the ground-truth probabilities, not from the draws.

How the outcomes follow the truth without knowing the job's decisions: the decision is a pure function of the
definition and the features, so the simulator recomputes it exactly as the Flink job does. It assigns every
customer with `experiment.core.assignment.assign` and scores the treatment customers with the same PMML through the
verified fast scorer of `flink_pipeline.scoring` (batch mode; equal to pypmml within 1e-9), shown when
score >= threshold. A customer then converts with probability ``p1`` when shown and ``p0`` otherwise
(`data.ground_truth.true_conversion_probs`); a conversion is one purchase whose revenue is drawn from
`data.ground_truth.sample_revenue`.

The timeline (event time, epoch ms). Each customer's first session falls uniformly in a `horizon_days` window,
the customer comes back ``Poisson(sessions_mean - 1)`` more times (exponential gaps, mean one day), and a
conversion happens ``Exponential(mean conversion_delay_s)`` after the first session, clipped into
[60 s, attribution window - 60 s] so that every purchase is attributable. The first sessions end three days
before the simulation starts and no event is later than its start (later returns are dropped, later purchases
moved to that end), so nothing lies in the future. Features are the customer's purchase history and stay the
same across their sessions (so every session of a customer gets the same decision). Events are sent in
event-time order, at most `rate` per second (a token bucket), with `malformed` of them deliberately broken.

Everything except `run_simulation` is pure and deterministic given the seed.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from experiment.core import events
from experiment.core.assignment import assign
from experiment.core.errors import ConfigError, ExperimentError, InfraError

if TYPE_CHECKING:
    import pandas as pd

    from experiment.runtime.config import Settings
    from flink_pipeline.experiments import ExperimentView

__all__ = [
    "MALFORMED_KINDS",
    "BatchScorer",
    "EventPlan",
    "Population",
    "SimEvent",
    "SimulationConfig",
    "SimulationResult",
    "TokenBucket",
    "TrueLift",
    "build_population",
    "customer_ids",
    "load_experiment",
    "load_scorer",
    "malformed_count",
    "malformed_payload",
    "plan_events",
    "run_simulation",
    "send_plan",
    "true_lift",
]

logger = logging.getLogger(__name__)

_MS = 1000
_DAY_MS = 86_400 * _MS
_MIN_DELAY_MS = 60 * _MS
_RETURN_GAP_MEAN_MS = _DAY_MS
_TAIL_MS = 3 * _DAY_MS  # time after the last first session, so late returns and purchases still happen
_CATEGORY = re.compile(r"^cat([1-9]\d*)$")

MalformedKind = Literal[
    "invalid_json",
    "non_utf8",
    "missing_field",
    "extra_field",
    "wrong_type",
    "negative_count",
    "unknown_feature",
    "unknown_category",
    "negative_revenue",
    "oversized",
]
#: Every kind of bad event the simulator injects, in the order it cycles through them (each reaches the job's
#: dead-letter path for a different reason).
MALFORMED_KINDS: tuple[MalformedKind, ...] = (
    "invalid_json",
    "missing_field",
    "negative_count",
    "unknown_category",
    "non_utf8",
    "wrong_type",
    "unknown_feature",
    "extra_field",
    "negative_revenue",
    "oversized",
)
_MALFORMED_TOPIC: dict[MalformedKind, Literal["sessions", "outcomes"]] = {
    "invalid_json": "sessions",
    "non_utf8": "sessions",
    "missing_field": "sessions",
    "extra_field": "outcomes",
    "wrong_type": "sessions",
    "negative_count": "sessions",
    "unknown_feature": "sessions",
    "unknown_category": "outcomes",
    "negative_revenue": "outcomes",
    "oversized": "sessions",
}


class BatchScorer(Protocol):
    """What the simulator needs from a model: P(show) per row, columns in `feature_names` order."""

    feature_names: tuple[str, ...]

    def score_batch(self, features: np.ndarray) -> np.ndarray:  # pragma: no cover - protocol
        """P(class = 1) per row."""
        ...


# --------------------------------------------------------------------------------------------------------------
# Rate limiting
# --------------------------------------------------------------------------------------------------------------


class TokenBucket:
    """A token bucket that starts empty, so after t seconds at most ``rate * t`` events have been let through.

    Why empty and small: `--rate` is a promise to the systems downstream ("never faster than"), so there is no
    initial burst, and the capacity (default: 1/20 s of traffic) only lets a caller take events in chunks to
    keep the per-event overhead low. `clock` and `sleep` are injectable so tests run without real waiting.
    """

    def __init__(
        self,
        rate: float,
        *,
        capacity: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ConfigError(f"The rate must be a positive number of events per second. Got {rate}.")
        self.rate = float(rate)
        self.capacity = float(capacity) if capacity is not None else max(1.0, self.rate / 20.0)
        if self.capacity < 1:
            raise ConfigError(f"The token bucket's capacity must be >= 1 event. Got {self.capacity}.")
        self._clock = clock
        self._sleep = sleep
        self._tokens = 0.0
        self._last = clock()
        self.started = self._last

    def acquire(self, n: int = 1) -> None:
        """Block until `n` events may be sent (n <= capacity), then take them."""
        if n < 1:
            return
        if n > self.capacity:
            raise ValueError(f"cannot take {n} tokens at once from a bucket of capacity {self.capacity}")
        while True:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= n - 1e-9:
                self._tokens -= n
                return
            self._sleep(max((n - self._tokens) / self.rate, 1e-6))


# --------------------------------------------------------------------------------------------------------------
# The population and its ground truth
# --------------------------------------------------------------------------------------------------------------


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
    score: np.ndarray
    shown: np.ndarray
    p0: np.ndarray
    p1: np.ndarray
    converted: np.ndarray
    revenue: np.ndarray
    purchase_category: list[str | None]

    @property
    def in_experiment(self) -> np.ndarray:
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
    treated = np.array([v is not None and view.is_scored(v) for v in variant], dtype=bool)
    shown = treated & (score >= view.threshold)
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


def true_lift(population: Population, mask: np.ndarray | None = None) -> TrueLift:
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


# --------------------------------------------------------------------------------------------------------------
# Malformed events
# --------------------------------------------------------------------------------------------------------------


def malformed_count(valid_events: int, fraction: float) -> int:
    """How many bad events make `fraction` of all events sent: ``round(fraction * valid / (1 - fraction))``."""
    if not (0.0 <= fraction < 1.0):
        raise ConfigError(f"--malformed must be a fraction in [0, 1). Got {fraction}.")
    return round(fraction * valid_events / (1.0 - fraction))


def malformed_payload(
    kind: MalformedKind, j: int, *, feature_names: Sequence[str], ts: int, max_bytes: int = events.DEFAULT_MAX_BYTES
) -> tuple[Literal["sessions", "outcomes"], bytes]:
    """The topic and the bytes of the `j`-th bad event of one kind; each fails the job's validation."""
    cid = f"malformed-{j}"
    features = dict.fromkeys(feature_names, 0)
    features["age"] = 30
    session = {"event_id": f"bad-{j}", "customer_id": cid, "ts": ts, "features": features}
    outcome = {
        "event_id": f"bad-{j}",
        "customer_id": cid,
        "ts": ts,
        "type": "purchase",
        "category": "cat1",
        "revenue": 10.0,
    }
    if kind == "invalid_json":
        payload = events.to_json(session)[:40].encode()
    elif kind == "non_utf8":
        payload = b'{"event_id": "bad-' + str(j).encode() + b'", "customer_id": "\xff\xfe\xfa"}'
    elif kind == "missing_field":
        session.pop("ts")
        payload = events.to_json(session).encode()
    elif kind == "extra_field":
        outcome["coupon"] = "SPRING"
        payload = events.to_json(outcome).encode()
    elif kind == "wrong_type":
        session["ts"] = str(ts)
        payload = events.to_json(session).encode()
    elif kind == "negative_count":
        features["cat1"] = -1
        payload = events.to_json(session).encode()
    elif kind == "unknown_feature":
        features["cat999"] = 1
        payload = events.to_json(session).encode()
    elif kind == "unknown_category":
        outcome["category"] = "garden"  # not a category key (any catN is valid: the new category is cat61)
        payload = events.to_json(outcome).encode()
    elif kind == "negative_revenue":
        outcome["revenue"] = -5.0
        payload = events.to_json(outcome).encode()
    elif kind == "oversized":
        session["customer_id"] = "x" * (max_bytes + 1)
        payload = events.to_json(session).encode()
    else:  # pragma: no cover - Literal exhausts the kinds
        raise ValueError(f"unknown malformed kind {kind!r}")
    return _MALFORMED_TOPIC[kind], payload


# --------------------------------------------------------------------------------------------------------------
# The event plan
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulationConfig:
    """How much traffic, how fast and how broken (see the module docstring for the timeline)."""

    customers: int
    rate: float
    duration_s: float | None = None
    seed: int = 1
    malformed: float = 0.0
    sessions_mean: float = 2.5
    horizon_days: float = 7.0
    conversion_delay_s: float = 12 * 3600.0
    start_ms: int | None = None

    def validate(self) -> SimulationConfig:
        """Raise `ConfigError` naming the first bad value."""
        if self.customers < 1:
            raise ConfigError(f"--customers must be >= 1. Got {self.customers}.")
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ConfigError(f"--rate must be a positive number of events per second. Got {self.rate}.")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ConfigError(f"--duration must be > 0 seconds. Got {self.duration_s}.")
        if self.seed < 0:
            raise ConfigError(f"--seed must be >= 0. Got {self.seed}.")
        malformed_count(0, self.malformed)
        if self.sessions_mean < 1:
            raise ConfigError(f"The mean number of sessions per customer must be >= 1. Got {self.sessions_mean}.")
        return self


@dataclass(frozen=True, slots=True)
class SimEvent:
    """One planned message: what it is, whose, when (epoch ms) and its index `k` (session number, bad event number).

    The bytes are rendered only when the event is sent (`EventPlan.message`), so a plan of 50k customers stays
    small in memory.
    """

    ts: int
    kind: Literal["session", "outcome", "malformed"]
    customer: int  # index into the population; -1 for malformed events
    k: int

    @property
    def malformed_kind(self) -> MalformedKind | None:
        """Which kind of bad event this is (None for valid events)."""
        return MALFORMED_KINDS[self.k % len(MALFORMED_KINDS)] if self.kind == "malformed" else None


@dataclass(frozen=True)
class EventPlan:
    """Every message of a simulation, in event-time order, and how to render each one."""

    population: Population
    events: list[SimEvent]
    feature_names: tuple[str, ...]
    feature_rows: np.ndarray  # (customers, features) integers, the session payloads
    _fragments: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.events)

    def _features_json(self, customer: int) -> str:
        """The customer's `features` object exactly as `events.to_json` writes it (sorted keys, compact), cached.

        Why: a customer sends the same features in every session, and serialising 60+ keys per message was the
        simulator's bottleneck. A unit test pins the bytes to `events.session_json`.
        """
        fragment = self._fragments.get(customer)
        if fragment is None:
            if not self._fragments:  # once: -1 holds the %d template in sorted-key order, -2 the reordered rows
                order = sorted(range(len(self.feature_names)), key=lambda j: self.feature_names[j])
                self._fragments[-1] = "{" + ",".join(f"{json.dumps(self.feature_names[j])}:%d" for j in order) + "}"
                self._fragments[-2] = self.feature_rows[:, order]
            fragment = self._fragments[-1] % tuple(self._fragments[-2][customer].tolist())
            self._fragments[customer] = fragment
        return fragment

    def message(self, event: SimEvent) -> tuple[Literal["sessions", "outcomes"], bytes, bytes]:
        """(logical topic, key, value) of one event; valid ones are built by `experiment.core.events`."""
        pop = self.population
        if event.kind == "session":
            cid = pop.ids[event.customer]
            # Same bytes as events.session_json (keys in sorted order: customer_id, event_id, features, ts).
            value = (
                f'{{"customer_id":{json.dumps(cid)},"event_id":{json.dumps(f"{cid}-s{event.k}")},'
                f'"features":{self._features_json(event.customer)},"ts":{int(event.ts)}}}'
            )
            return "sessions", cid.encode(), value.encode()
        if event.kind == "outcome":
            cid = pop.ids[event.customer]
            category = pop.purchase_category[event.customer] or "cat1"
            value = events.outcome_json(
                f"{cid}-o{event.k}", cid, event.ts, category, float(pop.revenue[event.customer])
            )
            return "outcomes", cid.encode(), value.encode()
        kind = event.malformed_kind
        assert kind is not None
        topic, payload = malformed_payload(kind, event.k, feature_names=self.feature_names, ts=event.ts)
        return topic, f"malformed-{event.k}".encode(), payload


def plan_events(
    population: Population, config: SimulationConfig, *, attribution_window_ms: int, now_ms: int | None = None
) -> EventPlan:
    """Plan every message of the simulation, in event-time order (deterministic given the config's seed).

    Customers outside the experiment's traffic still visit (the site does not know about experiments); they are
    never assigned and their purchases are never attributed. Malformed events are spread uniformly in time and
    cycle through `MALFORMED_KINDS`.
    """
    config.validate()
    rng = np.random.default_rng([config.seed, 1])
    n = len(population.ids)
    horizon_ms = int(config.horizon_days * _DAY_MS)
    if config.start_ms is not None:
        start = int(config.start_ms)
    else:
        now = int(time.time() * _MS) if now_ms is None else now_ms
        start = now - horizon_ms - _TAIL_MS
    end = start + horizon_ms + _TAIL_MS  # no event after this (it is "now" unless start_ms is given)
    first = start + rng.integers(0, max(horizon_ms, 1), size=n)
    returns = rng.poisson(config.sessions_mean - 1.0, size=n)
    max_delay = max(attribution_window_ms - _MIN_DELAY_MS, _MIN_DELAY_MS)
    delay = np.clip(rng.exponential(config.conversion_delay_s * _MS, size=n), _MIN_DELAY_MS, max_delay)
    delay = delay.astype(np.int64)
    gaps = rng.exponential(_RETURN_GAP_MEAN_MS, size=int(returns.sum())).astype(np.int64) + 1

    # Sort key (ts, rank): at equal times a session precedes a purchase, so a first exposure comes first.
    planned: list[tuple[int, int, SimEvent]] = []
    g = 0
    for i in range(n):
        ts = int(first[i])
        planned.append((ts, 0, SimEvent(ts, "session", i, 0)))
        t = ts
        for k in range(1, int(returns[i]) + 1):
            t += int(gaps[g])
            g += 1
            if t <= end:  # a return visit after the end of the simulated period does not happen
                planned.append((t, 0, SimEvent(t, "session", i, k)))
        if population.converted[i]:
            t = min(ts + int(delay[i]), end)  # end - ts >= _TAIL_MS, so the purchase still follows the session
            planned.append((t, 1, SimEvent(t, "outcome", i, 0)))
    n_bad = malformed_count(len(planned), config.malformed)
    if n_bad:
        lo, hi = min(p[0] for p in planned), max(p[0] for p in planned)
        bad_ts = rng.integers(lo, hi + 1, size=n_bad)
        planned.extend((int(bad_ts[j]), 2, SimEvent(int(bad_ts[j]), "malformed", -1, j)) for j in range(n_bad))
    planned.sort(key=lambda p: (p[0], p[1]))
    return EventPlan(
        population,
        [p[2] for p in planned],
        tuple(population.features.columns),
        population.features.to_numpy(dtype=np.int64),
    )


# --------------------------------------------------------------------------------------------------------------
# Sending
# --------------------------------------------------------------------------------------------------------------


@dataclass
class SimulationResult:
    """What was sent and what the truth is; `true_lift` covers the customers whose first session was sent.

    `sessions_in_experiment` is how many `assignments` the job must emit (one per session of an in-traffic
    customer, one running experiment); `outcomes_in_experiment` how many `attributed-outcomes` (every purchase
    follows its customer's first session inside the window); `malformed_sent` how many dead letters.
    """

    experiment_id: str
    customers: int
    customers_in_experiment: int
    customers_per_variant: dict[str, int]
    sessions_sent: int
    outcomes_sent: int
    sessions_in_experiment: int
    outcomes_in_experiment: int
    conversions_per_variant: dict[str, int]
    shown_customers: int
    malformed_sent: int
    malformed_by_kind: dict[str, int]
    malformed_by_topic: dict[str, int]
    events_sent: int
    events_planned: int
    elapsed_s: float
    rate_limit: float
    completed: bool
    true_lift: TrueLift | None
    topics: dict[str, str] = field(default_factory=dict)

    @property
    def achieved_rate(self) -> float:
        """Events per second actually sent (never above `rate_limit`)."""
        return self.events_sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able numbers (for `--json`, the demo and the e2e test)."""
        out = asdict(self)
        out["true_lift"] = self.true_lift.as_dict() if self.true_lift else None
        out["achieved_rate"] = self.achieved_rate
        return out


def _summarise(
    plan: EventPlan, sent: int, elapsed: float, config: SimulationConfig, topics: Mapping[str, str]
) -> SimulationResult:
    population = plan.population
    exposed = np.zeros(len(population.ids), dtype=bool)
    converted_sent = np.zeros(len(population.ids), dtype=bool)
    sessions = outcomes = sessions_in = outcomes_in = 0
    inside = population.in_experiment
    bad_kind: dict[str, int] = {}
    bad_topic: dict[str, int] = {}
    for event in plan.events[:sent]:
        if event.kind == "session":
            sessions += 1
            sessions_in += int(inside[event.customer])
            exposed[event.customer] = True
        elif event.kind == "outcome":
            outcomes += 1
            outcomes_in += int(inside[event.customer])
            converted_sent[event.customer] = True
        else:
            kind = str(event.malformed_kind)
            bad_kind[kind] = bad_kind.get(kind, 0) + 1
            topic = _MALFORMED_TOPIC[event.malformed_kind]  # type: ignore[index]
            bad_topic[topic] = bad_topic.get(topic, 0) + 1
    per_variant: dict[str, int] = {}
    conversions: dict[str, int] = {}
    for i in np.flatnonzero(exposed):
        v = population.variant[i]
        if v is None:
            continue
        per_variant[v] = per_variant.get(v, 0) + 1
        if converted_sent[i]:
            conversions[v] = conversions.get(v, 0) + 1
    in_exp = exposed & population.in_experiment
    return SimulationResult(
        experiment_id=population.experiment_id,
        customers=int(exposed.sum()),
        customers_in_experiment=int(in_exp.sum()),
        customers_per_variant=dict(sorted(per_variant.items())),
        sessions_sent=sessions,
        outcomes_sent=outcomes,
        sessions_in_experiment=sessions_in,
        outcomes_in_experiment=outcomes_in,
        conversions_per_variant=dict(sorted(conversions.items())),
        shown_customers=int((population.shown & exposed).sum()),
        malformed_sent=sum(bad_kind.values()),
        malformed_by_kind=dict(sorted(bad_kind.items())),
        malformed_by_topic=dict(sorted(bad_topic.items())),
        events_sent=sent,
        events_planned=len(plan),
        elapsed_s=elapsed,
        rate_limit=config.rate,
        completed=sent == len(plan),
        true_lift=true_lift(population, exposed) if in_exp.any() else None,
        topics=dict(topics),
    )


def send_plan(
    plan: Sequence[Any],
    send: Callable[[Any], None],
    *,
    rate: float,
    duration_s: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[int, float]:
    """Send the plan through `send`, never faster than `rate`; stop at the end or after `duration_s`.

    `plan` is any sequence (e.g. `EventPlan.events`). Returns (events sent, elapsed seconds). Events are taken in
    chunks of at most 1/20 s of traffic (the bucket's capacity), so the per-event overhead stays low while the
    promise holds.
    """
    bucket = TokenBucket(rate, clock=clock, sleep=sleep)
    chunk = int(bucket.capacity)
    total = len(plan)
    sent = 0
    while sent < total:
        if duration_s is not None and clock() - bucket.started >= duration_s:
            break
        n = min(chunk, total - sent)
        bucket.acquire(n)
        for event in plan[sent : sent + n]:
            send(event)
        sent += n
        if progress is not None:
            progress(sent, total)
    return sent, clock() - bucket.started


def load_experiment(settings: Settings, experiment_id: str) -> ExperimentView:
    """The latest definition of `experiment_id` on the `experiments` topic, in the job's own view of it."""
    from experiment.kafka import control_plane
    from flink_pipeline.experiments import parse_definition

    definition = control_plane.get(settings.kafka, experiment_id)
    view = parse_definition(definition.to_json())
    if not view.is_running:
        logger.warning(
            "experiment is not running; the job will not assign its sessions experiment_id=%s status=%s",
            view.id,
            view.status,
        )
    return view


def _reference_rows(pmml_path: str) -> str | None:
    """The model's data directory (holding X_test.csv) from the model.json beside the PMML, if there is one."""
    card = Path(pmml_path).with_name("model.json")
    try:
        data_dir = json.loads(card.read_text(encoding="utf-8"))["data"]["dir"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(data_dir) if (Path(data_dir) / "X_test.csv").is_file() else None


def load_scorer(view: ExperimentView) -> BatchScorer:
    """The experiment's verified scorer; the PMML passes the XML gate before anything (pypmml included) reads it."""
    from experiment.model.pmml_guard import check_pmml
    from flink_pipeline.scoring import load_verified_scorer

    check_pmml(view.pmml_path)
    return load_verified_scorer(view.pmml_path, view.model_version, _reference_rows(view.pmml_path))


def run_simulation(
    settings: Settings,
    experiment_id: str,
    config: SimulationConfig,
    *,
    progress: Callable[[int, int], None] | None = None,
    stage: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> SimulationResult:
    """Read the experiment, build the population, and send its sessions and outcomes to Kafka."""
    from experiment.kafka.clients import make_producer
    from experiment.kafka.topics import OUTCOMES, SESSIONS, ensure_topics

    config.validate()
    say = stage or (lambda _message: None)
    say(f"reading experiment {experiment_id}")
    view = load_experiment(settings, experiment_id)
    say(f"loading and verifying model {view.model_version[:12]}")
    scorer = load_scorer(view)
    say(f"sampling {config.customers} customers from the ground truth")
    population = build_population(view, scorer, customers=config.customers, seed=config.seed)
    plan = plan_events(population, config, attribution_window_ms=view.attribution_window_ms)
    topics = {name: settings.kafka.topic(name) for name in (SESSIONS, OUTCOMES)}
    ensure_topics(settings.kafka)
    producer = make_producer(settings.kafka, linger_ms=20, batch_size=256 * 1024, client_id="abflow-simulator")
    errors: list[BaseException] = []

    def send(event: SimEvent) -> None:
        topic, key, value = plan.message(event)
        future = producer.send(topics[topic], key=key, value=value)
        future.add_errback(errors.append)

    say(f"sending {len(plan)} events at most {config.rate:g}/s")
    try:
        sent, elapsed = send_plan(
            plan.events,
            send,
            rate=config.rate,
            duration_s=config.duration_s,
            progress=progress,
            clock=clock,
            sleep=sleep,
        )
        producer.flush()
    finally:
        producer.close()
    if errors:
        raise InfraError(f"{len(errors)} of {sent} events could not be sent to Kafka; first error: {errors[0]!r}")
    result = _summarise(plan, sent, elapsed, config, topics)
    logger.info(
        "simulation done experiment_id=%s sessions=%d outcomes=%d malformed=%d elapsed_s=%.1f rate=%.0f",
        experiment_id,
        result.sessions_sent,
        result.outcomes_sent,
        result.malformed_sent,
        elapsed,
        result.achieved_rate,
    )
    return result
