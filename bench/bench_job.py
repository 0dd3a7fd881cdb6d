"""Whole decision job throughput: Kafka `sessions` in -> `assignments` out, 50/50 split, on the local MiniCluster.

Method: start a private broker (or use `--job-bootstrap`), publish one running 50/50 experiment, pre-produce N
sessions (real feature rows from the test set), then start the job from the earliest offsets. Nothing reads the
output while the job runs (a consumer would compete for the same two cores): the benchmark only watches the end
offset of `assignments` until it stops moving, then reads the committed output. Throughput is sessions decided per
second between the first and the last decision (`decided_ts`, stamped by the job), so JVM start-up, job
deployment and scorer verification are excluded and reported separately; `p10-p90` is the rate over the middle
80 % of decisions (the sustained rate, JIT warm).

Workloads, each a row:
- `returning`: customers come back as in the simulator (`SimulationConfig.sessions_mean` = 2.5 sessions per
  customer, in random order), so about 37 % of sessions are a customer's first exposure (a state write);
- `new`: every session is a new customer: a state read and a state write per session, the worst case;
- `warm-up`: a first, shorter `returning` run, shown but not judged: all runs share PyFlink's one JVM, and the
  first one pays for compiling Flink's and Kafka's hot paths on the same two cores;
- `floor`: the `returning` workload through the same topology with `bench.floor_function.FloorFunction` (does
  nothing) in place of `DecideFunction`: Flink's own cost, the baseline the other rows are compared with.
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

from bench.kafka_broker import bench_kafka

__all__ = ["NAME", "add_arguments", "markdown", "run"]

logger = logging.getLogger(__name__)

NAME = "job"
WORKLOADS = ("returning", "new", "floor")
_QUIET_S = 8.0  # four checkpoints without new committed output: the job has caught up


@dataclass(frozen=True)
class JobRun:
    mode: str
    workload: str
    parallelism: int
    sessions: int
    customers: int
    decided: int
    startup_s: float
    span_s: float
    rate: float
    steady_rate: float
    treatment_share: float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of this benchmark (bench.run shares one parser)."""
    parser.add_argument("--job-sessions", type=int, default=150_000, help="sessions per job run")
    parser.add_argument("--job-modes", default="thread", help="python execution modes to measure (thread,process)")
    parser.add_argument("--job-workloads", default=",".join(WORKLOADS), help="workloads to measure")
    parser.add_argument(
        "--job-warmup-sessions",
        type=int,
        default=50_000,
        help="sessions of a first, reported but not judged run that warms the JVM's JIT (0: none)",
    )
    parser.add_argument("--job-parallelism", type=int, default=1, help="job parallelism")
    parser.add_argument("--job-bootstrap", default=None, help="use this broker instead of starting one")
    parser.add_argument("--job-smoke", action="store_true", help="a tiny run (checks the benchmark works)")


def model_files(workdir: Path) -> tuple[Path, Path, str]:
    pmml, data = Path("artifacts/model/xgboost_model.pmml"), Path("data")
    if pmml.is_file() and (data / "X_test.csv").is_file():
        from experiment.model.card import load_model_card

        card = load_model_card(pmml.parent)
        card.verify_pmml()  # the XML gate and model.json's sha256, before the job reads the PMML
        pmml = card.pmml_path
        return pmml.resolve(), data.resolve(), f"{pmml} (existing)"
    from data.generator import generate, write
    from training.train import TrainConfig, train

    write(generate(), workdir / "data")
    result = train(TrainConfig(data_dir=workdir / "data", out_dir=workdir / "model", quick=True))
    return Path(result.files["pmml"]), workdir / "data", "freshly generated and --quick trained"


def customer_ids(workload: str, n: int, seed: int) -> list[str]:
    """The customer of each session: returning customers as the simulator draws them, or all new ones."""
    if workload == "new":
        return [f"c{i}" for i in range(n)]
    from dataclasses import fields

    from experiment.simulation.simulator import SimulationConfig

    sessions_mean = next(f.default for f in fields(SimulationConfig) if f.name == "sessions_mean")
    assert isinstance(sessions_mean, int | float)
    customers = max(1, round(n / float(sessions_mean)))
    rng = random.Random(seed)
    return [f"c{rng.randrange(customers)}" for _ in range(n)]


def wait_until_caught_up(consumer: Any, topic: str, first_output_timeout_s: float = 300.0) -> None:
    """Block until the committed end offset of `topic` has stopped moving (or nothing ever arrives)."""
    from kafka import TopicPartition

    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})]
    started = last_change = time.monotonic()
    last: dict[Any, int] = {}
    while True:
        time.sleep(1.0)
        ends = consumer.end_offsets(partitions)
        now = time.monotonic()
        if ends != last:
            last, last_change = ends, now
            continue
        produced = sum(ends.values()) > 0
        if (produced and now - last_change > _QUIET_S) or (not produced and now - started > first_output_timeout_s):
            return


