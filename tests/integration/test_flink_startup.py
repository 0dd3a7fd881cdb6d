"""A fresh job assigns the very first sessions it reads: no warm-up, no waiting for the broadcast stream.

Why: the job reads sessions and the broadcast `experiments` topic concurrently. Without the snapshot that
`DecideFunction.open()` reads, sessions already waiting on the topic at start-up were processed before the first
definition arrived and were only counted (`sessions_no_running_experiment`). Half of the sessions here are on the
topic before the job is submitted, the other half are produced right after `submit` returns.
"""

from __future__ import annotations

import random
import time
from dataclasses import replace

import pandas as pd
import pytest

from experiment.core.assignment import assign
from tests.helpers.flink_job import definition, produce, publish, read_until, running_job, session_raw

pytestmark = [pytest.mark.kafka, pytest.mark.flink, pytest.mark.e2e, pytest.mark.slow]

SESSIONS = 2_000


def test_sessions_produced_at_job_start_are_all_assigned(job_model, kafka_broker) -> None:
    from experiment.kafka.topics import ensure_topics

    kafka = replace(kafka_broker, topic_prefix=f"t-flinkstart-{random.randrange(16**8):08x}.")
    ensure_topics(kafka)
    group = f"g-flinkstart-{random.randrange(16**8):08x}"
    exp = definition("exp-start", str(job_model.pmml), job_model.version, job_model.features)
    publish(kafka, exp)

    rows = pd.read_csv(job_model.data_dir / "X_test.csv", index_col=0)[list(job_model.features)].to_dict("records")
    t0 = int(time.time() * 1000)
    messages = [
        session_raw(f"s-{i}", f"cust-{i}", t0 + i, {k: float(v) for k, v in rows[i % len(rows)].items()})
        for i in range(SESSIONS)
    ]
    expected = {f"s-{i}": assign(exp.salt, f"cust-{i}", exp.traffic, exp.weights()) for i in range(SESSIONS)}
    assert all(expected.values()), "traffic is 1.0: every customer is in the experiment"

    produce(kafka, "sessions", messages[: SESSIONS // 2])  # waiting on the topic before the job exists
    with running_job(
        kafka,
        group,
        categories=job_model.categories,
        reference_rows=str(job_model.data_dir),
        startup_mode="earliest-offset",
    ):
        produce(kafka, "sessions", messages[SESSIONS // 2 :])  # no warm-up: straight after submit
        read_until(kafka, ["assignments"], lambda r: len(r["assignments"]) >= SESSIONS, timeout_s=150)
        time.sleep(2)  # a couple more checkpoints: duplicates, if any, would show up now
        out = read_until(kafka, ["assignments"], lambda r: False, timeout_s=3)["assignments"]

    by_event = {a["event_id"]: a for a in out}
    missing = sorted(set(expected) - set(by_event), key=lambda e: int(e[2:]))
    assert not missing, f"{len(missing)} of {SESSIONS} sessions not assigned, first: {missing[:5]}"
    assert len(out) == SESSIONS, f"{len(out)} assignments for {SESSIONS} sessions (duplicates?)"
    assert all(by_event[e]["variant"] == v for e, v in expected.items())
    assert all(a["experiment_id"] == exp.id and a["experiment_version"] == exp.version for a in out)
