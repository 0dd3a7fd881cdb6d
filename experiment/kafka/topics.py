"""The topic catalogue: every topic abflow uses, with its partitions and retention, created idempotently.

Why a catalogue in code: the Flink job, the simulator, the collector and the CLI must agree on names and on the few
settings that change behaviour (compaction of `experiments`, long retention of `dead-letter`). Names are logical;
`KafkaSettings.topic(name)` adds the configured prefix, which is how test runs share one broker without colliding.

| topic               | partitions | retention            | why                                                      |
|---------------------|-----------:|----------------------|----------------------------------------------------------|
| sessions            | 4 (*)      | 14 days              | keyed by customer; 4 lets the job scale to 4 subtasks    |
| outcomes            | 4          | 14 days              | ≥ the 7-day default attribution window, with slack       |
| assignments         | 4          | 30 days              | the results store can be rebuilt from it                 |
| attributed-outcomes | 4          | 30 days              | likewise                                                 |
| dead-letter         | 1          | forever (-1)         | bad records are kept whole until someone looks at them   |
| experiments         | 1          | compacted            | latest definition per experiment id; one partition keeps |
|                     |            |                      | every id's versions in order                             |
| experiment-health   | 1          | compacted            | the job's latest word on each experiment's model (usable |
|                     |            |                      | or not, and why); read by the collector into the store   |

(*) The keyed topics (sessions, outcomes, assignments, attributed-outcomes) get `KafkaSettings.partitions`
(`ABFLOW_KAFKA_PARTITIONS`, `partitions` in abflow.toml's [kafka]; default 4) when abflow creates them: the sessions
topic's partition count is the most source subtasks the job can keep busy, and sessions and outcomes always get the
same count. Existing topics are never changed (docs/cluster.md, "Scaling").
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

from experiment.core.errors import InfraError
from experiment.runtime.config import KafkaSettings

__all__ = [
    "ASSIGNMENTS",
    "ATTRIBUTED_OUTCOMES",
    "CATALOGUE",
    "DEAD_LETTER",
    "EXPERIMENTS",
    "EXPERIMENT_HEALTH",
    "OUTCOMES",
    "SESSIONS",
    "TopicSpec",
    "catalogue",
    "ensure_topics",
]

logger = logging.getLogger(__name__)

SESSIONS = "sessions"
OUTCOMES = "outcomes"
ASSIGNMENTS = "assignments"
ATTRIBUTED_OUTCOMES = "attributed-outcomes"
DEAD_LETTER = "dead-letter"
EXPERIMENTS = "experiments"
EXPERIMENT_HEALTH = "experiment-health"

_DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """A logical topic: its name before the prefix, partition count and topic-level configs."""

    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)
    doc: str = ""


CATALOGUE: tuple[TopicSpec, ...] = (
    TopicSpec(SESSIONS, 4, {"retention.ms": str(14 * _DAY_MS)}, "website sessions to score (key = customer id)"),
    TopicSpec(OUTCOMES, 4, {"retention.ms": str(14 * _DAY_MS)}, "purchases (key = customer id)"),
    TopicSpec(ASSIGNMENTS, 4, {"retention.ms": str(30 * _DAY_MS)}, "every decision of the Flink job"),
    TopicSpec(ATTRIBUTED_OUTCOMES, 4, {"retention.ms": str(30 * _DAY_MS)}, "outcomes inside an attribution window"),
    TopicSpec(DEAD_LETTER, 1, {"retention.ms": "-1", "retention.bytes": "-1"}, "records that failed validation"),
    TopicSpec(
        EXPERIMENTS,
        1,
        {
            "cleanup.policy": "compact",
            # Compact soon after a change so the topic stays small; readers still see every key's latest version.
            "segment.ms": str(3600 * 1000),
            "min.cleanable.dirty.ratio": "0.1",
        },
        "experiment definitions, latest version per id (key = experiment id)",
    ),
    TopicSpec(
        EXPERIMENT_HEALTH,
        1,
        # Compacted, not expiring: a model that has been unusable for months must still show as unusable.
        {"cleanup.policy": "compact", "segment.ms": str(3600 * 1000), "min.cleanable.dirty.ratio": "0.1"},
        "the job's model health per experiment: model_unusable (with the reason) or model_ready (key = experiment id)",
    ),
)


_KEYED = frozenset({SESSIONS, OUTCOMES, ASSIGNMENTS, ATTRIBUTED_OUTCOMES})


def catalogue(partitions: int) -> tuple[TopicSpec, ...]:
    """The catalogue with `partitions` for every keyed topic (the same for sessions and outcomes, by construction)."""
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    return tuple(replace(spec, partitions=partitions) if spec.name in _KEYED else spec for spec in CATALOGUE)


def ensure_topics(
    kafka: KafkaSettings,
    specs: tuple[TopicSpec, ...] | None = None,
    *,
    replication_factor: int = -1,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create the catalogue's topics that do not exist yet (physical names, prefix applied); return those created.

    `replication_factor=-1` asks for the broker's default (1 on the local broker, the cluster's policy elsewhere).
    Existing topics are left untouched, so running this twice, or concurrently, is harmless. `specs` defaults to the
    catalogue with `kafka.partitions` for the keyed topics.
    """
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    from experiment.kafka.clients import make_admin

    specs = catalogue(kafka.partitions) if specs is None else specs
    admin = make_admin(kafka, client_id="abflow-topics")
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                existing = set(admin.list_topics())
                wanted = {
                    kafka.topic(spec.name): {
                        "num_partitions": spec.partitions,
                        "replication_factor": replication_factor,
                        "configs": dict(spec.configs),
                    }
                    for spec in specs
                    if kafka.topic(spec.name) not in existing
                }
                if not wanted:
                    return []
                created = []
                for name, options in wanted.items():
                    try:
                        admin.create_topics({name: options}, timeout_ms=int(timeout_s * 1000))
                        created.append(name)
                        logger.info("created topic=%s partitions=%s", name, options["num_partitions"])
                    except TopicAlreadyExistsError:
                        logger.debug("topic already exists topic=%s", name)
                if created:
                    admin.wait_for_topics(created, timeout_ms=int(timeout_s * 1000))
                return created
            except KafkaError as exc:
                # A freshly started controller may still be electing itself; retry transient errors briefly.
                if not getattr(exc, "retriable", False) or time.monotonic() > deadline:
                    raise InfraError(f"Creating topics on {kafka.bootstrap_servers} failed: {exc!r}") from exc
                time.sleep(0.5)
    finally:
        admin.close()
