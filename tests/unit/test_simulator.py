"""Unit tests of the simulator's pure parts: rate limiting (injected clock), population, true lift, events."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from data import ground_truth
from experiment.cli.main import app
from experiment.core import events
from experiment.core.assignment import assign
from experiment.core.errors import ConfigError
from experiment.core.view import ExperimentView
from experiment.simulation.simulator import (
    MALFORMED_KINDS,
    SimulationConfig,
    TokenBucket,
    build_population,
    malformed_count,
    malformed_payload,
    plan_events,
    send_plan,
    simulate,
    true_lift,
)

FEATURES = events.default_feature_names(60)
WINDOW_MS = 7 * 86_400_000


class FakeClock:
    """A clock that only moves when someone sleeps: rate limiting is tested without real waiting."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds
        self.slept += seconds


class TruthScorer:
    """The ground truth's own interest q(x) as the model: a real, exact scorer (the 'oracle model')."""

    feature_names = FEATURES

    def score_batch(self, features: np.ndarray) -> np.ndarray:
        return ground_truth.label_probability(pd.DataFrame(features, columns=list(self.feature_names)))


def _view(traffic: float = 1.0, threshold: float = 0.4, weights=(("control", 0.5), ("treatment", 0.5))):
    return ExperimentView(
        id="exp-1",
        version=1,
        status="running",
        salt="exp-1",
        traffic=traffic,
        weights=tuple(weights),
        control="control",
        threshold=threshold,
        pmml_path="model.pmml",
        model_version="0" * 64,
        features=FEATURES,
        attribution_window_ms=WINDOW_MS,
    )


# ------------------------------------------------------------------ rate limiting


def test_token_bucket_never_lets_more_than_rate_times_elapsed() -> None:
    clock = FakeClock()
    bucket = TokenBucket(200.0, clock=clock, sleep=clock.sleep)
    start = clock()
    for taken in range(1, 2_001):
        bucket.acquire(1)
        assert taken <= 200.0 * (clock() - start) + 1e-6
    # 2000 events at 200/s take 10 s of (fake) time, not less, and hardly more.
    assert clock() - start == pytest.approx(10.0, abs=0.01)


def test_send_plan_respects_rate_duration_and_reports_progress() -> None:
    clock = FakeClock()
    sent_at: list[float] = []
    seen: list[tuple[int, int]] = []
    n, elapsed = send_plan(
        list(range(10_000)),
        lambda _e: sent_at.append(clock()),
        rate=1_000.0,
        duration_s=4.0,
        progress=lambda s, t: seen.append((s, t)),
        clock=clock,
        sleep=clock.sleep,
    )
    assert 3_900 <= n <= 4_050  # stopped by --duration: about 4 s x 1000/s
    assert len(sent_at) == n
    start = 1_000.0
    for count, t in enumerate(sent_at, start=1):
        assert count <= 1_000.0 * (t - start) + 1e-6
    assert seen[-1] == (n, 10_000)
    assert elapsed == pytest.approx(clock() - start)


def test_send_plan_sends_everything_when_no_duration() -> None:
    clock = FakeClock()
    got: list[int] = []
    n, elapsed = send_plan(list(range(333)), got.append, rate=100.0, clock=clock, sleep=clock.sleep)
    assert n == 333 and got == list(range(333))
    assert elapsed >= 3.33 - 1e-9


def test_bad_rate_is_rejected() -> None:
    with pytest.raises(ConfigError, match="rate"):
        TokenBucket(0.0)


# ------------------------------------------------------------------ malformed events


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_every_malformed_kind_fails_the_jobs_validation(kind: str) -> None:
    topic, payload = malformed_payload(kind, 7, feature_names=FEATURES, ts=1_700_000_000_000)  # type: ignore[arg-type]
    parse = (
        (lambda raw: events.parse_session(raw, feature_names=FEATURES))
        if topic == "sessions"
        else (lambda raw: events.parse_outcome(raw))
    )  # as the job parses: any catN is a valid category
    with pytest.raises(events.InvalidEvent) as info:
        parse(payload)
    expected = {
        "invalid_json": "invalid JSON",
        "non_utf8": "not UTF-8",
        "missing_field": "missing field",
        "extra_field": "unexpected field",
        "wrong_type": "must be an integer",
        "negative_count": "must be >= 0",
        "unknown_feature": "unknown feature key",
        "unknown_category": "unknown category key",
        "negative_revenue": "'revenue' must be >= 0",
        "oversized": "oversized payload",
    }[kind]
    assert expected in info.value.reason