def publish_experiment(kafka: Any, pmml: Path, features: tuple[str, ...]) -> None:
    """One running 50/50 experiment with `pmml` on the `experiments` topic (topics created first)."""
    from experiment.core.definition import ExperimentDefinition, ModelRef
    from experiment.kafka.clients import make_producer
    from experiment.kafka.topics import ensure_topics
    from experiment.model.digest import sha256_file

    ensure_topics(kafka)
    categories = sum(1 for f in features if f.startswith("cat"))
    now = int(time.time() * 1000)
    defn = ExperimentDefinition.new(
        id="bench-job",
        name="bench",
        hypothesis="h",
        owner="bench",
        category=f"cat{categories + 1}",
        model=ModelRef(pmml_path=str(pmml), model_version=sha256_file(pmml), features=features),
        threshold=0.5,
        now_ms=now,
    ).transition("launch", now)
    producer = make_producer(kafka)
    producer.send(kafka.topic("experiments"), key=defn.id.encode(), value=defn.to_json().encode())
    producer.flush()
    producer.close()


def feature_rows(data: Path) -> tuple[tuple[str, ...], list[dict[str, float]]]:
    """The model's feature names and its test-set rows (real feature values for the sessions a benchmark sends)."""
    import pandas as pd

    x_test = pd.read_csv(data / "X_test.csv", index_col=0)
    return tuple(x_test.columns), [{k: float(v) for k, v in r.items()} for r in x_test.to_dict("records")]


def produce_sessions(kafka: Any, customers: list[str], rows: list[dict[str, float]]) -> None:
    """One session per entry of `customers`, as fast as the producer goes (pre-produced before the job starts)."""
    from experiment.core.events import session_json
    from experiment.kafka.clients import make_producer

    now = int(time.time() * 1000)
    producer = make_producer(kafka, linger_ms=50, batch_size=512 * 1024, enable_idempotence=False, acks=1)
    for i, cid in enumerate(customers):
        value = session_json(f"s{i}", cid, now + i, rows[i % len(rows)])
        producer.send(kafka.topic("sessions"), key=cid.encode(), value=value.encode())
    producer.flush()
    producer.close()


