"""The traffic simulator: website sessions and purchases drawn from the ground truth, so the true lift is known.

Why it exists: a platform that claims to measure lift must be tested on traffic whose lift is known exactly. The
simulator samples customers from the same ground-truth model the training data came from (`data.ground_truth`:
same feature distribution, fresh individuals, as when a model meets new customers), decides for them with the job's
own rules (`population`), plans their sessions and the purchases the ground truth implies (`traffic`), and hands
the messages, never faster than `rate` per second (a token bucket), to a `send` callable. It computes the true
lift of each model arm's policy (its own model and threshold) from the ground-truth probabilities, not from the
draws: versus the control, and versus each earlier model arm (challenger vs champion).

It is pure of infrastructure: no Kafka, no model files (the caller passes the experiment's view and a scorer per
model arm). `experiment.cli.simulate_io` is its edge: it reads the definition, loads every arm's verified model and
produces to Kafka.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from experiment.core.errors import ConfigError
from experiment.simulation.population import (
    BatchScorer,
    Population,
    TrueLift,
    build_population,
    customer_ids,
    true_lift,
    true_lifts,
    true_segment_lifts,
)
from experiment.simulation.traffic import (
    MALFORMED_KINDS,
    MALFORMED_TOPIC,
    EventPlan,
    SimEvent,
    SimulationConfig,
    malformed_count,
    malformed_payload,
    plan_events,
)

if TYPE_CHECKING:
    from experiment.core.view import ExperimentView

__all__ = [
    "MALFORMED_KINDS",
    "BatchScorer",
    "EventPlan",
    "Population",
    "Send",
    "SimEvent",
    "SimulationConfig",
    "SimulationResult",
    "TokenBucket",
    "TrueLift",
    "build_population",
    "customer_ids",
    "malformed_count",
    "malformed_payload",
    "plan_events",
    "send_plan",
    "simulate",
    "true_lift",
    "true_lifts",
    "true_segment_lifts",
]

#: Where a message goes: (logical topic, key, value).
Send = Callable[[Literal["sessions", "outcomes"], bytes, bytes], None]


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
# Sending
# --------------------------------------------------------------------------------------------------------------


@dataclass
class SimulationResult:
    """What was sent and what the truth is; the true lifts cover the customers whose first session was sent.

    `true_lift` is the first model arm's versus the control (with two arms: the treatment's); `true_lifts` holds
    every model arm's versus the control, then each challenger's versus each earlier model arm (`arm`, `baseline`).

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
    true_lifts: list[TrueLift] = field(default_factory=list)
    #: The same lifts within each segment of each built-in dimension (dimension -> segment -> lifts).
    true_segment_lifts: dict[str, dict[str, list[TrueLift]]] = field(default_factory=dict)

    @property
    def achieved_rate(self) -> float:
        """Events per second actually sent (never above `rate_limit`)."""
        return self.events_sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able numbers (for `--json`, the demo and the e2e test)."""
        out = asdict(self)
        out["true_lift"] = self.true_lift.as_dict() if self.true_lift else None
        out["true_lifts"] = [lift.as_dict() for lift in self.true_lifts]
        out["true_segment_lifts"] = {
            dimension: {value: [lift.as_dict() for lift in lifts] for value, lifts in segments.items()}
            for dimension, segments in self.true_segment_lifts.items()
        }
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
            kind = event.malformed_kind
            assert kind is not None
            bad_kind[kind] = bad_kind.get(kind, 0) + 1
            topic = MALFORMED_TOPIC[kind]
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
    lifts = true_lifts(population, exposed) if in_exp.any() else []
    segment_lifts = true_segment_lifts(population, exposed) if in_exp.any() else {}
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
        true_lift=lifts[0] if lifts else None,
        topics=dict(topics),
        true_lifts=lifts,
        true_segment_lifts=segment_lifts,
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


def simulate(
    view: ExperimentView,
    scorer: BatchScorer | Mapping[str, BatchScorer],
    config: SimulationConfig,
    send: Send,
    *,
    topics: Mapping[str, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    stage: Callable[[str], None] | None = None,
    now_ms: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> SimulationResult:
    """Build the population, plan its events and hand each message to `send`, never faster than `config.rate`.

    `scorer` is each model arm's scorer by arm name, or one scorer when every arm has the same model. `topics`
    (logical -> physical names) is only reported in the result. Returns what was sent and the true lifts.
    """
    config.validate()
    say = stage or (lambda _message: None)
    say(f"sampling {config.customers} customers from the ground truth")
    population = build_population(view, scorer, customers=config.customers, seed=config.seed)
    plan = plan_events(population, config, attribution_window_ms=view.attribution_window_ms, now_ms=now_ms)
    say(f"sending {len(plan)} events at most {config.rate:g}/s")
    sent, elapsed = send_plan(
        plan.events,
        lambda event: send(*plan.message(event)),
        rate=config.rate,
        duration_s=config.duration_s,
        progress=progress,
        clock=clock,
        sleep=sleep,
    )
    return _summarise(plan, sent, elapsed, config, topics or {})