@pytest.mark.parametrize(("valid", "fraction", "bad"), [(990, 0.01, 10), (1000, 0.0, 0), (900, 0.1, 100), (3, 0.5, 3)])
def test_malformed_count_is_that_fraction_of_everything_sent(valid: int, fraction: float, bad: int) -> None:
    assert malformed_count(valid, fraction) == bad
    if valid + bad:
        assert bad / (valid + bad) == pytest.approx(fraction, abs=0.5 / (valid + bad) + 1e-12)


def test_malformed_fraction_must_be_below_one() -> None:
    with pytest.raises(ConfigError, match=r"--malformed"):
        malformed_count(10, 1.0)


# ------------------------------------------------------------------ population and truth


@pytest.fixture(scope="module")
def population():
    return build_population(_view(), TruthScorer(), customers=4_000, seed=11)


def test_population_assigns_and_decides_exactly_like_the_job(population) -> None:
    view = _view()
    assert population.variant == [assign(view.salt, cid, 1.0, view.weights) for cid in population.ids]
    treatment = np.array([v == "treatment" for v in population.variant])
    expected_scores = ground_truth.label_probability(population.features)
    np.testing.assert_allclose(population.score, expected_scores, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(population.shown, treatment & (expected_scores >= 0.4))
    assert not population.shown[~treatment].any()
    sizes = population.customers_per_variant()
    assert sum(sizes.values()) == 4_000 and abs(sizes["control"] - 2_000) < 150


def test_population_is_deterministic_and_seed_specific(population) -> None:
    again = build_population(_view(), TruthScorer(), customers=4_000, seed=11)
    np.testing.assert_array_equal(again.converted, population.converted)
    np.testing.assert_array_equal(again.revenue, population.revenue)
    other = build_population(_view(), TruthScorer(), customers=4_000, seed=12)
    assert not set(other.ids) & set(population.ids)


def test_true_lift_is_the_exact_ground_truth_expectation(population) -> None:
    lift = true_lift(population)
    p0, p1 = ground_truth.true_conversion_probs(population.features)
    policy = ground_truth.label_probability(population.features) >= 0.4
    assert lift.control_rate == pytest.approx(p0.mean(), rel=1e-12)
    assert lift.treatment_rate == pytest.approx(np.where(policy, p1, p0).mean(), rel=1e-12)
    assert lift.abs_lift == pytest.approx(lift.treatment_rate - lift.control_rate, rel=1e-12)
    assert lift.rel_lift == pytest.approx(lift.abs_lift / lift.control_rate, rel=1e-12)
    # Showing only to customers above the break-even interest q = 0.4/1.4 must help on average.
    assert lift.abs_lift > 0


def test_nobody_shown_means_zero_true_lift() -> None:
    pop = build_population(_view(threshold=1.1), TruthScorer(), customers=500, seed=3)
    assert not pop.shown.any()
    assert true_lift(pop).abs_lift == 0.0


def test_drawn_conversions_follow_the_truth_monte_carlo() -> None:
    pop = build_population(_view(), TruthScorer(), customers=40_000, seed=5)
    expected = np.where(pop.shown, pop.p1, pop.p0)
    n = len(expected)
    se = np.sqrt(np.sum(expected * (1 - expected))) / n
    assert abs(pop.converted.mean() - expected.mean()) < 4 * se
    assert (pop.revenue[pop.converted] > 0).all() and (pop.revenue[~pop.converted] == 0).all()


def test_reported_interval_covers_the_true_lift_95_percent_of_the_time() -> None:
    """The simulator's truth and the report's interval agree: over many salts (new splits) and seeds (new draws),
    the 95% CI of the conversion difference covers `true_lift` in about 95% of runs; a bias in either would show
    here as a miss rate far from 5% (300 runs: P(misses outside 5..27 | 5%) < 0.002)."""
    from dataclasses import replace

    from experiment.stats.proportions import compare_proportions
    from experiment.stats.sufficient import VariantStats

    misses = 0
    for run in range(300):
        pop = build_population(replace(_view(), salt=f"cover-{run}"), TruthScorer(), customers=2_000, seed=100 + run)
        arms = np.array([v or "" for v in pop.variant])
        stats = {
            arm: VariantStats(users=int((arms == arm).sum()), conversions=int(pop.converted[arms == arm].sum()))
            for arm in ("control", "treatment")
        }
        ci = compare_proportions(stats["control"], stats["treatment"]).abs_ci
        assert ci is not None
        misses += not ci.contains(true_lift(pop).abs_lift)
    assert 5 <= misses <= 27, misses


def test_traffic_below_one_leaves_customers_out() -> None:
    pop = build_population(_view(traffic=0.3), TruthScorer(), customers=3_000, seed=2)
    inside = pop.in_experiment
    assert 0.25 < inside.mean() < 0.35
    assert not pop.shown[~inside].any()
    assert true_lift(pop).customers == int(inside.sum())


# ------------------------------------------------------------------ the event plan


def test_plan_orders_events_and_attributes_every_purchase(population) -> None:
    config = SimulationConfig(customers=4_000, rate=1.0, seed=11, malformed=0.02)
    plan = plan_events(population, config, attribution_window_ms=WINDOW_MS, now_ms=1_800_000_000_000)
    times = [e.ts for e in plan.events]
    assert times == sorted(times)
    first: dict[int, int] = {}
    sessions = outcomes = bad = 0
    for event in plan.events:
        topic, key, value = plan.message(event)
        if event.kind == "session":
            sessions += 1
            session = events.parse_session(value, feature_names=FEATURES)
            assert topic == "sessions" and key.decode() == session.customer_id
            first.setdefault(event.customer, session.ts)
        elif event.kind == "outcome":
            outcomes += 1
            outcome = events.parse_outcome(value)
            assert event.customer in first, "a purchase was sent before the customer's first session"
            assert first[event.customer] < outcome.ts <= first[event.customer] + WINDOW_MS
            assert outcome.revenue == population.revenue[event.customer] > 0
        else:
            bad += 1
    assert len(first) == 4_000
    assert outcomes == int(population.converted.sum())
    assert sessions > 4_000 * 1.5  # customers come back (mean 2.5 sessions)
    assert bad == malformed_count(sessions + outcomes, 0.02)
    assert max(times) <= 1_800_000_000_000  # nothing in the future


def test_session_bytes_equal_the_schema_builder(population) -> None:
    plan = plan_events(
        population,
        SimulationConfig(customers=4_000, rate=1.0, seed=11),
        attribution_window_ms=WINDOW_MS,
        now_ms=1_800_000_000_000,
    )
    for event in [e for e in plan.events if e.kind == "session"][:200]:
        _topic, _key, value = plan.message(event)
        cid = population.ids[event.customer]
        features = dict(zip(FEATURES, population.features.loc[cid].tolist(), strict=True))
        assert value == events.session_json(f"{cid}-s{event.k}", cid, event.ts, features).encode()


# ------------------------------------------------------------------ CLI


def test_cli_rejects_a_bad_fraction_before_touching_kafka() -> None:
    result = CliRunner().invoke(app, ["simulate", "--experiment", "x", "--rate", "10", "--malformed", "1.5"])
    assert result.exit_code == 2
    assert "--malformed must be a fraction in [0, 1). Got 1.5." in result.output


def test_cli_help_lists_the_options() -> None:
    result = CliRunner().invoke(app, ["simulate", "--help"])
    assert result.exit_code == 0
    for option in ("--experiment", "--customers", "--rate", "--duration", "--seed", "--malformed"):
        assert option in result.output


def test_result_json_round_trips(population) -> None:
    from experiment.simulation.simulator import _summarise

    plan = plan_events(
        population,
        SimulationConfig(customers=4_000, rate=1.0, seed=11, malformed=0.01),
        attribution_window_ms=WINDOW_MS,
        now_ms=1_800_000_000_000,
    )
    result = _summarise(plan, len(plan), 2.0, SimulationConfig(customers=4_000, rate=1.0), {})
    data = json.loads(json.dumps(result.as_dict()))
    assert data["customers_per_variant"] == population.customers_per_variant()
    assert data["malformed_sent"] == sum(data["malformed_by_kind"].values()) > 0
    assert data["true_lift"]["abs_lift"] == pytest.approx(true_lift(population).abs_lift)


# ------------------------------------------------------------------ the Kafka-free run loop


def test_simulate_hands_every_planned_message_to_send_and_reports_it() -> None:
    clock = FakeClock()
    sent: list[tuple[str, bytes, bytes]] = []
    config = SimulationConfig(customers=300, rate=10_000.0, seed=4, malformed=0.05, start_ms=1_700_000_000_000)
    result = simulate(
        _view(), TruthScorer(), config, lambda *message: sent.append(message), clock=clock, sleep=clock.sleep
    )
    assert result.completed and result.events_sent == len(sent) == result.events_planned
    topics = [topic for topic, _key, _value in sent]
    assert topics.count("sessions") == result.sessions_sent + result.malformed_by_topic.get("sessions", 0)
    assert topics.count("outcomes") == result.outcomes_sent + result.malformed_by_topic.get("outcomes", 0)
    population = build_population(_view(), TruthScorer(), customers=300, seed=4)
    assert result.customers_per_variant == population.customers_per_variant()
    assert result.shown_customers == int(population.shown.sum())


def test_the_simulator_needs_neither_kafka_nor_the_job() -> None:
    """Pure: its Kafka edge lives in `experiment.cli.simulate_io`."""
    code = (
        "import sys, experiment.simulation.simulator; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'kafka', 'flink_pipeline', 'pyflink'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
