"""Producer, consumer and admin factories built from `KafkaSettings`, so no caller hard-codes a broker or security.

Why factories: every client must carry the same bootstrap servers and SASL/SSL settings, and consumers of the Flink
job's outputs must read with `isolation_level='read_committed'` (the job writes them in transactions; uncommitted or
aborted records must never be counted). Clients are created here, in functions, never at import.

Each client waits at most `KafkaSettings.connect_timeout_s` for a first answer; an unreachable cluster then becomes one
`InfraError` (one line from the CLI) instead of kafka-python's 30 s of retries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from experiment.core.errors import InfraError
from experiment.runtime.config import KafkaSettings

if TYPE_CHECKING:
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

__all__ = ["make_admin", "make_consumer", "make_producer", "unreachable"]


def unreachable(kafka: KafkaSettings, client: str, exc: BaseException) -> InfraError:
    """The one-line error for a client that could not connect: what to try when nothing answered in time."""
    from kafka.errors import KafkaTimeoutError

    if isinstance(exc, KafkaTimeoutError):  # what kafka-python raises when no bootstrap server answered in time
        return InfraError(
            f"No Kafka broker answered {client} at {kafka.bootstrap_servers} within {kafka.connect_timeout_s:g} s: "
            "is it running, and do the security settings match? `abflow kafka status` checks the address."
        )
    return InfraError(f"Cannot connect {client} to Kafka at {kafka.bootstrap_servers}: {exc!r}")


def make_producer(kafka: KafkaSettings, **overrides: Any) -> KafkaProducer:
    """A producer of raw bytes (callers encode keys and values), acks=all and idempotent by default."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    config: dict[str, Any] = {
        **kafka.client_config(),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "client_id": "abflow-producer",
    }
    config.update(overrides)
    try:
        return KafkaProducer(**config)
    except (KafkaError, OSError) as exc:
        raise unreachable(kafka, "a producer", exc) from exc


def make_consumer(
    kafka: KafkaSettings,
    *topics: str,
    group_id: str | None = None,
    read_committed: bool = True,
    auto_offset_reset: str = "earliest",
    **overrides: Any,
) -> KafkaConsumer:
    """A consumer of raw bytes subscribed to `topics` (physical names; pass none to `assign()` partitions yourself).

    `read_committed=True` is the default because most abflow consumers read the Flink job's transactional output.
    """
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    config: dict[str, Any] = {
        **kafka.client_config(),
        "group_id": group_id,
        "isolation_level": "read_committed" if read_committed else "read_uncommitted",
        "auto_offset_reset": auto_offset_reset,
        "enable_auto_commit": group_id is not None,
        "client_id": "abflow-consumer",
    }
    config.update(overrides)
    try:
        return KafkaConsumer(*topics, **config)
    except (KafkaError, OSError) as exc:
        raise unreachable(kafka, "a consumer", exc) from exc


def make_admin(kafka: KafkaSettings, **overrides: Any) -> KafkaAdminClient:
    """An admin client (topic creation, config checks)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        return KafkaAdminClient(**{**kafka.client_config(), "client_id": "abflow-admin", **overrides})
    except (KafkaError, OSError) as exc:
        raise unreachable(kafka, "an admin client", exc) from exc
