"""The experiment control plane: definitions live on the compacted `experiments` topic and nowhere else.

Why no local state: the Flink job learns about experiments by reading the same topic (broadcast state), so the topic
is the only place where "what is running" can be true for everyone. Every change publishes the whole next version,
keyed by the experiment id; reading consumes the topic from its beginning to the end offsets seen at the start and
keeps the highest version of each id. Compaction keeps the topic small without losing any id's latest version.

Tombstones (null values), undecodable or invalid values are skipped and counted, never fatal: one bad record must not
hide every other experiment.

Concurrency: two operators changing the same experiment at the same moment could both publish version N+1; abflow
assumes one operator per experiment (the readers then keep whichever arrived last for equal versions).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from experiment.core.definition import Action, ExperimentDefinition
from experiment.core.errors import ExperimentError, InfraError
from experiment.kafka import topics
from experiment.runtime.config import KafkaSettings

__all__ = [
    "Snapshot",
    "apply_action",
    "create",
    "get",
    "publish",
    "read_snapshot",
    "update",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """The latest version of every experiment on the topic, and how many records had to be skipped."""

    definitions: dict[str, ExperimentDefinition]
    skipped: int = 0

    def sorted(self) -> list[ExperimentDefinition]:
        """Definitions ordered by creation time, then id (a stable order for `list`)."""
        return sorted(self.definitions.values(), key=lambda d: (d.created_ts, d.id))


def publish(kafka: KafkaSettings, definition: ExperimentDefinition, *, timeout_s: float = 30.0) -> None:
    """Write one full definition to the `experiments` topic (key = id) and wait until the broker has it.

    The topic is created first if missing, so that it is never auto-created without compaction.
    """
    from kafka.errors import KafkaError

    from experiment.kafka.clients import make_producer

    topics.ensure_topics(kafka, tuple(s for s in topics.CATALOGUE if s.name == topics.EXPERIMENTS))
    topic = kafka.topic(topics.EXPERIMENTS)
    producer = make_producer(kafka, client_id="abflow-control-plane")
    try:
        future = producer.send(topic, key=definition.id.encode(), value=definition.to_json().encode())
        metadata = future.get(timeout=timeout_s)
    except KafkaError as exc:
        raise InfraError(f"Publishing experiment '{definition.id}' to topic '{topic}' failed: {exc!r}") from exc
    finally:
        producer.close()
    logger.info(
        "published experiment_id=%s version=%s status=%s topic=%s partition=%s offset=%s",
        definition.id,
        definition.version,
        definition.status,
        topic,
        metadata.partition,
        metadata.offset,
    )


def read_snapshot(kafka: KafkaSettings, *, timeout_s: float = 30.0) -> Snapshot:
    """Consume the whole `experiments` topic up to its current end and return the latest version per id."""
    from kafka import TopicPartition

    from experiment.kafka.clients import make_consumer

    topic = kafka.topic(topics.EXPERIMENTS)
    consumer = make_consumer(kafka, group_id=None, client_id="abflow-control-plane-reader")
    latest: dict[str, ExperimentDefinition] = {}
    skipped = 0
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        if not partitions:
            return Snapshot({}, 0)
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            if time.monotonic() > deadline:
                raise InfraError(f"Reading topic '{topic}' to its end offsets took longer than {timeout_s:.0f}s.")
            for tp, records in consumer.poll(timeout_ms=500).items():
                for record in records:
                    if record.offset >= end[tp]:
                        continue  # written after we started: the next read will see it
                    definition = _decode(record.value, tp.partition, record.offset, topic)
                    if definition is None:
                        skipped += 1
                        continue
                    known = latest.get(definition.id)
                    if known is None or definition.version >= known.version:
                        latest[definition.id] = definition
    finally:
        consumer.close()
    return Snapshot(latest, skipped)


def _decode(value: bytes | None, partition: int, offset: int, topic: str) -> ExperimentDefinition | None:
    if value is None:
        logger.info("skipped tombstone topic=%s partition=%s offset=%s", topic, partition, offset)
        return None
    try:
        return ExperimentDefinition.from_json(value)
    except ExperimentError as exc:
        logger.warning(
            "skipped invalid definition topic=%s partition=%s offset=%s error=%s", topic, partition, offset, exc
        )
        return None


def get(kafka: KafkaSettings, experiment_id: str) -> ExperimentDefinition:
    """The latest version of one experiment; `ExperimentError` when the topic has none."""
    snapshot = read_snapshot(kafka)
    try:
        return snapshot.definitions[experiment_id]
    except KeyError:
        known = ", ".join(sorted(snapshot.definitions)) or "none"
        raise ExperimentError(
            f"No experiment '{experiment_id}' on topic '{kafka.topic(topics.EXPERIMENTS)}'. Known: {known}."
        ) from None


def create(kafka: KafkaSettings, definition: ExperimentDefinition) -> ExperimentDefinition:
    """Publish version 1 of a new experiment; refuses an id that already exists on the topic."""
    existing = read_snapshot(kafka).definitions.get(definition.id)
    if existing is not None:
        raise ExperimentError(
            f"Experiment '{definition.id}' already exists (version {existing.version}, {existing.status}); "
            "choose another id."
        )
    publish(kafka, definition)
    return definition


def _change(
    kafka: KafkaSettings, experiment_id: str, step: Callable[[ExperimentDefinition], ExperimentDefinition]
) -> ExperimentDefinition:
    new = step(get(kafka, experiment_id))
    publish(kafka, new)
    return new


def apply_action(kafka: KafkaSettings, experiment_id: str, action: Action, *, now_ms: int) -> ExperimentDefinition:
    """Publish the next version after a lifecycle action (launch, pause, resume, stop)."""
    return _change(kafka, experiment_id, lambda d: d.transition(action, now_ms))


def update(kafka: KafkaSettings, experiment_id: str, *, now_ms: int, **changes: object) -> ExperimentDefinition:
    """Publish the next version with some fields changed (e.g. `traffic=0.5`); see `ExperimentDefinition.updated`."""
    return _change(kafka, experiment_id, lambda d: d.updated(now_ms, **changes))
