"""Keyed state of many distinct customers: the job's memory, its checkpoint, and its restore, per state backend.

Method, per backend (`--state-backends hashmap,rocksdb`): pre-produce one session for each of
`--state-customers` distinct customers (every one a first exposure: one state entry each), run the job from the
earliest offsets until every session is decided, then read
- the resident memory (RSS) of the MiniCluster's JVM, which hosts the whole job, Python operators included;
- the duration and size of the newest completed checkpoint (Flink's REST API: end-to-end duration, full state
  size and the size this checkpoint wrote: equal for the heap backend, only the increment for RocksDB);
then cancel the job (its checkpoints are retained) and start it again from that checkpoint, timing how long it
takes from submission until the restored job completes its first new checkpoint (state back in place, tasks
running: what a restart costs before the job decides again).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.bench_job import feature_rows, model_files, produce_sessions, publish_experiment, wait_until_caught_up
from bench.kafka_broker import bench_kafka
from experiment.core.errors import InfraError
from flink_pipeline.rest import FlinkRest

__all__ = ["NAME", "add_arguments", "markdown", "run"]

logger = logging.getLogger(__name__)

NAME = "state"


@dataclass(frozen=True)
class StateRun:
    backend: str
    customers: int
    decided: int
    rss_gb: float
    checkpoint_s: float
    state_mb: float
    checkpointed_mb: float
    restore_s: float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of this benchmark (bench.run shares one parser)."""
    parser.add_argument("--state-customers", type=int, default=1_000_000, help="distinct customers (one state each)")
    parser.add_argument("--state-backends", default="hashmap,rocksdb", help="state backends to measure")
    parser.add_argument("--state-bootstrap", default=None, help="use this broker instead of starting one")
    parser.add_argument("--state-smoke", action="store_true", help="a tiny run (checks the benchmark works)")