def _one_run(kafka: Any, pmml: Path, data: Path, mode: str, workload: str, parallelism: int, n: int) -> JobRun:
    import orjson

    from experiment.kafka.clients import make_consumer
    from flink_pipeline.job import ExecutionMode, JobConfig, job_topics, submit

    kafka = replace(kafka, topic_prefix=f"bench-{mode}-{workload}-{random.randrange(16**8):08x}.")
    features, rows = feature_rows(data)
    categories = sum(1 for f in features if f.startswith("cat"))
    publish_experiment(kafka, pmml, features)
    customers = customer_ids(workload, n, seed=n)
    produce_sessions(kafka, customers, rows)

    from experiment.runtime.config import load_settings

    # A private home: the job's checkpoints must never land in the user's `.abflow/` (a later `pipeline run` would
    # try to resume the benchmark's job, whose floor workload is another program).
    home = Path(tempfile.mkdtemp(prefix="abflow-bench-job-home-"))
    settings = replace(load_settings(), kafka=kafka, home=home)
    config = JobConfig(
        execution_mode=cast(ExecutionMode, mode),
        parallelism=parallelism,
        categories=categories,
        group_id=f"{kafka.topic_prefix}g",
        transactional_id_prefix=f"{kafka.topic_prefix}tx",
        startup_mode="earliest-offset",
        reference_rows=str(data),
    )
    function = None
    if workload == "floor":
        from bench.floor_function import FloorFunction

        function = FloorFunction(job_topics(settings).assignments)
    submitted_ms = time.time() * 1000
    client = submit(settings, config, function=function)
    decided: list[int] = []
    variants: dict[str, int] = {}
    consumer = make_consumer(kafka, kafka.topic("assignments"))
    try:
        wait_until_caught_up(consumer, kafka.topic("assignments"))
        while True:
            batch = consumer.poll(timeout_ms=2000)
            if not batch:
                break
            for messages in batch.values():
                for message in messages:
                    record = orjson.loads(message.value)
                    decided.append(int(record["decided_ts"]))
                    variants[record["variant"]] = variants.get(record["variant"], 0) + 1
    finally:
        consumer.close()
        client.cancel().result()
        shutil.rmtree(home, ignore_errors=True)
    decided.sort()
    count = len(decided)
    span = (decided[-1] - decided[0]) / 1000 if count > 1 else float("nan")
    lo, hi = (decided[count // 10], decided[(9 * count) // 10]) if count > 10 else (0, 0)
    steady = 0.8 * count / ((hi - lo) / 1000) if hi > lo else float("nan")
    return JobRun(
        mode=mode,
        workload=workload,
        parallelism=parallelism,
        sessions=n,
        customers=len(set(customers)),
        decided=count,
        startup_s=(decided[0] - submitted_ms) / 1000 if decided else float("nan"),
        span_s=span,
        rate=count / span if span and span > 0 else float("nan"),
        steady_rate=steady,
        treatment_share=variants.get("treatment", 0) / max(count, 1),
    )


def run(args: argparse.Namespace) -> tuple[list[JobRun], dict[str, Any]]:
    """Measure every requested execution mode and workload against one broker."""
    if args.job_smoke:
        tiny = {"job_sessions": 2_000, "job_warmup_sessions": 0, "job_workloads": "returning,floor"}
        tiny["job_modes"] = "thread"
        args = argparse.Namespace(**{**vars(args), **tiny})
    workdir = Path(tempfile.mkdtemp(prefix="abflow-bench-job-"))
    try:
        pmml, data, origin = model_files(workdir)
        with bench_kafka(args.job_bootstrap, workdir) as kafka:
            workloads = [w.strip() for w in args.job_workloads.split(",") if w.strip()]
            unknown = set(workloads) - set(WORKLOADS)
            if unknown:
                raise SystemExit(f"unknown workload(s) {sorted(unknown)}; choose from {list(WORKLOADS)}")
            modes = [m.strip() for m in args.job_modes.split(",") if m.strip()]
            results = []
            if args.job_warmup_sessions > 0:
                # All jobs share one JVM (PyFlink's gateway); the first would otherwise pay the JIT compiling
                # Flink's and Kafka's hot paths on the same two cores, and be judged for it.
                warmup_sessions = args.job_warmup_sessions
                warm = _one_run(kafka, pmml, data, modes[0], "returning", args.job_parallelism, warmup_sessions)
                results.append(replace(warm, workload="warm-up (returning)"))
            results += [
                _one_run(kafka, pmml, data, mode, workload, args.job_parallelism, args.job_sessions)
                for mode in modes
                for workload in workloads
            ]
        return results, {"model": origin, "pmml": str(pmml)}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def markdown(results: list[JobRun], details: dict[str, Any], command: str) -> str:
    """The section for BENCHMARKS.md."""
    floors = {r.mode: r.steady_rate for r in results if r.workload == "floor"}
    lines = [
        f"Command: `{command}`",
        "",
        f"Model: {details['model']}. One running experiment, control/treatment 50/50, traffic 1.0; sessions "
        "pre-produced, job started from the earliest offsets, exactly-once sink, checkpoints every 2 s. "
        "Workloads: `returning` = 2.5 sessions per customer as the simulator sends them, `new` = every session a "
        "new customer (worst case: a state read and write each), `floor` = the same topology with a function that "
        "does nothing (Flink's own cost; the baseline). The warm-up row runs first in the same JVM so that the "
        "judged rows measure a JIT-warm job, as a long-running deployment is; it is shown, not judged.",
        "",
        "| mode | workload | parallelism | sessions | customers | decided | start-up s | span s | sessions/s "
        "| p10-p90 sessions/s | of floor | treatment share |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        floor = floors.get(r.mode)
        share = f"{r.steady_rate / floor:.0%}" if floor and r.workload in ("returning", "new") else "-"
        lines.append(
            f"| {r.mode} | {r.workload} | {r.parallelism} | {r.sessions:,} | {r.customers:,} | {r.decided:,} "
            f"| {r.startup_s:.1f} | {r.span_s:.1f} | {r.rate:,.0f} | {r.steady_rate:,.0f} | {share} "
            f"| {r.treatment_share:.3f} |"
        )
    targets = {"returning": 25_000, "new": 20_000}
    verdicts = [
        f"{r.workload} >= {targets[r.workload]:,} sessions/s: "
        f"{'met' if r.steady_rate >= targets[r.workload] else 'NOT met'} "
        f"({r.steady_rate:,.0f}, {r.mode} mode, parallelism {r.parallelism})"
        for r in results
        if r.workload in targets
    ]
    lines += [
        "",
        "Targets, sustained (p10-p90), exactly-once, Kafka in -> decisions out, 50/50 split: "
        + ("; ".join(verdicts) or "no judged workload ran")
        + ". Start-up (JVM, job deployment, scorer verification against pypmml) is excluded from the rate and shown "
        "separately. Where the time goes: the analysis below this section.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run only this benchmark: `python -m bench.bench_job`."""
    from bench.run import main as run_main

    return run_main(["--only", NAME, *(argv or [])])


if __name__ == "__main__":
    raise SystemExit(main())
