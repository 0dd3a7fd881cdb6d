"""Nothing lost across restarts: the real job process killed, stopped, redeployed, its broker killed.

Each test runs the job the way a user does, with the CLI (`abflow pipeline run --detach`, `stop`, `status`) in its
own process group, sends traffic whose correct output is known (`tests/helpers/fault_traffic.py`), breaks things
the way the world does, and then counts the committed output with a read_committed consumer: 0 lost, 0 duplicated
assignments per (session, experiment) and attributed purchases, no customer changes variant, first exposures keep
their time. Two experiments run at once, as in production: 50/50 at full traffic, and 40/60 at 70% traffic with
its own salt and threshold.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from experiment.core import events
from experiment.core.assignment import assign
from experiment.core.definition import ExperimentDefinition
from experiment.runtime.config import KafkaSettings, load_settings
from experiment.runtime.processes import free_port
from flink_pipeline.rest import FlinkRest
from tests.helpers.abflow_cli import abflow_in_home
from tests.helpers.fault_traffic import (
    count_results,
    plan_traffic,
    produce_purchases,
    produce_round,
    scaled,
)
from tests.helpers.flink_job import definition, publish, warm_up

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.flink, pytest.mark.fault]


@dataclass
class JobCli:
    """`abflow pipeline …` for one test: private home, topics and consumer group."""

    home: Path
    kafka: KafkaSettings
    group_id: str
    reference_data: Path
    categories: int

    def abflow(self, *args: str, timeout_s: float = 180.0) -> subprocess.CompletedProcess[str]:
        return abflow_in_home(self.home, self.kafka, *args, timeout_s=timeout_s)

    def run(self, *extra: str) -> str:
        """`pipeline run --detach`; returns what it said on stderr (which snapshot it resumed from)."""
        result = self.abflow(
            "pipeline",
            "run",
            "--detach",
            "--checkpoint-interval",
            "1s",
            "--categories",
            str(self.categories),
            "--reference-data",
            str(self.reference_data),
            "--group-id",
            self.group_id,
            *extra,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stderr

    def pid(self) -> int:
        return int(json.loads((self.home / "pipeline" / "job.json").read_text(encoding="utf-8"))["pid"])

    def rest(self) -> FlinkRest:
        return FlinkRest(json.loads((self.home / "pipeline" / "job.json").read_text(encoding="utf-8"))["rest"])

    def kill9(self) -> None:
        """`kill -9` of the job's whole process group (the Python process, its JVM and any Python workers)."""
        pid = self.pid()
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        raise AssertionError(f"process group {pid} survived SIGKILL")

    def kill_if_running(self) -> None:
        """Clean-up after a test, whatever state it left the job in."""
        if (self.home / "pipeline" / "job.json").is_file():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid(), signal.SIGKILL)

    def stop(self) -> str:
        result = self.abflow("pipeline", "stop")
        assert result.returncode == 0 and "savepoint: " in result.stdout, result.stdout + result.stderr
        return result.stdout

    def completed_checkpoints(self) -> int:
        job = self.rest().active_job()
        return 0 if job is None else self.rest().health(job["jid"]).checkpoints_completed


def _experiments(job_model, tag: str) -> list[ExperimentDefinition]:
    features = job_model.features
    pmml, version = str(job_model.pmml), job_model.version
    return [
        definition(f"{tag}-half", pmml, version, features),
        definition(
            f"{tag}-seventy",
            pmml,
            version,
            features,
            traffic=0.7,
            variants=(("control", 0.4), ("treatment", 0.6)),
            salt=f"{tag}-own-salt",
            threshold=0.42,
        ),
    ]


@pytest.fixture
def job_cli(kafka_topics: KafkaSettings, kafka_group_id: str, tmp_path: Path, job_model) -> Iterator[JobCli]:
    cli = JobCli(tmp_path / "home", kafka_topics, kafka_group_id, job_model.data_dir, job_model.categories)
    yield cli
    cli.kill_if_running()


def _wait_for_checkpoint(cli: JobCli, timeout_s: float = 60.0) -> None:
    """Let the restarted job complete one checkpoint, so the next kill loses work done after it, not before."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if cli.completed_checkpoints() >= 1:
                return
        except Exception:  # the REST API is not up yet
            pass
        time.sleep(0.5)
    raise AssertionError("the job completed no checkpoint within the timeout")


def _start(cli: JobCli, job_model, tag: str) -> list[ExperimentDefinition]:
    experiments = _experiments(job_model, tag)
    for experiment in experiments:
        publish(cli.kafka, experiment)
    said = cli.run()
    assert "starting fresh" in said, said
    features = events.default_feature_names(job_model.categories)
    warm_up(cli.kafka, _probe_in_every_experiment(experiments, tag), features, len(experiments), timeout_s=180)
    return experiments


def _probe_in_every_experiment(experiments: list[ExperimentDefinition], tag: str) -> str:
    """A warm-up customer inside every experiment's traffic (so the job decides one session per experiment)."""
    for i in range(1_000):
        probe = f"probe-{tag}-{i}"
        if all(assign(d.salt, probe, d.traffic, d.weights()) is not None for d in experiments):
            return probe
    raise AssertionError("no probe customer falls in every experiment's traffic")


