"""Fixtures for the cluster failover tests: a real local cluster per test, started and killed through the CLI.

`cluster` starts `abflow cluster up` (a Flink JobManager, 2 TaskManagers x 2 slots, 3 KRaft brokers) under the test's
own `ABFLOW_HOME` on free ports, and `kill -9`s every process group it started at the end, whatever the test did.
`ABFLOW_CLUSTER_SCALE` (default 1.0) sizes the traffic; CI runs a smoke size (`make test-cluster`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from experiment.runtime.config import KafkaSettings, Settings, load_settings
from flink_pipeline.rest import FlinkRest
from tests.helpers.abflow_cli import abflow_in_home
from tests.integration.conftest import JobModel, job_model

__all__ = ["JobModel", "LocalCluster", "cluster", "cluster_scale", "job_model"]

SCALE_ENV = "ABFLOW_CLUSTER_SCALE"


def cluster_scale(n: int, minimum: int = 1) -> int:
    """`n` times `ABFLOW_CLUSTER_SCALE` (default 1.0), rounded, at least `minimum`."""
    text = os.environ.get(SCALE_ENV, "").strip() or "1.0"
    scale = float(text)
    if not scale > 0:
        raise ValueError(f"{SCALE_ENV} must be a positive number, got {text!r}")
    return max(minimum, round(n * scale))


@dataclass
class LocalCluster:
    """One test's cluster and the `abflow` commands that drive it."""

    home: Path
    kafka: KafkaSettings
    rest_url: str
    group_id: str
    model: JobModel

    @property
    def settings(self) -> Settings:
        return replace(load_settings(), home=self.home, kafka=self.kafka)

    def abflow(self, *args: str, timeout_s: float = 300.0) -> subprocess.CompletedProcess[str]:
        return abflow_in_home(self.home, self.kafka, *args, timeout_s=timeout_s)

    def up(self) -> str:
        result = self.abflow("cluster", "up", "--taskmanagers", "2", "--slots", "2")
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def run(self, *extra: str) -> str:
        """`pipeline run --cluster`; returns what it said on stderr (which snapshot it resumed from)."""
        result = self.abflow(
            "pipeline",
            "run",
            "--cluster",
            self.rest_url,
            "--parallelism",
            "2",
            "--checkpoint-interval",
            "1s",
            "--categories",
            str(self.model.categories),
            "--reference-data",
            str(self.model.data_dir),
            "--group-id",
            self.group_id,
            *extra,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stderr

    def rest(self) -> FlinkRest:
        return FlinkRest(self.rest_url, timeout_s=5.0)

    def job_id(self) -> str:
        return str(json.loads((self.home / "pipeline" / "job.json").read_text(encoding="utf-8"))["jid"])

    def pids(self) -> dict[str, int]:
        from experiment.cluster import flink_standalone, kafka_cluster

        return {**flink_standalone.pids(self.settings), **kafka_cluster.pids(self.settings)}

    def kill9(self, name: str) -> None:
        """`kill -9` of one cluster process's whole group; returns once it is gone."""
        pid = self.pids()[name]
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        raise AssertionError(f"{name} (process group {pid}) survived SIGKILL")

    def kill_all(self) -> None:
        for pid in self.pids().values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def cluster(tmp_path: Path, kafka_group_id: str, job_model: JobModel) -> Iterator[LocalCluster]:
    """A fresh local cluster for one test (see the module docstring); every process is killed afterwards."""
    home = tmp_path / "home"
    bootstrap_cluster = LocalCluster(home, KafkaSettings(topic_prefix="c."), "", kafka_group_id, job_model)
    try:
        said = bootstrap_cluster.up()
        bootstrap = said.split("ABFLOW_KAFKA_BOOTSTRAP=", 1)[1].split()[0]
        rest_url = said.split("pipeline run --cluster ", 1)[1].split()[0]
        yield LocalCluster(
            home, KafkaSettings(bootstrap_servers=bootstrap, topic_prefix="c."), rest_url, kafka_group_id, job_model
        )
    finally:
        bootstrap_cluster.kill_all()
