"""Helpers for the tests that run the real decision job on a MiniCluster against the session broker.

Each test gets its own topics (prefix) and consumer groups from `tests/conftest.py`; these helpers start the job
for one test, publish definitions, produce events, and read the job's transactional output with read_committed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from experiment.core.definition import ExperimentDefinition, ModelRef
from experiment.kafka.clients import make_consumer, make_producer
from experiment.runtime.config import KafkaSettings, load_settings
from flink_pipeline.job import JobConfig, submit

__all__ = [
    "definition",
    "produce",
    "publish",
    "read_until",
    "running_job",
    "session_raw",
    "warm_up",
]


def definition(exp_id: str, pmml: str, version: str, features: Sequence[str], **changes: Any) -> ExperimentDefinition:
    """A running experiment on the test model (control first, 50/50 unless `variants` says otherwise)."""
    draft = ExperimentDefinition.new(
        id=exp_id,
        name=exp_id,
        hypothesis="showing the category lifts conversion",
        owner="tests",
        category="cat61",
        model=ModelRef(pmml_path=pmml, model_version=version, features=tuple(features)),
        threshold=changes.pop("threshold", 0.5),
        now_ms=int(time.time() * 1000),
        **changes,
    )
    return draft.transition("launch", int(time.time() * 1000))


def publish(kafka: KafkaSettings, defn: ExperimentDefinition) -> None:
    """Write a definition to the test's compacted experiments topic (key = id)."""
    producer = make_producer(kafka)
    producer.send(kafka.topic("experiments"), key=defn.id.encode(), value=defn.to_json().encode())
    producer.flush()
    producer.close()


def produce(
    kafka: KafkaSettings, topic: str, messages: Sequence[tuple[bytes | None, bytes | None]]
) -> list[tuple[int, int]]:
    """Send (key, value) messages in order to a logical topic; return each one's (partition, offset)."""
    producer = make_producer(kafka, linger_ms=20)
    futures = [producer.send(kafka.topic(topic), key=key, value=value) for key, value in messages]
    producer.flush()
    positions = [(meta.partition, meta.offset) for meta in (future.get(timeout=60) for future in futures)]
    producer.close()
    return positions


def session_raw(event_id: str, customer_id: str, ts: int, features: dict[str, float]) -> tuple[bytes, bytes]:
    """A valid `sessions` message keyed by customer id."""
    from experiment.core.events import session_json

    return customer_id.encode(), session_json(event_id, customer_id, ts, features).encode()


def read_until(
    kafka: KafkaSettings,
    topics: Sequence[str],
    done: Callable[[dict[str, list[dict]]], bool],
    timeout_s: float,
) -> dict[str, list[dict]]:
    """Read the logical `topics` from the start (read_committed) until `done(records)` or the timeout."""
    consumer = make_consumer(kafka, *[kafka.topic(t) for t in topics], read_committed=True)
    by_physical = {kafka.topic(t): t for t in topics}
    records: dict[str, list[dict]] = {t: [] for t in topics}
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                for message in batch:
                    records[by_physical[message.topic]].append(
                        {"key": message.key.decode() if message.key else None, **json.loads(message.value)}
                    )
            if done(records):
                break
    finally:
        consumer.close()
    return records


def warm_up(
    kafka: KafkaSettings, probe_customer: str, features: Sequence[str], expected: int, timeout_s: float = 120.0
) -> list[dict]:
    """Send probe sessions until the job decides one for `expected` experiments: the job is up and has applied the
    definitions (a fresh job may see sessions before its first definitions; those are not assigned).
    """
    deadline = time.monotonic() + timeout_s
    attempt = 0
    while time.monotonic() < deadline:
        event_id = f"probe-event-{attempt}"
        produce(kafka, "sessions", [session_raw(event_id, probe_customer, 0, {k: 0.0 for k in features})])
        records = read_until(
            kafka,
            ["assignments"],
            lambda r, eid=event_id: sum(a["event_id"] == eid for a in r["assignments"]) >= expected,
            timeout_s=5,
        )["assignments"]
        decided = [a for a in records if a["event_id"] == event_id]
        if len(decided) >= expected:
            return decided
        attempt += 1
    raise AssertionError(f"the job decided no probe session within {timeout_s}s")


@contextmanager
def running_job(kafka: KafkaSettings, group_id: str, **config: Any) -> Iterator[Any]:
    """Start the decision job on a local MiniCluster for one test; cancel it afterwards."""
    settings = replace(load_settings(), kafka=kafka)
    job_config = replace(
        JobConfig(),
        group_id=group_id,
        transactional_id_prefix=f"tx-{group_id}",
        checkpoint_interval_ms=1_000,
        **config,
    )
    client = submit(settings, job_config)
    try:
        yield client
    finally:
        client.cancel().result()
