"""Nothing lost when a process of the real cluster dies: a TaskManager, a Kafka broker, the JobManager.

Each test starts a real local cluster (`abflow cluster up`: a JobManager, 2 TaskManagers x 2 slots, 3 KRaft brokers
with replication 3 and min ISR 2), submits the unchanged job at parallelism 2 with `abflow pipeline run --cluster`,
sends traffic whose correct output is known (`tests/helpers/fault_traffic.py`), `kill -9`s one process while
sessions flow, and counts the committed output with a read_committed consumer: 0 lost, 0 duplicated assignments
and attributed purchases, no customer changes variant, first exposures keep their time.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest

from experiment.core import events
from experiment.core.assignment import assign
from experiment.core.definition import ExperimentDefinition
from tests.cluster.conftest import LocalCluster, cluster_scale
from tests.helpers.fault_traffic import TrafficPlan, count_results, plan_traffic, produce_purchases, produce_round
from tests.helpers.flink_job import definition, publish, warm_up

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.flink, pytest.mark.fault, pytest.mark.cluster]


def _experiments(cluster: LocalCluster, tag: str) -> list[ExperimentDefinition]:
    model = cluster.model
    pmml, version = str(model.pmml), model.version
    return [
        definition(f"{tag}-half", pmml, version, model.features),
        definition(
            f"{tag}-seventy",
            pmml,
            version,
            model.features,
            traffic=0.7,
            variants=(("control", 0.4), ("treatment", 0.6)),
            salt=f"{tag}-own-salt",
            threshold=0.42,
        ),
    ]


def _probe(experiments: list[ExperimentDefinition], tag: str) -> str:
    for i in range(1_000):
        probe = f"probe-{tag}-{i}"
        if all(assign(d.salt, probe, d.traffic, d.weights()) is not None for d in experiments):
            return probe
    raise AssertionError("no probe customer falls in every experiment's traffic")


def _start(cluster: LocalCluster, tag: str) -> TrafficPlan:
    """Publish two experiments, submit the job fresh, wait until it decides, and plan the traffic."""
    experiments = _experiments(cluster, tag)
    for experiment in experiments:
        publish(cluster.kafka, experiment)
    said = cluster.run()
    assert "starting fresh" in said, said
    features = events.default_feature_names(cluster.model.categories)
    warm_up(cluster.kafka, _probe(experiments, tag), features, len(experiments), timeout_s=240)
    customers = cluster_scale(3_000, 60)
    return plan_traffic(experiments, customers=customers, feature_names=features, rounds=3, tag=tag)


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception:  # the REST API is restarting
            pass
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout_s:.0f} s: {what}")


def _count_exact(cluster: LocalCluster, plan: TrafficPlan) -> None:
    count = count_results(cluster.kafka, plan, timeout_s=300, quiet_s=4)
    count.assert_exact()
    assert count.complete and count.expected_attributions > 0, count.summary()


def test_kill_9_of_a_taskmanager_fails_over_from_the_last_checkpoint(cluster: LocalCluster) -> None:
    plan = _start(cluster, "tm")
    job_id = cluster.job_id()
    victim = sorted(cluster.rest().job_taskmanagers(job_id))[0]  # a TaskManager that runs tasks of the job
    produce_round(cluster.kafka, plan, 0)
    time.sleep(random.Random(11).uniform(0.3, 2.0))
    cluster.kill9(victim)
    produce_round(cluster.kafka, plan, 1)
    # Flink notices the lost TaskManager and restarts the tasks from the last checkpoint on the slots left.
    _wait_for(lambda: cluster.rest().health(job_id).restarts >= 1, "the job restarts after the TaskManager died")
    _wait_for(lambda: cluster.rest().tasks_running(job_id), "the job runs again on the remaining TaskManager")
    cluster.up()  # the dead TaskManager comes back and registers; the job keeps running where it is
    produce_round(cluster.kafka, plan, 2)
    produce_purchases(cluster.kafka, plan)
    _count_exact(cluster, plan)
    health = cluster.rest().health(job_id)
    assert health.state == "RUNNING" and health.job_id == job_id, health


def test_kill_9_of_a_kafka_broker_then_restart_loses_nothing(cluster: LocalCluster) -> None:
    plan = _start(cluster, "bk")
    job_id = cluster.job_id()
    produce_round(cluster.kafka, plan, 0)
    time.sleep(0.5)  # while the job decides round 0 and its transaction is open
    cluster.kill9("broker-2")
    produce_round(cluster.kafka, plan, 1)  # acks=all still succeeds: 2 in-sync replicas remain
    time.sleep(5.0)
    cluster.up()  # broker-2 restarts on its ports and catches up as a follower
    produce_round(cluster.kafka, plan, 2)
    produce_purchases(cluster.kafka, plan)
    _count_exact(cluster, plan)
    health = cluster.rest().health(job_id)
    assert health.state == "RUNNING" and health.job_id == job_id, health


def test_kill_9_of_the_jobmanager_then_run_resumes_from_the_retained_checkpoint(cluster: LocalCluster) -> None:
    plan = _start(cluster, "jm")
    produce_round(cluster.kafka, plan, 0)
    _wait_for(lambda: cluster.rest().health(cluster.job_id()).checkpoints_completed >= 2, "two checkpoints")
    time.sleep(random.Random(13).uniform(0.3, 2.0))
    cluster.kill9("jobmanager")
    produce_round(cluster.kafka, plan, 1)
    cluster.up()  # a new JobManager on the same ports; the TaskManagers register with it again
    said = cluster.run()
    assert "resuming from checkpoint" in said, said
    produce_round(cluster.kafka, plan, 2)
    produce_purchases(cluster.kafka, plan)
    _count_exact(cluster, plan)
