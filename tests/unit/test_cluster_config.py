"""The local cluster's generated configs and the partitions setting: pure, no JVM started."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from experiment.cli.main import app
from experiment.cluster import flink_standalone, kafka_cluster
from experiment.cluster.submit import jobmanager_address
from experiment.core.errors import ConfigError
from experiment.kafka import topics
from experiment.runtime.config import Settings, load_settings


def _settings(tmp_path: Path) -> Settings:
    return replace(load_settings(env={}), home=tmp_path / "home")


def test_partitions_default_is_unchanged_and_keeps_sessions_and_outcomes_equal() -> None:
    assert load_settings(env={}).kafka.partitions == 4
    assert topics.catalogue(4) == topics.CATALOGUE
    specs = {spec.name: spec.partitions for spec in topics.catalogue(12)}
    assert specs[topics.SESSIONS] == specs[topics.OUTCOMES] == 12
    assert specs[topics.ASSIGNMENTS] == specs[topics.ATTRIBUTED_OUTCOMES] == 12
    assert specs[topics.EXPERIMENTS] == specs[topics.EXPERIMENT_HEALTH] == specs[topics.DEAD_LETTER] == 1


def test_partitions_come_from_the_environment_and_the_config_file(tmp_path: Path) -> None:
    assert load_settings(env={"ABFLOW_KAFKA_PARTITIONS": "8"}).kafka.partitions == 8
    config = tmp_path / "abflow.toml"
    config.write_text("[kafka]\npartitions = 6\n", encoding="utf-8")
    assert load_settings(env={"ABFLOW_CONFIG": str(config)}).kafka.partitions == 6


@pytest.mark.parametrize("bad", ["0", "-3", "two", "1.5"])
def test_a_bad_partition_count_is_an_error_that_names_it(bad: str) -> None:
    with pytest.raises(ConfigError, match=f"kafka partitions must be a whole number >= 1. Got '{bad}'"):
        load_settings(env={"ABFLOW_KAFKA_PARTITIONS": bad})


def test_flink_config_binds_loopback_retains_checkpoints_and_restarts(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    layout = flink_standalone.FlinkLayout(rest_port=1111, rpc_port=2222, taskmanager_ports=(3333, 4444), slots=3)
    text = flink_standalone._config_yaml(settings, layout)
    lines = dict(line.split(": ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert lines["rest.port"] == '"1111"' and lines["jobmanager.rpc.port"] == '"2222"'
    for key in ("rest.bind-address", "jobmanager.bind-host", "taskmanager.bind-host", "taskmanager.host"):
        assert lines[key] == '"127.0.0.1"', key
    assert lines["taskmanager.numberOfTaskSlots"] == '"3"'
    assert lines["jobmanager.memory.process.size"] == '"768m"'
    assert lines["execution.checkpointing.externalized-checkpoint-retention"] == '"RETAIN_ON_CANCELLATION"'
    assert str((settings.home / "checkpoints" / "abflow-decisions").resolve()) in lines["execution.checkpointing.dir"]
    assert lines["restart-strategy.type"] == '"exponential-delay"'
    assert "--add-opens=java.base/java.util=ALL-UNNAMED" in lines["env.java.opts.all"]


def test_kafka_nodes_replicate_three_ways_with_min_isr_two_and_no_unclean_election(tmp_path: Path) -> None:
    nodes = tuple(kafka_cluster.KafkaNode(i, 9000 + i, 9100 + i) for i in (1, 2, 3))
    text = kafka_cluster._properties(_settings(tmp_path), nodes[1], nodes)
    props = dict(line.split("=", 1) for line in text.splitlines() if not line.startswith("#"))
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9101,2@127.0.0.1:9102,3@127.0.0.1:9103"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9002,CONTROLLER://127.0.0.1:9102"
    assert props["default.replication.factor"] == props["transaction.state.log.replication.factor"] == "3"
    assert props["offsets.topic.replication.factor"] == "3"
    assert props["min.insync.replicas"] == props["transaction.state.log.min.isr"] == "2"
    assert props["unclean.leader.election.enable"] == "false"
    assert kafka_cluster.bootstrap_servers(nodes) == "127.0.0.1:9001,127.0.0.1:9002,127.0.0.1:9003"


def test_jobmanager_address_needs_host_and_port() -> None:
    assert jobmanager_address("http://127.0.0.1:8081") == "127.0.0.1:8081"
    assert jobmanager_address("jm.example:8081") == "jm.example:8081"
    with pytest.raises(ConfigError, match="--cluster must look like http://HOST:PORT"):
        jobmanager_address("http://jm.example")


def test_cluster_status_before_any_up_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABFLOW_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(app, ["cluster", "status"])
    assert result.exit_code == 1
    assert "cluster: not running" in result.output


def test_pipeline_run_on_a_cluster_url_without_port_is_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ABFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ABFLOW_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    result = CliRunner().invoke(app, ["pipeline", "run", "--cluster", "http://nohost", "--fresh", "--yes"])
    assert result.exit_code == 2
    assert "error: --cluster must look like http://HOST:PORT" in result.output
