"""Re-allocating traffic while the job runs: the new definition applies without a restart, nobody is reshuffled."""

from __future__ import annotations

import random
import time
from dataclasses import replace

import pytest

from experiment.core.assignment import assign
from experiment.kafka.topics import ensure_topics
from tests.helpers.flink_job import definition, produce, publish, read_until, running_job, session_raw

pytestmark = [pytest.mark.kafka, pytest.mark.flink, pytest.mark.e2e, pytest.mark.slow]

T0 = 1_700_000_000_000


def _wait_for_version(kafka, customer: str, features, version: int, timeout_s: float = 120.0) -> None:
    """Probe until a session of `customer` is decided under definition `version` (the broadcast has arrived)."""
    deadline = time.monotonic() + timeout_s
    attempt = 0
    while time.monotonic() < deadline:
        event_id = f"probe-v{version}-{attempt}"
        produce(kafka, "sessions", [session_raw(event_id, customer, T0, {k: 0.0 for k in features})])
        got = read_until(
            kafka,
            ["assignments"],
            lambda r, eid=event_id: any(a["event_id"] == eid for a in r["assignments"]),
            timeout_s=5,
        )
        if any(a["event_id"] == event_id and a["experiment_version"] == version for a in got["assignments"]):
            return
        attempt += 1
    raise AssertionError(f"definition version {version} was not applied within {timeout_s}s")


def test_traffic_reallocation_mid_stream(job_model, kafka_broker) -> None:
    kafka = replace(kafka_broker, topic_prefix=f"t-realloc-{random.randrange(16**8):08x}.")
    ensure_topics(kafka)
    features = job_model.features
    v1 = definition("exp-realloc", str(job_model.pmml), job_model.version, features, traffic=0.3)
    v2 = v1.updated(int(time.time() * 1000), traffic=1.0)
    assert v2.version == v1.version + 1

    def in_v1(cid: str) -> bool:
        return assign(v1.salt, cid, v1.traffic, v1.weights()) is not None

    probe1 = next(f"probe-{i}" for i in range(1000) if in_v1(f"probe-{i}"))
    probe2 = next(f"probe-{i}" for i in range(1000, 2000) if not in_v1(f"probe-{i}"))
    customers = [f"cust-{i}" for i in range(400)]
    rng = random.Random(7)

    def batch(tag: str, ts: int) -> list[tuple[bytes | None, bytes]]:
        return [session_raw(f"{tag}-{c}", c, ts, {k: float(rng.randint(0, 3)) for k in features}) for c in customers]

    publish(kafka, v1)
    with running_job(
        kafka,
        f"g-realloc-{random.randrange(16**8):08x}",
        categories=job_model.categories,
        reference_rows=str(job_model.data_dir),
    ):
        _wait_for_version(kafka, probe1, features, v1.version)
        produce(kafka, "sessions", batch("a", T0))
        expected_a = sum(in_v1(c) for c in customers)

        def count(records: dict, tag: str) -> int:
            return sum(a["event_id"].startswith(f"{tag}-") for a in records["assignments"])

        read_until(kafka, ["assignments"], lambda r: count(r, "a") >= expected_a, timeout_s=60)
        publish(kafka, v2)  # the re-allocation: a new version on the compacted topic, no restart
        _wait_for_version(kafka, probe2, features, v2.version)
        produce(kafka, "sessions", batch("b", T0 + 60_000))
        out = read_until(kafka, ["assignments"], lambda r: count(r, "b") >= len(customers), timeout_s=60)
        time.sleep(2)
        out = read_until(kafka, ["assignments"], lambda r: False, timeout_s=3)

    records = [a for a in out["assignments"] if not a["customer_id"].startswith("probe-")]
    before = {a["customer_id"]: a for a in records if a["event_id"].startswith("a-")}
    after = {a["customer_id"]: a for a in records if a["event_id"].startswith("b-")}
    assert len(before) == expected_a == sum(1 for a in records if a["event_id"].startswith("a-"))
    assert 0.2 * len(customers) < expected_a < 0.4 * len(customers)
    assert set(after) == set(customers) and len(after) == sum(1 for a in records if a["event_id"].startswith("b-"))
    for cid, a in before.items():
        assert a["experiment_version"] == v1.version
        assert a["variant"] == assign(v1.salt, cid, v1.traffic, v1.weights())
        assert a["first_exposure"] is True
    for cid, b in after.items():
        assert b["experiment_version"] == v2.version
        assert b["variant"] == assign(v2.salt, cid, v2.traffic, v2.weights())
        if cid in before:
            assert b["variant"] == before[cid]["variant"]  # raising traffic never reshuffles anyone
            assert b["first_exposure"] is False
        else:
            assert b["first_exposure"] is True  # newly admitted by the re-allocation
