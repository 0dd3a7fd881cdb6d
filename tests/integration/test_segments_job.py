"""Segments from the real job to the store: real broker, real MiniCluster, real PMML, the real collector.

Customers of five known profiles (ages on and beside band edges, each gender, purchase histories in every tier, a
fractional attribute) come twice, the second time with other features: their first-exposure record must carry the
segments of the first session, every later record null, and `segment_stats` must count each customer in the segments
of the first exposure, with the purchases they made.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from experiment.core import events
from experiment.core.assignment import assign
from experiment.kafka.topics import ensure_topics
from experiment.results.collector import collect
from experiment.results.store import ResultsStore
from experiment.runtime.config import load_settings
from tests.helpers.flink_job import definition, produce, publish, read_until, running_job, session_raw, warm_up

pytestmark = [pytest.mark.kafka, pytest.mark.flink, pytest.mark.e2e, pytest.mark.slow]

T0 = 1_700_000_000_000
CUSTOMERS = 40
PROBE = "probe-0"

#: (features of the first session beyond zeros, the segments its first exposure must carry), by hand.
PROFILES: list[tuple[dict[str, float], dict[str, str]]] = [
    (
        {"age": 30.0, "woman": 1.0, "cat3": 2.0},
        {"age_band": "25-34", "gender": "woman", "customer_type": "returning", "history_tier": "1-2", "cat3": "2"},
    ),
    (
        {"age": 70.0, "man": 1.0},
        {"age_band": "65+", "gender": "man", "customer_type": "new", "history_tier": "0", "cat3": "0"},
    ),
    (
        {"age": 17.0, "cat1": 5.0, "cat2": 7.0},
        {"age_band": "18-24", "gender": "unstated", "customer_type": "returning", "history_tier": "10+", "cat3": "0"},
    ),
    (
        {"age": 45.0, "woman": 1.0, "cat3": 1.0, "cat5": 3.0},
        {"age_band": "45-54", "gender": "woman", "customer_type": "returning", "history_tier": "3-9", "cat3": "1"},
    ),
    (
        {"age": 34.5, "man": 1.0, "cat3": 0.5},  # purchases 0.5: the covariate is the whole count, 0
        {"age_band": "25-34", "gender": "man", "customer_type": "new", "history_tier": "0", "cat3": "0.5"},
    ),
]
#: The warm-up probe: every feature 0.
PROBE_SEGMENTS = {"age_band": "18-24", "gender": "unstated", "customer_type": "new", "history_tier": "0", "cat3": "0"}
#: Every second session: an older man with a long history; it must change nobody's segments.
LATER = {"age": 80.0, "man": 1.0, "woman": 0.0, "cat3": 9.0, "cat4": 20.0}


def _buys(i: int) -> bool:
    return i % 3 == 0


def mine(records: dict[str, list[dict]]) -> list[dict]:
    """The assignments of this test's customers (not the warm-up probe's)."""
    return [a for a in records["assignments"] if a["customer_id"].startswith("cust-")]


def test_first_exposures_carry_their_segments_and_the_store_groups_by_them(
    job_model, kafka_broker, tmp_path: Path
) -> None:
    kafka = replace(kafka_broker, topic_prefix=f"t-segments-{random.randrange(16**8):08x}.")
    ensure_topics(kafka)
    group = f"g-segments-{random.randrange(16**8):08x}"
    pmml, version, features = str(job_model.pmml), job_model.version, job_model.features
    experiment = definition("exp-seg", pmml, version, features, segment_attributes=("cat3",))
    publish(kafka, experiment)

    zeros = dict.fromkeys(features, 0.0)
    sessions, purchases = [], []
    for i in range(CUSTOMERS):
        customer, ts = f"cust-{i}", T0 + i * 1_000
        sessions.append(session_raw(f"s-{i}-0", customer, ts, zeros | PROFILES[i % len(PROFILES)][0]))
        sessions.append(session_raw(f"s-{i}-1", customer, ts + 60_000, zeros | LATER))
        if _buys(i):
            outcome = events.outcome_json(f"o-{i}", customer, ts + 120_000, "cat61", float(10 + i))
            purchases.append((customer.encode(), outcome.encode()))

    with running_job(kafka, group, categories=job_model.categories, reference_rows=str(job_model.data_dir)):
        warm_up(kafka, PROBE, features, expected=1)
        produce(kafka, "sessions", sessions)
        read_until(kafka, ["assignments"], lambda r: len(mine(r)) >= 2 * CUSTOMERS, timeout_s=90)
        produce(kafka, "outcomes", purchases)  # after every exposure: none is held, none is pre-period
        out = read_until(
            kafka,
            ["assignments", "attributed-outcomes"],
            lambda r: len(r["attributed-outcomes"]) >= len(purchases),
            timeout_s=90,
        )
        store_path = tmp_path / "results.duckdb"
        stats = collect(replace(load_settings(), kafka=kafka), str(store_path), timeout_s=120)

    # The job: the first exposure carries the first session's segments, every later exposure null.
    records = mine(out)
    assert Counter(r["first_exposure"] for r in records) == {True: CUSTOMERS, False: CUSTOMERS}
    for r in records:
        i, n = (int(part) for part in r["event_id"][2:].split("-"))
        if n == 0:
            assert r["first_exposure"] is True
            assert r["segments"] == PROFILES[i % len(PROFILES)][1], r
        else:
            assert r["first_exposure"] is False and r["segments"] is None, r
    probe_first = [a for a in out["assignments"] if a["customer_id"] == PROBE and a["first_exposure"]]
    assert [a["segments"] for a in probe_first] == [PROBE_SEGMENTS]
    assert len(out["attributed-outcomes"]) == len(purchases)

    # The collector stores them as the job wrote them; the store groups every customer by their first exposure.
    assert stats.skipped == 0 and stats.caught_up
    variants = {f"cust-{i}": assign(experiment.salt, f"cust-{i}", 1.0, experiment.weights()) for i in range(CUSTOMERS)}
    variants[PROBE] = assign(experiment.salt, PROBE, 1.0, experiment.weights())
    expected_users: dict[str, Counter[tuple[str, str]]] = {}
    expected_conversions: dict[str, Counter[tuple[str, str]]] = {}
    for customer, variant in variants.items():
        i = None if customer == PROBE else int(customer.split("-")[1])
        segments = PROBE_SEGMENTS if i is None else PROFILES[i % len(PROFILES)][1]
        for dimension, value in segments.items():
            expected_users.setdefault(dimension, Counter())[(value, str(variant))] += 1
            if i is not None and _buys(i):
                expected_conversions.setdefault(dimension, Counter())[(value, str(variant))] += 1
    with ResultsStore(store_path, read_only=True) as store:
        stored = dict(
            store.con.execute(
                "SELECT event_id, segments FROM assignments WHERE customer_id LIKE 'cust-%' ORDER BY event_id"
            ).fetchall()
        )
        assert {k: None if v is None else json.loads(v) for k, v in stored.items()} == {
            r["event_id"]: r["segments"] for r in records
        }
        assert store.segment_dimensions(experiment.id) == [
            "age_band",
            "gender",
            "customer_type",
            "history_tier",
            "cat3",
        ]
        overall = store.variant_stats(experiment.id)
        for dimension in store.segment_dimensions(experiment.id):
            split = store.segment_stats(experiment.id, dimension)
            users = Counter({(s, v): x.users for s, d in split.items() for v, x in d.items() if x.users})
            conversions = Counter(
                {(s, v): x.conversions for s, d in split.items() for v, x in d.items() if x.conversions}
            )
            assert users == expected_users[dimension], dimension
            assert conversions == expected_conversions[dimension], dimension
            assert "unknown" not in split
            for variant, total in overall.items():
                assert sum(d[variant].revenue_cents_sum for d in split.values()) == total.revenue_cents_sum
        assert sum(x.revenue_cents_sum for x in overall.values()) == sum(
            (10 + i) * 100 for i in range(CUSTOMERS) if _buys(i)
        )
