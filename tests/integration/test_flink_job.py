"""The decision job end to end: real broker, real MiniCluster, real PMML; every output record is checked.

One job run is shared by all assertions (module-scoped fixture): two running experiments (a 50/50 one at 80 %
traffic and a three-arm one) plus a paused one; ~1,500 sessions from 600 customers, bad sessions and outcomes of
every kind, and outcomes before, inside and after the attribution window, and orphans.
"""

from __future__ import annotations

import base64
import json
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from experiment.core import events
from experiment.core.assignment import assign
from experiment.core.definition import ExperimentDefinition
from experiment.model.reference import PmmlReference
from tests.helpers.flink_job import definition, produce, publish, read_until, running_job, session_raw, warm_up

pytestmark = [pytest.mark.kafka, pytest.mark.flink, pytest.mark.e2e, pytest.mark.slow]

T0 = 1_700_000_000_000
WINDOW_S = 3_600
MAX_BYTES = 4_096
OUTPUTS = ("assignments", "attributed-outcomes", "dead-letter")


@dataclass
class Run:
    running: list[ExperimentDefinition]
    paused: ExperimentDefinition
    sessions: list[events.Session]
    outcomes: list[events.Outcome]
    bad: dict[str, str]  # raw payload (utf-8 or base64) -> exact expected reason
    out: dict[str, list[dict]]
    pmml: str
    features: tuple[str, ...]


def _probe_customer(defs: list[ExperimentDefinition]) -> str:
    for i in range(1000):
        cid = f"probe-{i}"
        if all(assign(d.salt, cid, d.traffic, d.weights()) is not None for d in defs):
            return cid
    raise AssertionError("no probe customer in every experiment's traffic")


def _expected_attributions(running, sessions, outcomes) -> set[tuple[str, str]]:
    first_ts: dict[str, int] = {}
    for session in sessions:
        first_ts.setdefault(session.customer_id, session.ts)  # produced in ts order per customer
    expected = set()
    for outcome in outcomes:
        ts0 = first_ts.get(outcome.customer_id)
        if ts0 is None:
            continue
        for d in running:
            in_exp = assign(d.salt, outcome.customer_id, d.traffic, d.weights()) is not None
            if in_exp and ts0 <= outcome.ts <= ts0 + d.attribution_window_s * 1000:
                expected.add((d.id, outcome.event_id))
    return expected


