"""The job's decision rules, pure (`experiment.core.decisions`): one table per rule, no Flink, milliseconds.

Arms are pinned by weights instead of by searching customer ids: weights (1, 0) put everyone in the control and
(0, 1) everyone in the treatment, and traffic 0 leaves everyone out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from experiment.core.decisions import (
    ArmScorers,
    Assigned,
    Attribution,
    CustomerState,
    Exposure,
    HeldOutcome,
    Skipped,
    arm_scorers,
    decide,
    decide_many,
    decide_session,
    expire_held,
    in_window,
    must_hold,
    pre_period,
    record_outcome,
    record_session,
)
from experiment.core.events import Outcome, Session
from experiment.core.view import ExperimentView
from tests.helpers.fixed_model import Fixed

CONTROL = (("control", 1.0), ("treatment", 0.0))
TREATMENT = (("control", 0.0), ("treatment", 1.0))


def view(
    exp_id: str = "e1",
    *,
    status: str = "running",
    weights: tuple[tuple[str, float], ...] = TREATMENT,
    traffic: float = 1.0,
    threshold: float = 0.5,
    window_ms: int = 1_000,
) -> ExperimentView:
    return ExperimentView(
        id=exp_id, version=1, status=status, salt=exp_id, traffic=traffic, weights=weights, control="control",
        threshold=threshold, pmml_path="m.pmml", model_version="0" * 64, features=("age",),
        attribution_window_ms=window_ms,
    )  # fmt: skip


def same(model: Fixed) -> Callable[[ExperimentView], ArmScorers | None]:
    """Every scored arm of every experiment on `model` (what `decide_session` asks for)."""
    return lambda v: arm_scorers(v, lambda _v, _spec: model)


def session(ts: int = 100, purchases: int = 0, customer: str = "c1") -> Session:
    return Session(f"s{ts}", customer, ts, {"age": 30.0}, purchases)


def outcome(ts: int, event_id: str | None = None, customer: str = "c1") -> Outcome:
    return Outcome(event_id or f"o{ts}", customer, ts, "purchase", "cat1", 10.0)


def exposed(*views: ExperimentView, ts: int = 100, state: CustomerState | None = None) -> CustomerState:
    """The state after one session at `ts` assigned by every view in `views`."""
    arms = decide_session("c1", {}, views, same(Fixed(0.9)))
    return record_session(state or CustomerState(), session(ts), arms).state


# ------------------------------------------------------------------ show iff scored and score >= threshold


@pytest.mark.parametrize(
    ("score", "threshold", "scored", "expected"),
    [
        (None, 0.5, False, "hide"),  # the control: never scored, always hidden
        (0.99, 0.5, False, "hide"),  # an unscored arm stays hidden whatever a score says
        (0.5, 0.5, True, "show"),  # the threshold itself shows
        (math.nextafter(0.5, 0.0), 0.5, True, "hide"),
        (0.7, 0.5, True, "show"),
        (0.0, 0.0, True, "show"),
        (1.0, 1.01, True, "hide"),  # a threshold above 1 shows nobody
    ],
)  # fmt: skip
def test_decide(score: float | None, threshold: float, scored: bool, expected: str) -> None:
    assert decide(score, threshold, scored) == expected


@pytest.mark.parametrize("score", [math.nan, math.inf, -math.inf, None])
def test_a_scored_arm_needs_a_finite_score(score: float | None) -> None:
    with pytest.raises(ValueError, match=r"^Out of range float values are not JSON compliant: score="):
        decide(score, 0.5, True)


_scores = st.one_of(st.floats(0, 1), st.sampled_from([0.5, math.nextafter(0.5, 0), math.nextafter(0.5, 1), 0.0]))


@settings(max_examples=300, deadline=None)
@given(
    hnp.arrays(np.float64, st.integers(0, 40), elements=_scores),
    st.data(),
    st.sampled_from([0.0, 0.5, 1.0, 0.3]),
)
def test_the_array_rule_is_the_scalar_rule(scores: np.ndarray, data: st.DataObject, threshold: float) -> None:
    scored = data.draw(hnp.arrays(np.bool_, len(scores)))
    shown = decide_many(scores, threshold, scored)
    expected = [
        decide(float(s) if k else None, threshold, bool(k)) == "show" for s, k in zip(scores, scored, strict=True)
    ]
    assert shown.dtype == np.bool_ and shown.tolist() == expected


def test_the_array_rule_ignores_unscored_scores_and_refuses_scored_non_finite_ones() -> None:
    scores = np.array([np.nan, 0.7, np.inf])
    assert decide_many(scores, 0.5, np.array([False, True, False])).tolist() == [False, True, False]
    with pytest.raises(ValueError, match="score=nan"):
        decide_many(scores, 0.5, np.array([True, True, False]))


# ------------------------------------------------------------------ who is assigned, scored, shown


@pytest.mark.parametrize(
    ("exp", "score", "expected", "model_calls"),
    [
        (view(status="paused"), 0.9, Skipped, 0),
        (view(status="stopped"), 0.9, Skipped, 0),
        (view(status="draft"), 0.9, Skipped, 0),
        (view(status="archived"), 0.9, Skipped, 0),
        (view(traffic=0.0), 0.9, Skipped, 0),
        (view(weights=CONTROL), 0.9, Assigned, 0),  # the control is never scored
        (view(), 0.7, Assigned, 1),
        (view(), 0.3, Assigned, 1),
    ],
)  # fmt: skip
def test_decide_session(exp: ExperimentView, score: float, expected: type, model_calls: int) -> None:
    model = Fixed(score)
    (arm,) = decide_session("c1", {"age": 30.0}, [exp], same(model))
    assert type(arm) is expected and model.calls == model_calls
    if isinstance(arm, Skipped):
        assert arm.reason == ("not_in_traffic" if exp.is_running else "not_running")
    else:
        treated = arm.variant == "treatment"
        assert arm.score == (score if treated else None)
        assert arm.decision == ("show" if treated and score >= exp.threshold else "hide")


def test_an_unusable_model_assigns_nobody_in_any_arm() -> None:
    asked: list[str] = []

    def scorer_of(v: ExperimentView) -> dict[str, Fixed] | None:
        asked.append(v.id)
        return None

    arms = decide_session("c1", {}, [view("c", weights=CONTROL), view("t"), view("p", status="paused")], scorer_of)
    assert [(arm.view.id, arm.reason) for arm in arms if isinstance(arm, Skipped)] == [
        ("c", "model_unusable"),
        ("t", "model_unusable"),
        ("p", "not_running"),
    ]
    assert asked == ["c", "t"]  # only running experiments need a model


def test_decide_session_keeps_the_order_of_the_views_and_refuses_a_non_finite_score() -> None:
    views = [view("b"), view("a", weights=CONTROL), view("c", traffic=0.0)]
    arms = decide_session("c1", {}, views, same(Fixed(0.6)))
    assert [(arm.view.id, type(arm).__name__) for arm in arms] == [
        ("b", "Assigned"),
        ("a", "Assigned"),
        ("c", "Skipped"),
    ]
    with pytest.raises(ValueError, match="score=nan"):
        decide_session("c1", {}, views, same(Fixed(math.nan)))


# ------------------------------------------------------------------ first exposure, kept forever


def test_the_first_exposure_is_recorded_and_kept_forever() -> None:
    exp = view()
    arms = decide_session("c1", {}, [exp], same(Fixed(0.9)))
    first = record_session(CustomerState(), session(ts=100, purchases=2), arms)
    assert first.changed and [(e.first, e.exposure) for e in first.exposed] == [(True, Exposure("treatment", 100, 2))]
    later = record_session(first.state, session(ts=500, purchases=7), arms)
    assert not later.changed and later.state is first.state
    assert [(e.first, e.exposure) for e in later.exposed] == [(False, Exposure("treatment", 100, 2))]
    # Even when the experiment now puts the customer elsewhere, the exposure (the analysis unit) stays the first.
    moved = decide_session("c1", {}, [view(weights=CONTROL)], same(Fixed(0.9)))
    again = record_session(first.state, session(ts=900), moved)
    assert again.exposed[0].arm.variant == "control" and again.exposed[0].exposure.variant == "treatment"


def test_a_session_sent_twice_is_decided_twice_but_exposes_the_customer_once() -> None:
    """At-least-once producers: a duplicate session gets a second assignment record, never a second first exposure."""
    exp = view()
    arms = decide_session("c1", {}, [exp], same(Fixed(0.9)))
    first = record_session(CustomerState(), session(ts=100, purchases=2), arms)
    duplicate = record_session(first.state, session(ts=100, purchases=2), arms)
    assert [e.first for e in first.exposed] == [True] and [e.first for e in duplicate.exposed] == [False]
    assert not duplicate.changed and duplicate.state is first.state
    assert duplicate.exposed[0].exposure == first.exposed[0].exposure == Exposure("treatment", 100, 2)


def test_skipped_experiments_leave_the_state_alone() -> None:
    state = CustomerState()
    arms = decide_session("c1", {}, [view(traffic=0.0), view("p", status="paused")], same(Fixed(0.9)))
    result = record_session(state, session(), arms)
    assert result.state is state and result.exposed == () and not result.changed


# ------------------------------------------------------------------ the CUPED pre-period


@pytest.mark.parametrize(
    ("session_purchases", "seen", "held_ts", "expected"),
    [
        (0, 0, [], 0),
        (3, 0, [], 3),  # the session's own purchase counts
        (0, 2, [], 2),  # purchases the job saw (no longer held)
        (0, 0, [99], 1),  # a held outcome before the exposure
        (0, 0, [100], 0),  # ... not one at the exposure time
        (0, 0, [101], 0),  # ... nor after it
        (1, 2, [50, 99, 100, 200], 5),
    ],
)  # fmt: skip
def test_pre_period(session_purchases: int, seen: int, held_ts: list[int], expected: int) -> None:
    state = CustomerState({}, seen, tuple(HeldOutcome(outcome(ts), 10_000) for ts in held_ts))
    assert pre_period(state, session(ts=100, purchases=session_purchases)) == expected
    arms = decide_session("c1", {}, [view()], same(Fixed(0.9)))
    result = record_session(state, session(ts=100, purchases=session_purchases), arms)
    assert result.exposed[0].exposure.pre_period_purchases == expected


# ------------------------------------------------------------------ the attribution window


@pytest.mark.parametrize(
    ("exposure_ts", "outcome_ts", "window_ms", "expected"),
    [
        (100, 100, 1_000, True),  # at the exposure
        (100, 1_100, 1_000, True),  # at the end of the window
        (100, 1_101, 1_000, False),  # after it
        (100, 99, 1_000, False),  # before the exposure
        (100, 100, 0, True),
    ],
)  # fmt: skip
def test_in_window(exposure_ts: int, outcome_ts: int, window_ms: int, expected: bool) -> None:
    assert in_window(Exposure("treatment", exposure_ts, 0), outcome_ts, window_ms) is expected


def _never() -> int:
    raise AssertionError("the processing time is read only to hold an outcome")


@pytest.mark.parametrize(
    ("outcome_ts", "attributed", "unattributed"),
    [
        (100, ["e1"], []),
        (1_100, ["e1"], []),
        (1_101, [], [("e1", "outside_window")]),
        (99, [], [("e1", "before_exposure")]),
    ],
)  # fmt: skip
def test_an_outcome_of_a_customer_every_running_experiment_has_exposed_is_counted_not_held(
    outcome_ts: int, attributed: list[str], unattributed: list[tuple[str, str]]
) -> None:
    exp = view(window_ms=1_000)
    state = exposed(exp, ts=100)
    result = record_outcome(state, outcome(outcome_ts), {exp.id: exp}, hold_ms=5_000, now=_never)
    assert [a.experiment_id for a in result.attributed] == attributed
    assert list(result.unattributed) == unattributed
    assert result.held_until is None and not result.orphan
    assert result.state.purchases == 1 and result.state.held == () and result.state.exposures == state.exposures


def test_an_attribution_carries_the_first_exposure() -> None:
    exp = view()
    state = exposed(exp, ts=100)
    (attribution,) = record_outcome(state, outcome(400), {exp.id: exp}, hold_ms=1, now=_never).attributed
    assert attribution == Attribution("e1", "treatment", 100, outcome(400))


def test_exposures_to_experiments_no_longer_known_are_ignored() -> None:
    state = exposed(view("gone"), ts=100)
    exp = view("e1")
    state = exposed(exp, ts=100, state=state)
    result = record_outcome(state, outcome(200), {exp.id: exp}, hold_ms=1, now=_never)
    assert [a.experiment_id for a in result.attributed] == ["e1"] and result.unattributed == ()


# ------------------------------------------------------------------ holding early outcomes


@pytest.mark.parametrize(
    ("views", "exposed_to", "held"),
    [
        ([], [], True),  # no definition yet (start-up): hold
        ([view("p", status="paused")], [], True),  # nothing runs: hold
        ([view("a")], [], True),  # a running experiment has not exposed the customer
        ([view("a"), view("b")], ["a"], True),  # one of two has not
        ([view("a"), view("b")], ["a", "b"], False),
        ([view("a"), view("p", status="paused")], ["a"], False),  # a paused experiment is not waited for
    ],
)  # fmt: skip
def test_must_hold(views: list[ExperimentView], exposed_to: list[str], held: bool) -> None:
    state = exposed(*[v for v in views if v.id in exposed_to])
    assert must_hold(state, views) is held
    result = record_outcome(state, outcome(150), {v.id: v for v in views}, hold_ms=600, now=lambda: 1_000)
    assert (result.held_until == 1_600) is held
    assert result.orphan is (held and not exposed_to)
    if held:
        assert result.state.purchases == 0
        assert result.state.held == (HeldOutcome(outcome(150), 1_600, frozenset(exposed_to)),)
    else:
        assert result.state.purchases == 1 and result.state.held == ()


def test_a_late_first_exposure_gets_the_held_outcomes_in_its_window() -> None:
    a, b = view("a", window_ms=1_000), view("b", window_ms=1_000)
    views = {"a": a, "b": b}
    state = exposed(a, ts=100)
    for ts in (150, 250, 1_400):  # b has not exposed the customer: all three are held (a gets the first two)
        state = record_outcome(state, outcome(ts), views, hold_ms=600, now=lambda: 7).state
    assert [sorted(item.attributed_to) for item in state.held] == [["a"], ["a"], []]
    arms = decide_session("c1", {}, [a, b], same(Fixed(0.9)))
    result = record_session(state, session(ts=200), arms)
    late = {e.arm.view.id: [x.outcome.ts for x in e.late] for e in result.exposed}
    assert late == {"a": [], "b": [250]}  # 150 is before b's exposure, 1400 after its window
    assert result.exposed[1].exposure.pre_period_purchases == 1  # the held outcome at 150
    assert [sorted(item.attributed_to) for item in result.state.held] == [["a"], ["a", "b"], []]


def test_two_first_exposures_in_one_session_each_get_a_held_outcome() -> None:
    a, b = view("a"), view("b")
    state = record_outcome(CustomerState(), outcome(300), {"a": a, "b": b}, hold_ms=600, now=lambda: 0).state
    result = record_session(state, session(ts=200), decide_session("c1", {}, [a, b], same(Fixed(0.9))))
    assert [[x.experiment_id for x in e.late] for e in result.exposed] == [["a"], ["b"]]
    assert result.state.held[0].attributed_to == frozenset({"a", "b"})


# ------------------------------------------------------------------ the end of a hold


@pytest.mark.parametrize(
    ("expires", "now", "expired", "orphans", "kept"),
    [
        ([(500, ())], 499, 0, 0, 1),
        ([(500, ())], 500, 1, 1, 0),  # due at its time
        ([(500, ("a",))], 600, 1, 0, 0),  # attributed: not an orphan
        ([(500, ()), (500, ("a",)), (900, ())], 700, 2, 1, 1),
    ],
)  # fmt: skip
def test_expire_held(
    expires: list[tuple[int, tuple[str, ...]]], now: int, expired: int, orphans: int, kept: int
) -> None:
    held = tuple(HeldOutcome(outcome(i), at, frozenset(ids)) for i, (at, ids) in enumerate(expires))
    state = CustomerState({}, 3, held)
    result = expire_held(state, now)
    assert (result.expired, result.orphans, len(result.state.held)) == (expired, orphans, kept)
    assert result.state.purchases == 3 + expired  # from now on they are pre-period purchases
    assert result.state.held == tuple(item for item in held if item.expires_at > now)
    if not expired:
        assert result.state is state


def test_an_expired_outcome_feeds_a_later_experiments_pre_period() -> None:
    a, b = view("a"), view("b")
    state = record_outcome(CustomerState(), outcome(50), {"a": a, "b": b}, hold_ms=600, now=lambda: 0).state
    state = expire_held(state, 600).state
    assert state.held == () and state.purchases == 1
    result = record_session(state, session(ts=40), decide_session("c1", {}, [a], same(Fixed(0.9))))
    assert result.exposed[0].late == ()  # no longer held: never attributed, even though it follows the exposure
    assert result.exposed[0].exposure.pre_period_purchases == 1


def test_no_function_changes_the_state_it_is_given() -> None:
    a = view("a")
    state = record_outcome(CustomerState(), outcome(150), {"a": a}, hold_ms=600, now=lambda: 0).state
    before: Any = state.to_state()
    record_session(state, session(ts=100), decide_session("c1", {}, [a], same(Fixed(0.9))))
    record_outcome(state, outcome(160), {"a": a}, hold_ms=600, now=lambda: 0)
    expire_held(state, 10_000)
    assert state.to_state() == before
