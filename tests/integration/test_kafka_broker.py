"""The real local broker: jars, topic catalogue and configs, transactions as Flink's sink uses them, and the CLI."""

from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from experiment.cli.main import app
from experiment.core.errors import InfraError
from experiment.kafka import broker, jars, topics
from experiment.kafka.clients import make_admin, make_consumer, make_producer
from experiment.runtime.config import KafkaSettings, load_settings
from experiment.runtime.processes import free_port, pid_alive

pytestmark = pytest.mark.kafka

FLINK_SINK_TRANSACTION_TIMEOUT_MS = 900_000


def test_second_install_downloads_nothing_and_jars_match_pins(kafka_broker: KafkaSettings) -> None:
    settings = load_settings()  # the session broker fixture has installed the jars already
    started = time.monotonic()
    report = jars.install_jars(settings)
    assert report.downloaded is False
    assert time.monotonic() - started < 10
    connector = jars.flink_connector_jar(settings)
    assert connector.name == "flink-sql-connector-kafka-5.0.0-2.2.jar"
    assert hashlib.sha256(connector.read_bytes()).hexdigest() == jars.PINNED_SHA256[connector.name]
    kafka_jar = jars.kafka_jars_dir(settings) / f"kafka_2.13-{jars.KAFKA_VERSION}.jar"
    assert hashlib.sha256(kafka_jar.read_bytes()).hexdigest() == jars.PINNED_SHA256[kafka_jar.name]


def test_catalogue_topics_have_documented_partitions_and_configs(kafka_topics: KafkaSettings) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = make_admin(kafka_topics)
    try:
        described = {
            t["name"]: t for t in admin.describe_topics([kafka_topics.topic(s.name) for s in topics.CATALOGUE])
        }
        for spec in topics.CATALOGUE:
            physical = kafka_topics.topic(spec.name)
            assert physical.startswith(kafka_topics.topic_prefix)
            assert len(described[physical]["partitions"]) == spec.partitions, physical
        resources = [ConfigResource(ConfigResourceType.TOPIC, kafka_topics.topic(s.name)) for s in topics.CATALOGUE]
        configs = admin.describe_configs(resources, config_filter="all")["topic"]
    finally:
        admin.close()

    def value(logical: str, key: str) -> str:
        return configs[kafka_topics.topic(logical)][key]["value"]

    assert value(topics.EXPERIMENTS, "cleanup.policy") == "compact"
    assert value(topics.SESSIONS, "cleanup.policy") == "delete"
    assert value(topics.DEAD_LETTER, "retention.ms") == "-1"
    assert int(value(topics.OUTCOMES, "retention.ms")) == 14 * 24 * 3600 * 1000
    assert int(value(topics.ASSIGNMENTS, "retention.ms")) == 30 * 24 * 3600 * 1000


def test_ensure_topics_is_idempotent(kafka_settings: KafkaSettings) -> None:
    first = topics.ensure_topics(kafka_settings)
    assert sorted(first) == sorted(kafka_settings.topic(s.name) for s in topics.CATALOGUE)
    assert topics.ensure_topics(kafka_settings) == []


def test_broker_allows_flink_sink_transactions_and_read_committed_hides_aborts(
    kafka_topics: KafkaSettings, kafka_group_id: str
) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = make_admin(kafka_topics)
    try:
        broker_config = admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "1")], config_filter="all")
    finally:
        admin.close()
    max_timeout = int(broker_config["broker"]["1"]["transaction.max.timeout.ms"]["value"])
    assert max_timeout >= FLINK_SINK_TRANSACTION_TIMEOUT_MS

    topic = kafka_topics.topic(topics.ASSIGNMENTS)
    producer = make_producer(
        kafka_topics,
        transactional_id=f"tx-{kafka_group_id}",
        transaction_timeout_ms=FLINK_SINK_TRANSACTION_TIMEOUT_MS,
    )
    try:
        producer.init_transactions()
        producer.begin_transaction()
        for i in range(3):
            producer.send(topic, key=b"c%d" % i, value=b"committed-%d" % i)
        producer.commit_transaction()
        producer.begin_transaction()
        producer.send(topic, key=b"x", value=b"aborted")
        producer.flush()
        producer.abort_transaction()
    finally:
        producer.close()

    consumer = make_consumer(kafka_topics, topic, group_id=kafka_group_id, consumer_timeout_ms=5000)
    try:
        values = sorted(record.value for record in consumer)
    finally:
        consumer.close()
    assert values == [b"committed-0", b"committed-1", b"committed-2"]


def test_port_in_use_gives_one_clear_error(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        with pytest.raises(InfraError, match=f"Port {port} on 127.0.0.1 is already in use"):
            broker.start(load_settings(), port=port, data_dir=tmp_path / "kafka")
        result = CliRunner().invoke(app, ["kafka", "up", "--port", str(port), "--data-dir", str(tmp_path / "k")])
    assert result.exit_code == 2
    assert f"error: Port {port} on 127.0.0.1 is already in use" in result.output
    assert not (tmp_path / "k" / "broker.pid").exists()


@pytest.mark.slow
def test_cli_up_twice_status_down(tmp_path: Path, kafka_broker: KafkaSettings) -> None:
    """A second broker, driven only through the CLI (the session broker must be untouched by `down`).

    Its port comes from ABFLOW_KAFKA_BOOTSTRAP, like every other command's address.
    """
    port = free_port()
    runner = CliRunner(env={"ABFLOW_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"})
    data_dir = tmp_path / "kafka"
    args = ["--data-dir", str(data_dir)]
    try:
        first = runner.invoke(app, ["kafka", "up", *args, "--topic-prefix", "cli."])
        assert first.exit_code == 0, first.output
        assert first.output.strip().splitlines()[-1] == f"127.0.0.1:{port}"
        assert "topics: created cli.sessions" in first.output
        pid = int((data_dir / "broker.pid").read_text())

        second = runner.invoke(app, ["kafka", "up", *args, "--topic-prefix", "cli."])
        assert second.exit_code == 0, second.output
        assert f"ready pid={pid}" in second.output
        assert "topics: all present" in second.output

        status = runner.invoke(app, ["kafka", "status", *args])
        assert status.exit_code == 0
        assert f"running pid={pid} bootstrap=127.0.0.1:{port} ready" in status.output

        other_port = runner.invoke(app, ["kafka", "up", "--port", str(free_port()), *args])
        assert other_port.exit_code == 2
        assert f"already running from '{data_dir.resolve()}' on port {port}" in other_port.output

        elsewhere = runner.invoke(app, ["kafka", "status", *args], env={"ABFLOW_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
        assert elsewhere.exit_code == 1
        assert f"the local broker listens on 127.0.0.1:{port}, but abflow is configured for 127.0.0.1:1" in (
            elsewhere.stderr
        )
    finally:
        down = runner.invoke(app, ["kafka", "down", *args])
    assert down.exit_code == 0
    assert f"kafka: stopped pid={pid}" in down.output
    assert not pid_alive(pid)

    stopped = runner.invoke(app, ["kafka", "status", *args])
    assert stopped.exit_code == 1
    assert "kafka: stopped" in stopped.output
    again = runner.invoke(app, ["kafka", "down", *args])
    assert again.exit_code == 0 and "kafka: not running" in again.output
    # the session broker is still serving
    assert broker.metadata_answered(kafka_broker)
