"""The simulated traffic: every message of a simulation, planned in event-time order, and the bad ones among them.

The timeline (event time, epoch ms). Each customer's first session falls uniformly in a `horizon_days` window,
the customer comes back ``Poisson(sessions_mean - 1)`` more times (exponential gaps, mean one day), and a
conversion happens ``Exponential(mean conversion_delay_s)`` after the first session, clipped into
[60 s, attribution window - 60 s] so that every purchase is attributable. The first sessions end three days
before the simulation starts and no event is later than its start (later returns are dropped, later purchases
moved to that end), so nothing lies in the future. Features are the customer's purchase history and stay the
same across their sessions (so every session of a customer gets the same decision). `malformed` of all events
are deliberately broken, each kind failing the job's validation for a different reason.

Everything here is pure and deterministic given the seed.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from experiment.core import events
from experiment.core.errors import ConfigError
from experiment.simulation.population import Population

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = [
    "MALFORMED_KINDS",
    "MALFORMED_TOPIC",
    "EventPlan",
    "MalformedKind",
    "SimEvent",
    "SimulationConfig",
    "malformed_count",
    "malformed_payload",
    "plan_events",
]

_MS = 1000
_DAY_MS = 86_400 * _MS
_MIN_DELAY_MS = 60 * _MS
_RETURN_GAP_MEAN_MS = _DAY_MS
_TAIL_MS = 3 * _DAY_MS  # time after the last first session, so late returns and purchases still happen

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
#: The topic each kind of bad event goes to.
MALFORMED_TOPIC: dict[MalformedKind, Literal["sessions", "outcomes"]] = {
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
    return MALFORMED_TOPIC[kind], payload


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
    feature_rows: npt.NDArray[np.int64]  # (customers, features) integers, the session payloads
    _fragments: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.events)

    def _features_json(self, customer: int) -> str:
        """The customer's `features` object exactly as `events.to_json` writes it (sorted keys, compact), cached.

        Why: a customer sends the same features in every session, and serialising 60+ keys per message was the
        simulator's bottleneck. A unit test pins the bytes to `events.session_json`.
        """
        fragment: str | None = self._fragments.get(customer)
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