def _tree_rss_gb(root: int) -> float:
    """Resident memory of process `root` and its descendants (the job's Python process and its MiniCluster JVM)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total * os.sysconf("SC_PAGE_SIZE") / 1e9


def _start_job(args: list[str], home: Path, log: Path) -> subprocess.Popen[bytes]:
    """The job in its own process (as `abflow pipeline run` starts it), so a restore plans the job afresh."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "flink_pipeline.job", "--local", *args],
            env={**os.environ, "ABFLOW_HOME": str(home)},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _stop_job(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the job cancels itself; its checkpoints are retained), then SIGKILL of the group if it hangs."""
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def _latest_checkpoint(rest: FlinkRest, job_id: str, after_id: int = 0, timeout_s: float = 300.0) -> dict[str, Any]:
    """The newest completed checkpoint with an id above `after_id` (waits for it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            latest = (rest.checkpoint_stats(job_id).get("latest") or {}).get("completed")
        except InfraError:  # the REST API answers once the job is deployed
            latest = None
        if latest and int(latest.get("id", 0)) > after_id:
            return dict(latest)
        time.sleep(0.5)
    raise TimeoutError(f"no checkpoint of job {job_id} completed after id {after_id} within {timeout_s:.0f} s")


def _one_backend(kafka: Any, workdir: Path, pmml: Path, data: Path, backend: str, customers: int) -> StateRun:
    from experiment.kafka.clients import make_consumer
    from experiment.runtime.processes import free_port
    from flink_pipeline.checkpoints import newest_snapshot
    from flink_pipeline.job import JobConfig

    kafka = replace(kafka, topic_prefix=f"bench-state-{backend}-{random.randrange(16**8):08x}.")
    features, rows = feature_rows(data)
    publish_experiment(kafka, pmml, features)
    produce_sessions(kafka, [f"c{i}" for i in range(customers)], rows)
    home, port = workdir / f"home-{backend}", free_port()
    job_args = [
        "--bootstrap", kafka.bootstrap_servers, "--topic-prefix", kafka.topic_prefix,
        "--group-id", f"{kafka.topic_prefix}g", "--transactional-id-prefix", f"{kafka.topic_prefix}tx",
        "--startup-mode", "earliest-offset", "--reference-rows", str(data), "--rest-port", str(port),
        "--categories", str(sum(1 for f in features if f.startswith("cat"))), "--state-backend", backend,
    ]  # fmt: skip
    rest = FlinkRest(f"http://127.0.0.1:{port}", timeout_s=30.0)
    log = workdir / f"job-{backend}.log"
    job = _start_job(job_args, home, log)
    consumer = make_consumer(kafka)
    try:
        wait_until_caught_up(consumer, kafka.topic("assignments"))
        decided = _committed_records(consumer, kafka.topic("assignments"))
        job_id = _job_id(rest)
        checkpoint = _latest_checkpoint(rest, job_id)
        checkpoint = _latest_checkpoint(rest, job_id, after_id=int(checkpoint["id"]))  # one taken at rest
        rss = _tree_rss_gb(job.pid)
        logger.info("state bench backend=%s decided=%d rss_gb=%.2f", backend, decided, rss)
    finally:
        consumer.close()
        _stop_job(job)
    snapshot = newest_snapshot(home, JobConfig().job_name)
    if snapshot is None:
        raise RuntimeError(f"no retained checkpoint under {home}; job log: {log}")
    started = time.monotonic()
    restored = _start_job([*job_args, "--restore-from", str(snapshot.path)], home, log)
    try:
        _latest_checkpoint(rest, _job_id(rest))
        restore_s = time.monotonic() - started
    finally:
        _stop_job(restored)
    return StateRun(
        backend=backend,
        customers=customers,
        decided=decided,
        rss_gb=rss,
        checkpoint_s=float(checkpoint.get("end_to_end_duration", 0)) / 1000,
        state_mb=float(checkpoint.get("state_size", 0)) / 1e6,
        checkpointed_mb=float(checkpoint.get("checkpointed_size", checkpoint.get("state_size", 0))) / 1e6,
        restore_s=restore_s,
    )


def _job_id(rest: FlinkRest, timeout_s: float = 300.0) -> str:
    """The id of the job the local REST API runs (waits until the MiniCluster answers)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            job = rest.active_job()
        except InfraError:
            job = None
        if job is not None:
            return str(job["jid"])
        time.sleep(0.5)
    raise TimeoutError(f"no job answered on the local REST API within {timeout_s:.0f} s")


def _partitions(consumer: Any, topic: str) -> list[Any]:
    from kafka import TopicPartition

    return [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})]


def _committed_records(consumer: Any, topic: str) -> int:
    """How many committed records `topic` holds (read with read_committed, values not parsed)."""
    partitions = _partitions(consumer, topic)
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    count = 0
    while batch := consumer.poll(timeout_ms=3_000, max_records=50_000):
        count += sum(len(messages) for messages in batch.values())
    return count


def run(args: argparse.Namespace) -> tuple[list[StateRun], dict[str, Any]]:
    """Measure every requested state backend against one broker."""
    customers = 2_000 if args.state_smoke else args.state_customers
    backends = [b.strip() for b in args.state_backends.split(",") if b.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="abflow-bench-state-"))
    try:
        pmml, data, origin = model_files(workdir)
        with bench_kafka(args.state_bootstrap, workdir) as kafka:
            results = [_one_backend(kafka, workdir, pmml, data, backend, customers) for backend in backends]
        return results, {"model": origin}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def markdown(results: list[StateRun], details: dict[str, Any], command: str) -> str:
    """The section for BENCHMARKS.md."""
    lines = [
        f"Command: `{command}`",
        "",
        f"Model: {details['model']}. One running experiment, 50/50, traffic 1.0; one session per distinct customer "
        "(each a first exposure, so one keyed state entry each), pre-produced; parallelism 1, checkpoints every "
        "2 s. RSS: the MiniCluster JVM (the whole job, Python included) once every session is decided. Checkpoint: "
        "the newest completed one taken after the job caught up. Restore: from submission of a job resuming from "
        "the retained checkpoint until it completes its first checkpoint.",
        "",
        "| backend | customers | decided | JVM RSS GB | checkpoint s | state MB | written MB | restore s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.backend} | {r.customers:,} | {r.decided:,} | {r.rss_gb:.2f} | {r.checkpoint_s:.2f} "
            f"| {r.state_mb:,.1f} | {r.checkpointed_mb:,.1f} | {r.restore_s:.1f} |"
        )
    lines.append("")
    for r in results:
        met = r.rss_gb <= 3 and r.checkpoint_s <= 15 and r.restore_s <= 60
        lines.append(
            f"Targets for {r.customers:,} customers, {r.backend}: RSS <= 3 GB, checkpoint <= 15 s, restore <= 60 s: "
            f"{'met' if met else 'NOT met'}."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run only this benchmark: `python -m bench.bench_state`."""
    from bench.run import main as run_main

    return run_main(["--only", NAME, *(argv or [])])


if __name__ == "__main__":
    raise SystemExit(main())
