"""The control plane through the real `experiments` topic: library round trip, bad records, and every CLI command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from experiment.cli.main import app
from experiment.core.definition import ExperimentDefinition, ModelRef
from experiment.core.errors import ExperimentError
from experiment.kafka import control_plane, topics
from experiment.kafka.clients import make_consumer, make_producer
from experiment.runtime.config import KafkaSettings
from tests.helpers.model_dir import write_model_dir

pytestmark = pytest.mark.kafka


def definition(experiment_id: str, now_ms: int = 1_700_000_000_000) -> ExperimentDefinition:
    model = ModelRef("/models/xgboost_model.pmml", "cd" * 32, ("age", "man", "woman", "cat1"))
    return ExperimentDefinition.new(
        id=experiment_id, name="Show cat61", hypothesis="h", owner="o", category="cat61", model=model,
        threshold=0.5, now_ms=now_ms,
    )  # fmt: skip


def raw_records(kafka: KafkaSettings, group_id: str) -> list[tuple[bytes | None, bytes | None]]:
    consumer = make_consumer(kafka, kafka.topic(topics.EXPERIMENTS), group_id=group_id, consumer_timeout_ms=3000)
    try:
        return [(r.key, r.value) for r in consumer]
    finally:
        consumer.close()


def test_library_round_trip_publishes_every_version(kafka_topics: KafkaSettings, kafka_group_id: str) -> None:
    assert control_plane.read_snapshot(kafka_topics).definitions == {}
    control_plane.create(kafka_topics, definition("exp-a"))
    control_plane.create(kafka_topics, definition("exp-b", now_ms=1_700_000_000_001))
    steps = [
        lambda: control_plane.apply_action(kafka_topics, "exp-a", "launch", now_ms=1_700_000_001_000),
        lambda: control_plane.apply_action(kafka_topics, "exp-a", "pause", now_ms=1_700_000_002_000),
        lambda: control_plane.apply_action(kafka_topics, "exp-a", "resume", now_ms=1_700_000_003_000),
        lambda: control_plane.update(kafka_topics, "exp-a", now_ms=1_700_000_004_000, traffic=0.25),
        lambda: control_plane.apply_action(kafka_topics, "exp-a", "stop", now_ms=1_700_000_005_000),
    ]
    expected = [("running", 1.0), ("paused", 1.0), ("running", 1.0), ("running", 0.25), ("stopped", 0.25)]
    for version, (step, (status, traffic)) in enumerate(zip(steps, expected, strict=True), start=2):
        published = step()
        latest = control_plane.get(kafka_topics, "exp-a")
        assert latest == published
        assert (latest.version, latest.status, latest.traffic) == (version, status, traffic)

    snapshot = control_plane.read_snapshot(kafka_topics)
    assert [d.id for d in snapshot.sorted()] == ["exp-a", "exp-b"]
    assert snapshot.definitions["exp-b"].version == 1 and snapshot.skipped == 0

    records = raw_records(kafka_topics, kafka_group_id)
    a_versions = [json.loads(v)["version"] for k, v in records if k == b"exp-a"]
    assert a_versions == [1, 2, 3, 4, 5, 6]
    assert all(ExperimentDefinition.from_json(v).id == k.decode() for k, v in records)


def test_duplicate_id_unknown_id_and_reshuffle_are_refused(kafka_topics: KafkaSettings) -> None:
    control_plane.create(kafka_topics, definition("dup"))
    with pytest.raises(ExperimentError) as info:
        control_plane.create(kafka_topics, definition("dup"))
    assert str(info.value) == "Experiment 'dup' already exists (version 1, draft); choose another id."

    with pytest.raises(ExperimentError) as info:
        control_plane.get(kafka_topics, "nope")
    assert str(info.value) == f"No experiment 'nope' on topic '{kafka_topics.topic('experiments')}'. Known: dup."

    control_plane.apply_action(kafka_topics, "dup", "launch", now_ms=1_700_000_001_000)
    with pytest.raises(ExperimentError, match="would reshuffle users between variants"):
        control_plane.update(kafka_topics, "dup", now_ms=1_700_000_002_000, variants=[("control", 0.2), ("t", 0.8)])
    assert control_plane.get(kafka_topics, "dup").version == 2  # nothing was published


def test_tombstones_and_malformed_values_are_skipped_and_counted(kafka_topics: KafkaSettings) -> None:
    topic = kafka_topics.topic(topics.EXPERIMENTS)
    producer = make_producer(kafka_topics)
    try:
        producer.send(topic, key=b"bad-json", value=b"{not json")
        producer.send(topic, key=b"gone", value=None)
        invalid = json.loads(definition("bad-weights").to_json())
        invalid["variants"][0]["weight"] = 0.9
        producer.send(topic, key=b"bad-weights", value=json.dumps(invalid).encode())
        producer.send(topic, key=b"good", value=definition("good").to_json().encode())
        producer.flush()
    finally:
        producer.close()
    snapshot = control_plane.read_snapshot(kafka_topics)
    assert list(snapshot.definitions) == ["good"]
    assert snapshot.skipped == 3


def test_publish_creates_a_compacted_topic_when_missing(kafka_settings: KafkaSettings) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType

    from experiment.kafka.clients import make_admin

    control_plane.create(kafka_settings, definition("fresh"))
    admin = make_admin(kafka_settings)
    try:
        name = kafka_settings.topic(topics.EXPERIMENTS)
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)], config_filter="all")
    finally:
        admin.close()
    assert configs["topic"][name]["cleanup.policy"]["value"] == "compact"
    assert control_plane.get(kafka_settings, "fresh").id == "fresh"


# ---------------------------------------------------------------------------------------------------------- CLI
def cli(kafka: KafkaSettings, *args: str) -> tuple[int, str]:
    flags = ["--bootstrap-servers", kafka.bootstrap_servers, "--topic-prefix", kafka.topic_prefix]
    result = CliRunner().invoke(app, ["experiment", *args, *flags])
    return result.exit_code, result.output


def create_args(experiment_id: str, model_dir: Path, *extra: str) -> list[str]:
    return ["create", "--id", experiment_id, "--name", "Show cat61", "--hypothesis", "cat61 lifts conversion",
            "--owner", "growth", "--category", "cat61", "--model", str(model_dir), *extra]  # fmt: skip


def test_cli_lifecycle_round_trip(kafka_topics: KafkaSettings, tmp_path: Path) -> None:
    sha = write_model_dir(tmp_path / "model")
    code, out = cli(kafka_topics, *create_args("cat61-v1", tmp_path / "model", "--traffic", "0.8",
                                               "--variants", "control:0.4,treatment:0.6", "--attribution-window", "2d",
                                               "--planned-sample-size", "12000", "--mde", "0.01"))  # fmt: skip
    assert code == 0, out
    assert out.strip() == (
        "created cat61-v1 version 1 draft (traffic 0.8; control 0.4, treatment 0.6; category cat61; threshold 0.4)"
    )

    code, out = cli(kafka_topics, "show", "cat61-v1")
    assert code == 0, out
    shown = json.loads(out)
    assert shown["model"] == {"pmml_path": str((tmp_path / "model" / "xgboost_model.pmml").resolve()),
                              "model_version": sha, "features": ["a", "b"]}  # fmt: skip
    assert (shown["salt"], shown["attribution_window_s"], shown["planned_sample_size"], shown["mde"]) == (
        "cat61-v1",
        172_800,
        12_000,
        0.01,
    )

    for command, expected in [
        (["launch", "cat61-v1"], "launched cat61-v1 version 2 running"),
        (["pause", "cat61-v1"], "paused cat61-v1 version 3 paused"),
        (["resume", "cat61-v1"], "resumed cat61-v1 version 4 running"),
        (["set-traffic", "cat61-v1", "0.5"], "traffic set: cat61-v1 version 5 running (traffic 0.5;"),
        (["stop", "cat61-v1"], "stopped cat61-v1 version 6 stopped (traffic 0.5;"),
    ]:
        code, out = cli(kafka_topics, *command)
        assert code == 0, out
        assert out.startswith(expected), out

    code, out = cli(kafka_topics, "resume", "cat61-v1")
    assert code == 2
    assert out.strip() == (
        "error: Experiment 'cat61-v1': cannot resume: it is stopped, and resume is only allowed from paused."
    )
    code, out = cli(kafka_topics, "set-traffic", "cat61-v1", "0.3")
    assert code == 2 and "a stopped experiment cannot be changed" in out

    code, out = cli(kafka_topics, "list")
    assert code == 0
    assert out.strip() == (
        "cat61-v1 version 6 stopped (traffic 0.5; control 0.4, treatment 0.6; category cat61; threshold 0.4)"
    )
    code, out = cli(kafka_topics, "list", "--json")
    assert code == 0 and [d["version"] for d in json.loads(out)] == [6]


def test_cli_validation_errors_exit_2_with_exact_messages(kafka_topics: KafkaSettings, tmp_path: Path) -> None:
    write_model_dir(tmp_path / "model")
    code, out = cli(kafka_topics, *create_args("w", tmp_path / "model", "--variants", "control:0.6,treatment:0.6"))
    assert (code, out.strip()) == (
        2, "error: Experiment 'w': the variant weights must sum to 1 (within 1e-9). Got 0.6 + 0.6 = 1.2."
    )  # fmt: skip
    code, out = cli(kafka_topics, *create_args("t", tmp_path / "model", "--traffic", "0"))
    assert (code, out.strip()) == (2, "error: Experiment 't': traffic must be in (0, 1]. Got 0.0.")
    code, out = cli(kafka_topics, *create_args("v", tmp_path / "model", "--variants", "control=0.5"))
    assert (code, out.strip()) == (
        2,
        "error: --variants must look like 'control:0.5,treatment:0.5'. Got 'control=0.5'.",
    )
    code, out = cli(kafka_topics, *create_args("m", tmp_path / "no-model"))
    assert code == 2
    assert out.strip() == f"error: {tmp_path / 'no-model'}: model card not found (run `abflow train` first)."

    assert cli(kafka_topics, *create_args("d", tmp_path / "model"))[0] == 0
    code, out = cli(kafka_topics, *create_args("d", tmp_path / "model"))
    assert (code, out.strip()) == (2, "error: Experiment 'd' already exists (version 1, draft); choose another id.")
    code, out = cli(kafka_topics, "set-traffic", "d", "1.5")
    assert (code, out.strip()) == (2, "error: Experiment 'd': traffic must be in (0, 1]. Got 1.5.")
    code, out = cli(kafka_topics, "launch", "missing")
    assert code == 2 and "error: No experiment 'missing' on topic" in out
    code, out = cli(kafka_topics, "pause", "d")
    assert (code, out.strip()) == (
        2, "error: Experiment 'd': cannot pause: it is draft, and pause is only allowed from running."
    )  # fmt: skip
    code, out = cli(kafka_topics, "list")
    assert code == 0 and out.startswith("d version 1 draft")


def test_cli_launch_refuses_failed_parity_and_tampered_pmml(kafka_topics: KafkaSettings, tmp_path: Path) -> None:
    write_model_dir(tmp_path / "failed", parity_passed=False)
    assert cli(kafka_topics, *create_args("p", tmp_path / "failed"))[0] == 0
    code, out = cli(kafka_topics, "launch", "p")
    assert code == 2
    assert "the PMML failed the parity gate (max |dP| = 0.2, 12 flips on 4000 rows)" in out

    sha = write_model_dir(tmp_path / "tampered")
    assert cli(kafka_topics, *create_args("h", tmp_path / "tampered"))[0] == 0
    pmml = tmp_path / "tampered" / "xgboost_model.pmml"
    pmml.write_text(pmml.read_text(encoding="utf-8").replace("0.25", "0.35"), encoding="utf-8")
    code, out = cli(kafka_topics, "launch", "h")
    assert code == 2
    assert f"but {tmp_path / 'tampered' / 'model.json'} says model_version {sha}" in out

    code, out = cli(kafka_topics, "list")
    assert code == 0
    listed = [line.split()[:4] for line in out.strip().splitlines()]
    assert listed == [["p", "version", "1", "draft"], ["h", "version", "1", "draft"]]  # nothing was launched


def test_cli_stop_archives_a_draft_and_list_hides_it(kafka_topics: KafkaSettings, tmp_path: Path) -> None:
    write_model_dir(tmp_path / "model")
    assert cli(kafka_topics, *create_args("kept", tmp_path / "model"))[0] == 0
    assert cli(kafka_topics, *create_args("gone", tmp_path / "model"))[0] == 0

    code, out = cli(kafka_topics, "stop", "gone")
    assert code == 0, out
    assert out.startswith("archived gone version 2 archived (traffic 1;"), out
    assert control_plane.get(kafka_topics, "gone").status == "archived"

    code, out = cli(kafka_topics, "list")
    assert code == 0 and [line.split()[0] for line in out.strip().splitlines()] == ["kept"]
    code, out = cli(kafka_topics, "list", "--json")
    assert code == 0 and [d["id"] for d in json.loads(out)] == ["kept"]
    code, out = cli(kafka_topics, "list", "--all")
    assert code == 0
    assert [line.split()[:4] for line in out.strip().splitlines()] == [
        ["kept", "version", "1", "draft"],
        ["gone", "version", "2", "archived"],
    ]

    code, out = cli(kafka_topics, "launch", "gone")
    assert (code, out.strip()) == (
        2, "error: Experiment 'gone': cannot launch: it is archived, and launch is only allowed from draft."
    )  # fmt: skip
    code, out = cli(kafka_topics, "set-traffic", "gone", "0.5")
    assert (code, out.strip()) == (
        2, "error: Experiment 'gone': it is archived; an archived experiment cannot be changed."
    )  # fmt: skip
    code, out = cli(kafka_topics, *create_args("gone", tmp_path / "model"))
    assert code == 2 and "already exists (version 2, archived)" in out  # an archived id stays taken


def test_cli_named_control(kafka_topics: KafkaSettings, tmp_path: Path) -> None:
    write_model_dir(tmp_path / "model")
    code, out = cli(kafka_topics, *create_args("named", tmp_path / "model", "--variants", "baseline:0.5,new:0.5",
                                               "--control", "baseline"))  # fmt: skip
    assert code == 0, out
    assert "(traffic 1; baseline 0.5 (control), new 0.5;" in out
    shown = json.loads(cli(kafka_topics, "show", "named")[1])
    assert shown["control"] == "baseline"
    swapped = create_args("swapped", tmp_path / "model", "--variants", "treatment:0.5,control:0.5")
    code, out = cli(kafka_topics, *swapped)
    assert (code, out.strip()) == (
        2,
        "error: Experiment 'swapped': the control must be the first declared variant. "
        "Got control='control' with variants treatment, control.",
    )
    assert "swapped" not in cli(kafka_topics, "list", "--all")[1]  # nothing was published
