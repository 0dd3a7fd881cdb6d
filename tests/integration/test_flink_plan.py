"""The job's plan, built without a broker: topology, checkpointing, exactly-once and read_committed settings."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from experiment.core.errors import ConfigError
from experiment.runtime.config import KafkaSettings, load_settings
from flink_pipeline import job

pytestmark = pytest.mark.flink


@pytest.fixture(scope="module")
def built() -> dict:
    settings = replace(load_settings(), kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1", topic_prefix="plan."))
    config = job.JobConfig(checkpoint_interval_ms=3_000, transactional_id_prefix="plan-tx", group_id="plan-group")
    env, t_env = job.create_environment(settings, config)
    job.build_job(env, t_env, settings, config)
    return {"env": env, "plan": json.loads(env.get_execution_plan()), "config": config, "settings": settings}


def _contents(plan: dict) -> list[str]:
    return [f"{node.get('type', '')} :: {node.get('contents', '')}" for node in plan["nodes"]]


def test_plan_has_both_sources_one_python_operator_and_one_sink(built: dict) -> None:
    contents = _contents(built["plan"])
    sources = [c for c in contents if c.startswith("Source:")]
    assert len(sources) == 2, contents
    assert any("abflow_events" in c and "metadata=[topic, partition, offset]" in c for c in sources)
    assert any("abflow_experiments" in c for c in sources)
    python_ops = [c for c in contents if c.startswith("decide")]
    assert len(python_ops) == 1, contents  # all Python work in one operator; keying happens in Java
    assert not any("_stream_key_by_map_operator" in c for c in contents)
    writers = [c for c in contents if "abflow_out" in c and "Writer" in c]
    assert len(writers) == 1, contents


def test_decide_is_keyed_by_hash_and_fed_definitions_by_broadcast(built: dict) -> None:
    decide = next(node for node in built["plan"]["nodes"] if node["type"] == "decide")
    assert sorted(pred["ship_strategy"] for pred in decide["predecessors"]) == ["BROADCAST", "HASH"]


def test_checkpointing_is_exactly_once_at_the_configured_interval(built: dict) -> None:
    checkpoints = built["env"].get_checkpoint_config()
    assert checkpoints.is_checkpointing_enabled()
    assert checkpoints.get_checkpoint_interval() == 3_000
    assert str(checkpoints.get_checkpointing_mode()).endswith("EXACTLY_ONCE")


def test_kafka_ddl_is_exactly_once_read_committed_and_below_broker_max() -> None:
    settings = replace(load_settings(), kafka=KafkaSettings(bootstrap_servers="b:1", topic_prefix="p."))
    config = job.JobConfig()
    sink = job._sink_ddl("out", ["p.assignments"], settings, config)
    assert "'sink.delivery-guarantee' = 'exactly-once'" in sink
    assert f"'sink.transactional-id-prefix' = '{config.transactional_id_prefix}'" in sink
    assert config.transaction_timeout_ms < 3_600_000  # the local broker's transaction.max.timeout.ms
    assert f"'properties.transaction.timeout.ms' = '{config.transaction_timeout_ms}'" in sink
    source = job._source_ddl("src", ["p.sessions", "p.outcomes"], settings, "g", "group-offsets")
    assert "'properties.isolation.level' = 'read_committed'" in source
    assert "'topic' = 'p.sessions;p.outcomes'" in source
    assert "'properties.bootstrap.servers' = 'b:1'" in source


def test_security_properties_reach_the_connector() -> None:
    from pydantic import SecretStr

    kafka = KafkaSettings(
        bootstrap_servers="b:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username="u",
        sasl_password=SecretStr("it's"),
    )
    ddl = job._source_ddl("src", ["s"], replace(load_settings(), kafka=kafka), "g", "earliest-offset")
    assert "'properties.security.protocol' = 'SASL_SSL'" in ddl
    assert "password=\"it''s\"" in ddl  # quotes are escaped, not injected


def test_config_validation_names_the_problem() -> None:
    with pytest.raises(ConfigError, match=r"transaction timeout .* must exceed the checkpoint interval"):
        job.JobConfig(checkpoint_interval_ms=10_000, transaction_timeout_ms=5_000).validate()
    with pytest.raises(ConfigError, match="parallelism must be >= 1, got 0"):
        job.JobConfig(parallelism=0).validate()
