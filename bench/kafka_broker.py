"""The Kafka a benchmark talks to: a given cluster, or a private broker started for the run and stopped after it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from experiment.runtime.config import KafkaSettings, load_settings
from experiment.runtime.processes import free_port

__all__ = ["bench_kafka"]


@contextmanager
def bench_kafka(bootstrap: str | None, workdir: Path) -> Iterator[KafkaSettings]:
    """`bootstrap` when given; otherwise a private broker on a free port under `workdir`, stopped at the end."""
    if bootstrap:
        yield KafkaSettings(bootstrap_servers=bootstrap)
        return
    from experiment.kafka import broker

    data_dir = workdir / "kafka"
    status = broker.start(load_settings(), port=free_port(), data_dir=data_dir, timeout_s=120.0, die_with_parent=True)
    assert status.bootstrap_servers is not None
    try:
        yield KafkaSettings(bootstrap_servers=status.bootstrap_servers)
    finally:
        broker.stop(data_dir)