def test_kill_9_of_the_job_three_times_loses_nothing(job_cli: JobCli, job_model) -> None:
    rng = random.Random(7)
    experiments = _start(job_cli, job_model, "k9")
    features = events.default_feature_names(job_model.categories)
    plan = plan_traffic(experiments, customers=scaled(3_000, 60), feature_names=features, rounds=3, tag="k9")
    for round_index in range(3):
        produce_round(job_cli.kafka, plan, round_index)
        time.sleep(rng.uniform(0.3, 3.0))  # at a random point while the job works through the round
        job_cli.kill9()
        said = job_cli.run()
        assert "resuming from checkpoint" in said or "resuming from savepoint" in said, said
        _wait_for_checkpoint(job_cli)
    produce_purchases(job_cli.kafka, plan)
    count = count_results(job_cli.kafka, plan, timeout_s=240, quiet_s=4)
    count.assert_exact()
    assert count.complete and count.expected_attributions > 0


def test_stop_with_savepoint_and_redeploy_at_parallelism_2_loses_nothing(job_cli: JobCli, job_model) -> None:
    experiments = _start(job_cli, job_model, "sp")
    features = events.default_feature_names(job_model.categories)
    plan = plan_traffic(experiments, customers=scaled(3_000, 60), feature_names=features, rounds=3, tag="sp")
    produce_round(job_cli.kafka, plan, 0)
    time.sleep(1.0)
    said = job_cli.stop()  # mid-round: the savepoint holds part of round 0
    savepoint = said.split("savepoint: ", 1)[1].splitlines()[0].strip()
    assert Path(savepoint, "_metadata").is_file()
    assert f"resuming from savepoint {savepoint}" in job_cli.run()
    produce_round(job_cli.kafka, plan, 1)
    time.sleep(1.5)
    job_cli.stop()
    said = job_cli.run("--parallelism", "2")  # a redeploy that rescales: key groups move between subtasks
    assert "resuming from savepoint" in said, said
    produce_round(job_cli.kafka, plan, 2)
    produce_purchases(job_cli.kafka, plan)
    count = count_results(job_cli.kafka, plan, timeout_s=240, quiet_s=4)
    count.assert_exact()
    job = job_cli.rest().active_job()
    assert job is not None and job_cli.rest().health(job["jid"]).restarts == 0


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[tuple[KafkaSettings, Path, int]]:
    """A broker of this test alone (the test kills it), on a free port, stopped at the end."""
    from experiment.kafka import broker
    from experiment.kafka.topics import ensure_topics

    data_dir = tmp_path / "broker"
    port = free_port()
    settings = load_settings()
    broker.start(settings, port=port, data_dir=data_dir, timeout_s=120.0, die_with_parent=True)
    kafka = replace(settings.kafka, bootstrap_servers=f"127.0.0.1:{port}", topic_prefix="own.")
    ensure_topics(kafka)
    try:
        yield kafka, data_dir, port
    finally:
        broker.stop(data_dir, timeout_s=30.0)


def test_broker_killed_and_restarted_the_job_heals_by_itself(
    own_broker: tuple[KafkaSettings, Path, int], kafka_group_id: str, tmp_path: Path, job_model
) -> None:
    from experiment.kafka import broker

    kafka, data_dir, port = own_broker
    cli = JobCli(tmp_path / "home", kafka, kafka_group_id, job_model.data_dir, job_model.categories)
    try:
        experiments = _start(cli, job_model, "bk")
        features = events.default_feature_names(job_model.categories)
        plan = plan_traffic(experiments, customers=scaled(3_000, 60), feature_names=features, rounds=3, tag="bk")
        job = cli.rest().active_job()
        assert job is not None
        before = cli.rest().health(job["jid"])
        broker_pid = broker.status(data_dir, probe=False).pid
        assert broker_pid is not None
        produce_round(kafka, plan, 0)
        time.sleep(0.3)  # while the job is deciding round 0 and its transaction is open
        os.kill(broker_pid, signal.SIGKILL)
        time.sleep(15.0)  # longer than a checkpoint interval and the clients' first reconnect attempts
        broker.start(load_settings(), port=port, data_dir=data_dir, timeout_s=120.0, die_with_parent=True)
        for round_index in (1, 2):
            produce_round(kafka, plan, round_index)
        produce_purchases(kafka, plan)
        count = count_results(kafka, plan, timeout_s=300, quiet_s=4)
        count.assert_exact()
        after = cli.rest().health(job["jid"])
        assert after.state == "RUNNING", after  # the same job, never restarted by hand
        # The same job kept going by itself: it waited out the outage (its Kafka clients retry; a checkpoint whose
        # flush cannot reach the broker waits for it) or restarted its tasks from the last checkpoint, and it has
        # completed checkpoints since the broker came back.
        assert after.job_id == before.job_id
        assert after.checkpoints_completed > before.checkpoints_completed, (before, after)
    finally:
        cli.kill_if_running()


def test_a_corrupt_checkpoint_is_an_error_that_names_it_never_a_fresh_start(job_cli: JobCli, job_model) -> None:
    _start(job_cli, job_model, "cc")
    _wait_for_checkpoint(job_cli)
    job_cli.kill9()
    from flink_pipeline.checkpoints import newest_snapshot

    newest = newest_snapshot(job_cli.home, "abflow-decisions")
    assert newest is not None and newest.kind == "checkpoint"
    (newest.path / "_metadata").write_bytes(b"not a checkpoint")
    result = job_cli.abflow("pipeline", "run", "--detach", "--categories", str(job_cli.categories))
    assert result.returncode != 0
    assert f"cannot restore '{newest.path}'" in result.stderr, result.stderr
    assert "starting fresh" not in result.stderr
    assert not (job_cli.home / "pipeline" / "job.json").exists()