@pytest.fixture(scope="module")
def run(job_model, kafka_broker, tmp_path_factory) -> Run:
    from dataclasses import replace

    kafka = replace(kafka_broker, topic_prefix=f"t-flinkjob-{random.randrange(16**8):08x}.")
    from experiment.kafka.topics import ensure_topics

    ensure_topics(kafka)
    group = f"g-flinkjob-{random.randrange(16**8):08x}"
    pmml, version, features = str(job_model.pmml), job_model.version, job_model.features
    main = definition("exp-main", pmml, version, features, traffic=0.8, attribution_window_s=WINDOW_S)
    three = definition(
        "exp-three",
        pmml,
        version,
        features,
        threshold=0.3,
        attribution_window_s=WINDOW_S,
        variants=(("control", 0.4), ("t1", 0.3), ("t2", 0.3)),
    )
    paused = definition("exp-paused", pmml, version, features).transition("pause", int(time.time() * 1000))
    running = [main, three]

    rng = random.Random(20240601)
    x_test = pd.read_csv(job_model.data_dir / "X_test.csv", index_col=0)[list(features)]
    rows = x_test.to_dict("records")
    sessions: list[events.Session] = []
    messages: list[tuple[bytes | None, bytes]] = []
    for c in range(600):
        cid = f"cust-{c}"
        for j in range(rng.randint(1, 4)):
            feats = {k: float(v) for k, v in rows[rng.randrange(len(rows))].items()}
            ts = T0 + c * 1_000 + j * 60_000
            key, value = session_raw(f"s-{c}-{j}", cid, ts, feats)
            sessions.append(events.parse_session(value, feature_names=features, max_bytes=MAX_BYTES))
            messages.append((key, value))

    good = json.loads(messages[0][1])
    bad: dict[str, str] = {}

    def bad_session(payload: bytes, reason: str, key: bytes | None = b"cust-0") -> None:
        try:
            payload.decode("utf-8")
            shown = payload.decode("utf-8")
        except UnicodeDecodeError:
            shown = base64.b64encode(payload).decode()
        bad[shown] = reason
        messages.insert(rng.randrange(len(messages)), (key, payload))

    bad_session(b"{not json", "invalid JSON: Expecting property name enclosed in double quotes at line 1 column 2")
    bad_session(b"\xff\xfe\x00garbage", "payload is not UTF-8: invalid start byte at byte 0")
    bad_session(json.dumps({k: v for k, v in good.items() if k != "ts"}).encode(), "session is missing field(s): ts")
    bad_session(
        json.dumps({**good, "event_id": "x-extra", "device": "ios"}).encode(), "session has unexpected field(s): device"
    )
    bad_session(
        json.dumps({**good, "event_id": "x-type", "ts": "noon"}).encode(),
        "field 'ts' must be an integer (epoch ms), got str",
    )
    bad_session(
        json.dumps({**good, "event_id": "x-neg", "features": {**good["features"], "cat2": -1}}).encode(),
        "feature 'cat2' must be >= 0 (a count or indicator), got -1",
    )
    bad_session(
        json.dumps({**good, "event_id": "x-unknown", "features": {**good["features"], "cat99": 1}}).encode(),
        "unknown feature key(s): cat99",
    )
    huge = json.dumps({**good, "event_id": "x" * MAX_BYTES}).encode()
    bad_session(huge, f"oversized payload: {len(huge)} bytes > max_bytes={MAX_BYTES}")
    bad_session(
        json.dumps({**good, "event_id": "x-key"}).encode(),
        "customer_id 'cust-0' does not match the message key 'someone-else'",
        key=b"someone-else",
    )

    first_ts: dict[str, int] = {}
    for s in sessions:
        first_ts.setdefault(s.customer_id, s.ts)
    outcomes: list[events.Outcome] = []
    outcome_messages: list[tuple[bytes | None, bytes]] = []
    for c in range(0, 600, 2):
        cid = f"cust-{c}"
        for k, offset_ms in enumerate((-600_000, 600_000, 2 * WINDOW_S * 1000)):  # before, inside, after window
            raw = events.outcome_json(f"o-{c}-{k}", cid, first_ts[cid] + offset_ms, "cat61", 10.0 + k).encode()
            outcomes.append(events.parse_outcome(raw))
            outcome_messages.append((cid.encode(), raw))
    for c in range(20):  # orphans: customers the job never sees a session from
        raw = events.outcome_json(f"o-orphan-{c}", f"ghost-{c}", T0, "cat5", 3.0).encode()
        outcomes.append(events.parse_outcome(raw))
        outcome_messages.append((f"ghost-{c}".encode(), raw))
    bad_outcomes = {
        events.outcome_json("ob-1", "cust-2", T0, "cat5", -4.0): "field 'revenue' must be >= 0, got -4.0",
        events.outcome_json("ob-2", "cust-2", T0, "shoes", 4.0): "unknown category key 'shoes' (expected catN, N >= 1)",
        '{"event_id": "ob-3"}': "outcome is missing field(s): category, customer_id, revenue, ts, type",
    }
    for text, reason in bad_outcomes.items():
        bad[text] = reason
        outcome_messages.append((b"cust-2", text.encode()))

    expected_assignments = sum(
        1 for s in sessions for d in running if assign(d.salt, s.customer_id, d.traffic, d.weights()) is not None
    )
    expected_attributed = _expected_attributions(running, sessions, outcomes)

    started = time.monotonic()

    def mark(what: str) -> None:
        print(f"[flink-job-test] {what} at {time.monotonic() - started:.1f}s", flush=True)

    for d in (*running, paused):
        publish(kafka, d)
    with running_job(
        kafka,
        group,
        categories=job_model.categories,
        max_bytes=MAX_BYTES,
        hold_ms=120_000,
        reference_rows=str(job_model.data_dir),
    ):
        warm_up(kafka, _probe_customer(running), features, len(running))
        mark("probe decided")

        produce(kafka, "sessions", messages)
        produce(kafka, "outcomes", outcome_messages)

        def done(r: dict[str, list[dict]]) -> bool:
            real = [a for a in r["assignments"] if not a["customer_id"].startswith("probe-")]
            return (
                len(real) >= expected_assignments
                and len(r["dead-letter"]) >= len(bad)
                and len(r["attributed-outcomes"]) >= len(expected_attributed)
            )

        mark("produced")
        read_until(kafka, list(OUTPUTS), done, timeout_s=90)
        mark("all outputs seen")
        time.sleep(3)  # a few more checkpoints: duplicates, if any, would show up now
        out = read_until(kafka, list(OUTPUTS), lambda r: False, timeout_s=4)
    for name in OUTPUTS:
        out[name] = [r for r in out[name] if not str(r.get("customer_id", "")).startswith("probe-")]
    return Run(
        running=running,
        paused=paused,
        sessions=sessions,
        outcomes=outcomes,
        bad=bad,
        out=out,
        pmml=pmml,
        features=features,
    )


