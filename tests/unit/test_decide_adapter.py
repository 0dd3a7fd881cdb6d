"""`DecideFunction` is only an adapter: on any sequence of sessions, outcomes, timers and restores it emits what the
pure rules of `experiment.core.decisions` say, registers the timers they ask for, and keeps the state they return.

The function runs without Flink (fake keyed state that pickles like `PICKLED_BYTE_ARRAY`, a fake timer service and
metric group); the reference folds the same events through the core functions, one `CustomerState` per customer.
"""

from __future__ import annotations

import json
import pickle
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from experiment.core import events
from experiment.core.decisions import (
    Assigned,
    Attribution,
    CustomerState,
    arm_scorers,
    decide_session,
    expire_held,
    record_outcome,
    record_session,
)
from experiment.core.view import ArmSpec, ExperimentView
from flink_pipeline.functions import DecideFunction, Topics, _Metrics
from tests.helpers.null_metrics import NullMetricGroup

NAMES = events.default_feature_names(3)
TOPICS = Topics(*(f"t.{name}" for name in ("s", "o", "e", "a", "ao", "dl", "h")))
HOLD_MS = 1_000
CUSTOMERS = ("c0", "c1", "c2", "c3")


def _view(
    exp_id: str,
    status: str,
    traffic: float,
    weights: tuple[tuple[str, float], ...],
    window: int,
    arms: tuple[ArmSpec, ...] = (),
) -> ExperimentView:
    return ExperimentView(
        id=exp_id, version=1, status=status, salt=exp_id, traffic=traffic, weights=weights, control=weights[0][0],
        threshold=0.5, pmml_path=f"{exp_id}.pmml", model_version=exp_id * 64, features=NAMES,
        attribution_window_ms=window, arms=arms,
    )  # fmt: skip


def _arm(variant: str, version: str, threshold: float) -> ArmSpec:
    return ArmSpec(variant, f"{version}.pmml", version * 64, NAMES, threshold)


CHAMPION_CHALLENGER = (("control", 0.34), ("champion", 0.33), ("challenger", 0.33))
#: The experiments a case draws from: two arms and three, partial traffic, a paused one, one whose model is refused,
#: a champion and a challenger each on its own model and threshold, and one whose challenger's model is refused.
VIEWS = {
    "a": _view("a", "running", 1.0, (("control", 0.5), ("treatment", 0.5)), 3_000),
    "b": _view("b", "running", 0.7, (("base", 0.4), ("x", 0.3), ("y", 0.3)), 1_500),
    "p": _view("p", "paused", 1.0, (("control", 0.5), ("treatment", 0.5)), 3_000),
    "u": _view("u", "running", 1.0, (("control", 0.5), ("treatment", 0.5)), 3_000),
    "m": _view("m", "running", 1.0, CHAMPION_CHALLENGER, 2_000, (_arm("champion", "1", 0.5),
                                                                 _arm("challenger", "2", 0.3))),
    "w": _view("w", "running", 1.0, CHAMPION_CHALLENGER, 2_000, (_arm("champion", "1", 0.5),
                                                                 _arm("challenger", "9", 0.3))),
}  # fmt: skip
UNUSABLE = {"u" * 64, "9" * 64}


class _Model:
    """A deterministic model: the score follows the session's cat1 count, so show and hide both happen."""

    kind = "fake"

    def __init__(self, shift: int = 0) -> None:
        self.shift = shift

    def score_one(self, features: Mapping[str, float]) -> float:
        return ((features["cat1"] + self.shift) % 10) / 9


#: The challenger's model scores differently from everyone else's.
MODELS = {"2" * 64: _Model(shift=4)}
MODEL = _Model()


def _scorer_of(view: ExperimentView, spec: ArmSpec) -> _Model | None:
    return None if spec.model_version in UNUSABLE else MODELS.get(spec.model_version, MODEL)


