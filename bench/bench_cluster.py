"""The decision job on the local real cluster: Flink standalone (JobManager + 2 TaskManagers) and 3 Kafka brokers.

Method: `abflow cluster up --taskmanagers 2 --slots 1` under a private home (free ports), one running 50/50
experiment, N sessions pre-produced (returning customers, as in the `job` benchmark) to the replicated topics,
then `abflow pipeline run --cluster URL --parallelism P` (the same command a user runs) and the same measurement as
the `job` benchmark: sessions decided per second between the first and the last decision (`decided_ts`), and over
the middle 80 %. Everything shares this machine's two cores: the JobManager, the TaskManagers, three brokers
(replication factor 3, acks from 2 in-sync replicas) and the benchmark itself; the row shows what the deployment
costs next to the MiniCluster, not what more machines would give.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.bench_job import (
    customer_ids,
    feature_rows,
    model_files,
    produce_sessions,
    publish_experiment,
    wait_until_caught_up,
)

__all__ = ["NAME", "add_arguments", "markdown", "run"]

logger = logging.getLogger(__name__)

NAME = "cluster"


@dataclass(frozen=True)
class ClusterRun:
    taskmanagers: int
    parallelism: int
    brokers: int
    sessions: int
    decided: int
    span_s: float
    rate: float
    steady_rate: float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of this benchmark (bench.run shares one parser)."""
    parser.add_argument("--cluster-sessions", type=int, default=150_000, help="sessions of the measured run")
    parser.add_argument("--cluster-parallelism", type=int, default=2, help="job parallelism on the cluster")
    parser.add_argument("--cluster-smoke", action="store_true", help="a tiny run (checks the benchmark works)")


def _abflow(env: dict[str, str], *args: str, timeout_s: float = 600.0) -> str:
    """Run the product's CLI as a user would; raise with its output when it fails."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "abflow"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"abflow {' '.join(args)} failed: {result.stdout}{result.stderr}")
    return result.stdout


def _decided_timestamps(kafka: Any) -> list[int]:
    """`decided_ts` of every committed assignment, once the job has caught up."""
    import orjson

    from experiment.kafka.clients import make_consumer

    topic = kafka.topic("assignments")
    consumer = make_consumer(kafka)
    try:
        wait_until_caught_up(consumer, topic)
        consumer.subscribe([topic])
        decided: list[int] = []
        while batch := consumer.poll(timeout_ms=3_000, max_records=50_000):
            for messages in batch.values():
                decided.extend(int(orjson.loads(m.value)["decided_ts"]) for m in messages)
        return sorted(decided)
    finally:
        consumer.close()


def run(args: argparse.Namespace) -> tuple[list[ClusterRun], dict[str, Any]]:
    """Bring the cluster up, run the job on it once, measure, and take everything down again."""
    from experiment.runtime.config import KafkaSettings

    n = 3_000 if args.cluster_smoke else args.cluster_sessions
    workdir = Path(tempfile.mkdtemp(prefix="abflow-bench-cluster-"))
    env = {**os.environ, "ABFLOW_HOME": str(workdir / "home"), "ABFLOW_KAFKA_TOPIC_PREFIX": "bench."}
    env.pop("ABFLOW_KAFKA_BOOTSTRAP", None)
    try:
        pmml, data, origin = model_files(workdir)
        said = _abflow(env, "cluster", "up", "--taskmanagers", "2", "--slots", "1", "--brokers", "3")
        bootstrap = said.split("ABFLOW_KAFKA_BOOTSTRAP=", 1)[1].split()[0]
        rest_url = said.split("pipeline run --cluster ", 1)[1].split()[0]
        env["ABFLOW_KAFKA_BOOTSTRAP"] = bootstrap
        kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix="bench.")
        try:
            features, rows = feature_rows(data)
            publish_experiment(kafka, pmml, features)
            produce_sessions(kafka, customer_ids("returning", n, seed=n), rows)
            categories = sum(1 for f in features if f.startswith("cat"))
            _abflow(
                env,
                "pipeline",
                "run",
                "--cluster",
                rest_url,
                "--parallelism",
                str(args.cluster_parallelism),
                "--categories",
                str(categories),
                "--reference-data",
                str(data),
            )
            decided = _decided_timestamps(kafka)
        finally:
            try:
                _abflow(env, "cluster", "down", timeout_s=300.0)
            except RuntimeError as error:
                logger.error("cluster down failed: %s", error)
        count = len(decided)
        span = (decided[-1] - decided[0]) / 1000 if count > 1 else float("nan")
        lo, hi = (decided[count // 10], decided[(9 * count) // 10]) if count > 10 else (0, 0)
        result = ClusterRun(
            taskmanagers=2,
            parallelism=args.cluster_parallelism,
            brokers=3,
            sessions=n,
            decided=count,
            span_s=span,
            rate=count / span if span and span > 0 else float("nan"),
            steady_rate=0.8 * count / ((hi - lo) / 1000) if hi > lo else float("nan"),
        )
        logger.info("cluster bench %s", result)
        return [result], {"model": origin}
    finally:
        time.sleep(1.0)
        shutil.rmtree(workdir, ignore_errors=True)


def markdown(results: list[ClusterRun], details: dict[str, Any], command: str) -> str:
    """The section for BENCHMARKS.md."""
    lines = [
        f"Command: `{command}`",
        "",
        f"Model: {details['model']}. `abflow cluster up --taskmanagers 2 --slots 1 --brokers 3` (Flink standalone "
        "and a 3-node KRaft cluster, replication factor 3, min.insync.replicas 2), then `abflow pipeline run "
        "--cluster URL --parallelism P`; one running 50/50 experiment, returning customers (2.5 sessions each), "
        "sessions pre-produced, exactly-once sink, checkpoints every 2 s. Every process shares this machine's two "
        "cores, so the row is the deployment's cost beside the `job` rows, not a scaling result.",
        "",
        "| TaskManagers | parallelism | brokers | sessions | decided | span s | sessions/s | p10-p90 sessions/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.taskmanagers} | {r.parallelism} | {r.brokers} | {r.sessions:,} | {r.decided:,} | {r.span_s:.1f} "
            f"| {r.rate:,.0f} | {r.steady_rate:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run only this benchmark: `python -m bench.bench_cluster`."""
    from bench.run import main as run_main

    return run_main(["--only", NAME, *(argv or [])])


if __name__ == "__main__":
    raise SystemExit(main())
