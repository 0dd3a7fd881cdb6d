"""Shared pytest fixtures: ONE real Kafka broker per test session, and per-test isolation on top of it.

Fixtures (use them from any test; mark such tests `@pytest.mark.kafka`):

- `kafka_broker` (session): starts a real single-node KRaft broker from the Maven jars on a free port of 127.0.0.1,
  in a temporary data directory, waits until it answers a metadata request, yields its `KafkaSettings` (no topic
  prefix), and stops it (SIGTERM, wait) at the end of the session, even when tests fail or the run is interrupted;
  if pytest itself is killed, Linux sends the broker SIGTERM (parent-death signal).
  Set `ABFLOW_TEST_KAFKA_BOOTSTRAP=host:port` to run the same tests against an existing broker instead.
- `kafka_settings` (function): the broker's `KafkaSettings` with a topic prefix unique to the test, so
  `kafka_settings.topic("sessions")` is a name no other test uses. Topics are not created.
- `kafka_topics` (function): like `kafka_settings`, after creating the whole topic catalogue
  (`experiment.kafka.topics.CATALOGUE`) under that prefix.
- `kafka_group_id` (function): a consumer-group id unique to the test.
- `abflow_settings` (function): a full `Settings` whose home and results store live in the test's `tmp_path` and
  whose Kafka part is `kafka_topics` (so the CLI and library code see a private, ready set of topics).

Example:
    @pytest.mark.kafka
    def test_roundtrip(kafka_topics, kafka_group_id):
        producer = make_producer(kafka_topics)
        producer.send(kafka_topics.topic("sessions"), b"...")
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from experiment.core.errors import InfraError
from experiment.runtime.config import KafkaSettings, Settings, load_settings
from experiment.runtime.processes import free_port


def pytest_configure(config: pytest.Config) -> None:
    """Give the whole run a private abflow home, so no test reads or writes the user's `.abflow/`.

    The job retains its checkpoints there and `abflow pipeline run` resumes from the newest one: a test's
    checkpoint left in the working directory's home would be picked up by the next `make demo`.
    """
    import tempfile

    os.environ["ABFLOW_HOME"] = tempfile.mkdtemp(prefix="abflow-test-home-")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the run's private home (checkpoints, logs) when pytest ends."""
    import shutil

    home = os.environ.get("ABFLOW_HOME", "")
    if "abflow-test-home-" in home:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaSettings]:
    """One real broker for the whole session (see the module docstring)."""
    external = os.environ.get("ABFLOW_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield KafkaSettings(bootstrap_servers=external)
        return

    from experiment.kafka import broker

    settings = load_settings()
    data_dir = tmp_path_factory.mktemp("kafka-broker")
    status = None
    for attempt in range(3):  # the free port can be taken between choosing it and the broker binding it
        try:
            status = broker.start(settings, port=free_port(), data_dir=data_dir, timeout_s=120.0, die_with_parent=True)
            break
        except InfraError as error:
            if "already in use" not in str(error) or attempt == 2:
                broker.stop(data_dir, timeout_s=10.0)
                raise
    assert status is not None and status.bootstrap_servers is not None
    try:
        yield KafkaSettings(bootstrap_servers=status.bootstrap_servers)
    finally:
        broker.stop(data_dir)


def _unique(request: pytest.FixtureRequest, max_len: int = 60) -> str:
    """A readable, Kafka-legal name unique to this test: its name, shortened, plus random hex."""
    name = re.sub(r"[^a-zA-Z0-9._-]+", "-", request.node.name).strip("-")[:max_len]
    return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def kafka_settings(kafka_broker: KafkaSettings, request: pytest.FixtureRequest) -> KafkaSettings:
    """The session broker with a topic prefix unique to this test."""
    return replace(kafka_broker, topic_prefix=f"t-{_unique(request)}.")


@pytest.fixture
def kafka_topics(kafka_settings: KafkaSettings) -> KafkaSettings:
    """`kafka_settings` after creating every catalogue topic under its prefix."""
    from experiment.kafka.topics import ensure_topics

    ensure_topics(kafka_settings)
    return kafka_settings


@pytest.fixture
def kafka_group_id(request: pytest.FixtureRequest) -> str:
    """A consumer-group id no other test uses."""
    return f"g-{_unique(request)}"


@pytest.fixture
def abflow_settings(kafka_topics: KafkaSettings, tmp_path: Path) -> Settings:
    """Full settings: private home/store under `tmp_path`, private topics on the session broker."""
    base = load_settings()
    home = tmp_path / "abflow-home"
    return replace(base, kafka=kafka_topics, home=home, store_path=home / "results.duckdb")