@dataclass
class _Backend:
    """Keyed state and processing-time timers of one task, as Flink keeps them (values pickled)."""

    key: str = ""
    now: int = 0
    values: dict[str, bytes] = field(default_factory=dict)
    timers: set[tuple[int, str]] = field(default_factory=set)

    def value(self) -> Any:
        raw = self.values.get(self.key)
        return None if raw is None else pickle.loads(raw)

    def update(self, value: Any) -> None:
        self.values[self.key] = pickle.dumps(value)

    def get_current_key(self) -> str:
        return self.key

    def timer_service(self) -> _Backend:
        return self

    def current_processing_time(self) -> int:
        return self.now

    def register_processing_time_timer(self, ts: int) -> None:
        self.timers.add((ts, self.key))


class _Decide(DecideFunction):
    def _scorer(self, view: ExperimentView, spec: ArmSpec) -> Any:
        return _scorer_of(view, spec)


def _function(views: list[ExperimentView], backend: _Backend) -> _Decide:
    function = _Decide(
        TOPICS, feature_names=NAMES, max_bytes=events.DEFAULT_MAX_BYTES, hold_ms=HOLD_MS, state_ttl_ms=10**9,
        reference_rows=None, scorer_fallback=False,
    )  # fmt: skip
    function._state = backend
    function._metrics = _Metrics(NullMetricGroup())
    function._views = {v.id: v for v in views}
    function._views_loaded = True
    return function


def _assignment_key(record: Mapping[str, Any]) -> tuple[Any, ...]:
    names = ("event_id", "experiment_id", "customer_id", "variant", "score", "decision", "model_version")
    return (*(record[n] for n in names), record["first_exposure"], record["event_ts"], record["pre_period_purchases"])


def _attribution_key(a: Attribution) -> tuple[Any, ...]:
    return (a.experiment_id, a.outcome.customer_id, a.variant, a.outcome.event_id, (a.outcome.ts - a.exposure_ts) / 1e3)


def _emitted_attribution_key(record: Mapping[str, Any]) -> tuple[Any, ...]:
    names = ("experiment_id", "customer_id", "variant", "event_id", "seconds_since_exposure")
    return tuple(record[n] for n in names)


class _Reference:
    """The same events folded through the core functions alone."""

    def __init__(self, views: list[ExperimentView]) -> None:
        self.views = {v.id: v for v in views}
        self.states: dict[str, CustomerState] = {}
        self.timers: set[tuple[int, str]] = set()
        self.out: list[tuple[str, tuple[Any, ...]]] = []
        self.counts: Counter[str] = Counter()

    def session(self, session: events.Session) -> None:
        arms = decide_session(
            session.customer_id, session.features, self.views.values(), lambda v: arm_scorers(v, _scorer_of)
        )
        assigned = [arm for arm in arms if isinstance(arm, Assigned)]
        if not assigned:
            return
        state = self.states.get(session.customer_id, CustomerState())
        result = record_session(state, session, assigned)
        self.states[session.customer_id] = result.state
        for item in result.exposed:
            arm = item.arm
            record = events.assignment_record(
                event_id=session.event_id, experiment_id=arm.view.id, experiment_version=1,
                customer_id=session.customer_id, variant=arm.variant, score=arm.score, decision=arm.decision,
                model_version=arm.spec.model_version if arm.spec is not None else None, first_exposure=item.first,
                event_ts=session.ts, decided_ts=0, pre_period_purchases=item.exposure.pre_period_purchases,
            )  # fmt: skip
            self.out.append(("a", _assignment_key(record)))
            self.out.extend(("ao", _attribution_key(late)) for late in item.late)
            self.counts["late_outcomes"] += len(item.late)
            self.counts["first_exposures"] += item.first

    def outcome(self, outcome: events.Outcome, now: int) -> None:
        state = self.states.get(outcome.customer_id, CustomerState())
        result = record_outcome(state, outcome, self.views, hold_ms=HOLD_MS, now=lambda: now)
        self.states[outcome.customer_id] = result.state
        self.out.extend(("ao", _attribution_key(a)) for a in result.attributed)
        if result.held_until is not None:
            self.timers.add((result.held_until, outcome.customer_id))
            self.counts["orphan_outcomes_held"] += result.orphan

    def timer(self, ts: int, customer: str) -> None:
        result = expire_held(self.states.get(customer, CustomerState()), ts)
        self.states[customer] = result.state
        self.counts["orphan_outcomes_expired"] += result.orphans


