"""A record that fails part-way through `DecideFunction` leaves no trace but its dead letter.

Found by the hostile-input fault test: a session the job accepted but could not write (its assignment failed to
serialise) had already recorded the customer's first exposure in the in-memory cache, so every later session of
that real customer was decided as a returning one, from an exposure no assignment record shows, or failed in
turn. Processing is now all or nothing: the function emits a record's outputs only once all of them are built, and
an unexpected failure drops the customer from the cache (the state backend holds the last saved version).

The function runs here without Flink: fake keyed state, metric group and context; scorers replaced per experiment.
"""

from __future__ import annotations

import json
import time
from typing import Any

from experiment.core import events
from experiment.core.assignment import assign
from experiment.core.definition import ExperimentDefinition, ModelRef
from experiment.core.view import ArmSpec, ExperimentView, parse_definition
from experiment.runtime.config import load_settings
from flink_pipeline.functions import DecideFunction, _Metrics
from flink_pipeline.job import job_topics
from tests.helpers.null_metrics import NullMetricGroup

NAMES = events.default_feature_names(3)
TOPICS = job_topics(load_settings())


class _State:
    def __init__(self) -> None:
        self.saved: Any = None

    def value(self) -> Any:
        return self.saved

    def update(self, value: Any) -> None:
        self.saved = value


class _Ctx:
    def __init__(self, key: str) -> None:
        self.key = key

    def get_current_key(self) -> str:
        return self.key


class _Scorer:
    kind = "fake"

    def __init__(self) -> None:
        self.fail = False

    def score_one(self, features: Any) -> float:
        if self.fail:
            raise RuntimeError("boom")
        return 0.7


class _Decide(DecideFunction):
    """The real function with one scorer per experiment, so a test can make one experiment's scoring fail."""

    scorers: dict[str, _Scorer]

    def _scorer(self, view: ExperimentView, spec: ArmSpec) -> Any:
        return self.scorers[view.id]


def _view(exp_id: str) -> ExperimentView:
    now = int(time.time() * 1000)
    draft = ExperimentDefinition.new(
        id=exp_id,
        name=exp_id,
        hypothesis="h",
        owner="tests",
        category="cat61",
        model=ModelRef(pmml_path=f"{exp_id}.pmml", model_version="0" * 64, features=NAMES),
        threshold=0.5,
        now_ms=now,
    )
    return parse_definition(draft.transition("launch", now).to_json())


def _function(views: list[ExperimentView]) -> _Decide:
    function = _Decide(
        TOPICS, feature_names=NAMES, max_bytes=events.DEFAULT_MAX_BYTES, hold_ms=1_000, state_ttl_ms=10**9,
        reference_rows=None, scorer_fallback=False,
    )  # fmt: skip
    function._state = _State()
    function._metrics = _Metrics(NullMetricGroup())
    function._views = {v.id: v for v in views}
    function._views_loaded = True
    function.scorers = {v.id: _Scorer() for v in views}
    return function


def _session(event_id: str, customer: str, ts: int) -> Any:
    raw = events.session_json(event_id, customer, ts, dict.fromkeys(NAMES, 1.0)).encode()
    return (raw, TOPICS.sessions, 0, ts)


def _assignments(rows: list[Any]) -> list[dict]:
    return [json.loads(row[2]) for row in rows if row[0] == TOPICS.assignments]


def test_a_session_that_fails_part_way_emits_only_its_dead_letter_and_changes_no_customer() -> None:
    first, second = _view("atomic-a"), _view("atomic-b")
    # A customer scored in the second experiment, so the failure comes after the first one has been decided.
    customer = next(
        c
        for c in (f"c{i}" for i in range(1_000))
        if assign(second.salt, c, second.traffic, second.weights) == "treatment"
    )
    function = _function([first, second])
    function.scorers[second.id].fail = True

    rows = list(function.process_element(_session("s1", customer, 100), _Ctx(customer)))
    assert [row[0] for row in rows] == [TOPICS.dead_letter]
    assert json.loads(rows[0][2])["error"] == "unexpected RuntimeError: boom"
    assert customer not in function._cache and function._state.saved is None

    function.scorers[second.id].fail = False
    rows = list(function.process_element(_session("s2", customer, 200), _Ctx(customer)))
    decided = _assignments(rows)
    assert {a["experiment_id"] for a in decided} == {first.id, second.id}
    assert all(a["first_exposure"] is True and a["event_ts"] == 200 for a in decided), decided