def test_exactly_one_assignment_per_valid_session_and_running_experiment(run: Run) -> None:
    got = Counter((r["event_id"], r["experiment_id"]) for r in run.out["assignments"])
    assert all(n == 1 for n in got.values()), [k for k, n in got.items() if n > 1][:5]
    expected = {
        (s.event_id, d.id)
        for s in run.sessions
        for d in run.running
        if assign(d.salt, s.customer_id, d.traffic, d.weights()) is not None
    }
    assert set(got) == expected
    assert not any(r["experiment_id"] == run.paused.id for r in run.out["assignments"])


def test_every_variant_equals_the_pure_assignment_function(run: Run) -> None:
    by_id = {d.id: d for d in run.running}
    for r in run.out["assignments"]:
        d = by_id[r["experiment_id"]]
        assert r["variant"] == assign(d.salt, r["customer_id"], d.traffic, d.weights())
        assert r["experiment_version"] == d.version
        assert r["key"] == r["customer_id"]
    variants = Counter((r["experiment_id"], r["variant"]) for r in run.out["assignments"])
    assert {v for (e, v) in variants if e == "exp-three"} == {"control", "t1", "t2"}


def test_control_is_never_scored_and_treatment_matches_pypmml(run: Run) -> None:
    by_id = {d.id: d for d in run.running}
    sessions = {s.event_id: s for s in run.sessions}
    treated = []
    for r in run.out["assignments"]:
        d = by_id[r["experiment_id"]]
        if r["variant"] == d.control:
            assert r["score"] is None and r["decision"] == "hide" and r["model_version"] is None
        else:
            assert r["model_version"] == d.model.model_version
            treated.append(r)
    assert len(treated) > 300
    frame = pd.DataFrame([sessions[r["event_id"]].features for r in treated])[list(run.features)]
    with PmmlReference(run.pmml) as reference:
        expected = reference.predict(frame)
    scores = np.array([r["score"] for r in treated], dtype=float)
    assert np.max(np.abs(scores - expected)) <= 1e-9
    for r, p in zip(treated, expected, strict=True):
        assert r["decision"] == ("show" if p >= by_id[r["experiment_id"]].threshold else "hide")
    assert {r["decision"] for r in treated} == {"show", "hide"}


def test_first_exposure_and_pre_period_purchases(run: Run) -> None:
    per_customer: dict[str, list[events.Session]] = defaultdict(list)
    for s in run.sessions:
        per_customer[s.customer_id].append(s)
    pre_exposure_outcomes = Counter(
        o.customer_id
        for o in run.outcomes
        if o.customer_id in per_customer and o.ts < per_customer[o.customer_id][0].ts
    )
    for r in run.out["assignments"]:
        first = per_customer[r["customer_id"]][0]
        assert r["first_exposure"] is (r["event_id"] == first.event_id)
        low = first.purchases
        assert low <= r["pre_period_purchases"] <= low + pre_exposure_outcomes[r["customer_id"]]
        assert r["decided_ts"] >= r["event_ts"]


def test_dead_letters_carry_position_raw_record_and_exact_reason(run: Run) -> None:
    dead = run.out["dead-letter"]
    assert len(dead) == len(run.bad)
    seen = {}
    for r in dead:
        assert r["source_topic"].endswith(("sessions", "outcomes"))
        assert isinstance(r["partition"], int) and isinstance(r["offset"], int) and r["offset"] >= 0
        assert r["raw_encoding"] in ("utf-8", "base64")
        seen[r["raw"]] = r["error"]
    assert seen == run.bad
    binary = [r for r in dead if r["raw_encoding"] == "base64"]
    assert len(binary) == 1 and base64.b64decode(binary[0]["raw"]) == b"\xff\xfe\x00garbage"


def test_attributed_outcomes_only_after_exposure_inside_the_window(run: Run) -> None:
    attributed = run.out["attributed-outcomes"]
    got = Counter((r["experiment_id"], r["outcome_event_id"]) for r in attributed)
    assert all(n == 1 for n in got.values())
    assert set(got) == _expected_attributions(run.running, run.sessions, run.outcomes)
    first_ts = {}
    for s in run.sessions:
        first_ts.setdefault(s.customer_id, s.ts)
    outcomes = {o.event_id: o for o in run.outcomes}
    by_id = {d.id: d for d in run.running}
    for r in attributed:
        o = outcomes[r["outcome_event_id"]]
        d = by_id[r["experiment_id"]]
        assert r["event_id"] == r["outcome_event_id"]
        assert 0 <= r["seconds_since_exposure"] <= WINDOW_S
        assert r["seconds_since_exposure"] == (o.ts - first_ts[o.customer_id]) / 1000
        assert r["variant"] == assign(d.salt, r["customer_id"], d.traffic, d.weights())
        assert r["converted"] is True and r["revenue"] == o.revenue
    assert not any(r["customer_id"].startswith("ghost-") for r in attributed)