_events = st.lists(
    st.one_of(
        st.tuples(st.just("session"), st.sampled_from(CUSTOMERS), st.integers(0, 5_000), st.integers(0, 12)),
        st.tuples(st.just("outcome"), st.sampled_from(CUSTOMERS), st.integers(0, 5_000), st.just(0)),
        st.tuples(st.just("advance"), st.just(""), st.integers(0, 1_500), st.just(0)),
        st.tuples(st.just("restore"), st.just(""), st.just(0), st.just(0)),
    ),
    min_size=8,
    max_size=80,
)


@settings(max_examples=250, deadline=None)
@given(st.lists(st.sampled_from(sorted(VIEWS)), unique=True, max_size=len(VIEWS)), _events)
def test_the_adapter_does_what_the_core_says(view_ids: list[str], steps: list[tuple[str, str, int, int]]) -> None:
    views = [VIEWS[exp_id] for exp_id in view_ids]
    backend = _Backend()
    function = _function(views, backend)
    reference = _Reference(views)
    emitted: list[tuple[str, tuple[Any, ...]]] = []

    def collect(rows: list[Any]) -> None:
        for topic, _key, value in rows:
            record = json.loads(value)
            assert topic in (TOPICS.assignments, TOPICS.attributed_outcomes, TOPICS.experiment_health), record
            if topic == TOPICS.assignments:
                emitted.append(("a", _assignment_key(record)))
            elif topic == TOPICS.attributed_outcomes:
                emitted.append(("ao", _emitted_attribution_key(record)))

    for n, (kind, customer, value, cat1) in enumerate(steps):
        if kind == "session":
            features = {"age": 30, "man": 1, "woman": 0, "cat1": cat1, "cat2": 1, "cat3": 0}
            raw = events.session_json(f"s{n}", customer, value, features).encode()
            backend.key = customer
            collect(list(function.process_element((raw, TOPICS.sessions, 0, n), backend)))
            reference.session(events.parse_session(raw, feature_names=NAMES))
        elif kind == "outcome":
            raw = events.outcome_json(f"o{n}", customer, value, "cat1", 10.0).encode()
            backend.key = customer
            collect(list(function.process_element((raw, TOPICS.outcomes, 0, n), backend)))
            reference.outcome(events.parse_outcome(raw), backend.now)
        elif kind == "advance":  # processing time passes: due timers fire in time order, as Flink fires them
            backend.now += value
            for ts, key in sorted(t for t in backend.timers if t[0] <= backend.now):
                backend.timers.discard((ts, key))
                backend.key = key
                collect(list(function.on_timer(ts, backend)))
                reference.timer(ts, key)
                reference.timers.discard((ts, key))
        else:  # a restore: the cache is gone, the state comes back from its pickled tuples
            function._cache.clear()
        assert backend.timers == reference.timers

    assert emitted == reference.out
    for customer, state in reference.states.items():
        backend.key = customer
        stored = backend.value()
        assert (CustomerState() if stored is None else CustomerState.from_state(stored)) == state
    assert function._metrics is not None
    function._metrics.flush()
    totals = function._metrics.totals
    for name in ("late_outcomes", "first_exposures"):
        assert sum(n for (exp_id, counter), n in totals.items() if exp_id and counter == name) == reference.counts[name]
    for name in ("orphan_outcomes_held", "orphan_outcomes_expired"):
        assert totals[("", name)] == reference.counts[name]
