"""Decision latency of the running job at a fixed offered rate: processing and read_committed-visible.

Method: start a private broker (or use `--latency-bootstrap`), publish one running 50/50 experiment, start the job
(exactly-once sink, checkpoints every `--latency-checkpoint-ms`) and wait until it has read the experiment. Then a
producer offers sessions at `--latency-rate` per second for `--latency-seconds`, each stamped with its send time
(`ts`), while a `read_committed` consumer in another process reads `assignments` as they become visible.

Two latencies per session, both from its `ts` (the producer's clock; all processes share this machine's clock):
- processing: until the job decided it (`decided_ts`, stamped by the job when it builds the assignment), i.e.
  producer -> broker -> source -> keyed exchange -> decision;
- visible: until a `read_committed` consumer received it, i.e. processing + the wait for the checkpoint that
  commits the sink's transaction + the consumer's fetch. Its floor is the checkpoint interval.

The first 20 % of the sessions are left out (JIT warm-up); p50, p99 and max are over the rest.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.bench_job import feature_rows, model_files, publish_experiment
from bench.kafka_broker import bench_kafka

__all__ = ["NAME", "add_arguments", "markdown", "run"]

logger = logging.getLogger(__name__)

NAME = "latency"
_WARM_UP_SHARE = 0.2


@dataclass(frozen=True)
class LatencyRun:
    offered_rate: float
    achieved_rate: float
    checkpoint_ms: int
    sessions: int
    received: int
    processing_ms: tuple[float, float, float]  # p50, p99, max
    visible_ms: tuple[float, float, float]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of this benchmark (bench.run shares one parser)."""
    parser.add_argument("--latency-rate", type=float, default=5_000.0, help="offered sessions per second")
    parser.add_argument("--latency-seconds", type=float, default=40.0, help="how long sessions are offered")
    parser.add_argument("--latency-checkpoint-ms", type=int, default=1_000, help="checkpoint interval of the job")
    parser.add_argument("--latency-bootstrap", default=None, help="use this broker instead of starting one")
    parser.add_argument("--latency-smoke", action="store_true", help="a tiny run (checks the benchmark works)")


def _consume(kafka: Any, topic: str, expected: int, timeout_s: float, out: Any) -> None:
    """Child process: receive `expected` assignments read_committed; send (ts, decided_ts, received_ms) rows back."""
    import orjson

    from experiment.kafka.clients import make_consumer

    consumer = make_consumer(kafka, topic, fetch_max_wait_ms=20)
    rows: list[tuple[int, int, int]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(rows) < expected and time.monotonic() < deadline:
            for messages in consumer.poll(timeout_ms=100).values():
                received = int(time.time() * 1000)
                for message in messages:
                    record = orjson.loads(message.value)
                    rows.append((int(record["event_ts"]), int(record["decided_ts"]), received))
    finally:
        consumer.close()
    out.send(rows)
    out.close()


def _offer(kafka: Any, rows: list[dict[str, float]], rate: float, seconds: float) -> tuple[int, float]:
    """Send sessions at `rate` per second, each stamped with its send time; return (sent, achieved rate)."""
    from experiment.core.events import session_json
    from experiment.kafka.clients import make_producer
    from experiment.simulation.simulator import TokenBucket

    producer = make_producer(kafka, linger_ms=2, enable_idempotence=False, acks=1)
    bucket = TokenBucket(rate)
    topic = kafka.topic("sessions")
    total = max(1, round(rate * seconds))
    rng = random.Random(11)
    started = time.monotonic()
    for i in range(total):
        bucket.acquire(1)
        cid = f"c{rng.randrange(total)}"
        value = session_json(f"s{i}", cid, int(time.time() * 1000), rows[i % len(rows)])
        producer.send(topic, key=cid.encode(), value=value.encode())
    producer.flush()
    elapsed = time.monotonic() - started
    producer.close()
    return total, total / elapsed


def _percentiles(values: list[int]) -> tuple[float, float, float]:
    if not values:
        return (float("nan"),) * 3
    ordered = sorted(values)
    return (
        float(ordered[len(ordered) // 2]),
        float(ordered[min(len(ordered) - 1, (99 * len(ordered)) // 100)]),
        float(ordered[-1]),
    )


def run(args: argparse.Namespace) -> tuple[list[LatencyRun], dict[str, Any]]:
    """Start the job, offer sessions at a fixed rate, and measure both latencies of every session."""
    from experiment.cli.demo import wait_for_job_to_read_experiments
    from experiment.runtime.config import load_settings
    from flink_pipeline.job import JobConfig, submit

    rate = 200.0 if args.latency_smoke else args.latency_rate
    seconds = 5.0 if args.latency_smoke else args.latency_seconds
    workdir = Path(tempfile.mkdtemp(prefix="abflow-bench-latency-"))
    try:
        pmml, data, origin = model_files(workdir)
        features, rows = feature_rows(data)
        with bench_kafka(args.latency_bootstrap, workdir) as kafka:
            kafka = replace(kafka, topic_prefix=f"bench-latency-{random.randrange(16**8):08x}.")
            publish_experiment(kafka, pmml, features)
            settings = replace(load_settings(), kafka=kafka, home=workdir / "home")
            config = JobConfig(
                checkpoint_interval_ms=args.latency_checkpoint_ms,
                categories=sum(1 for f in features if f.startswith("cat")),
                group_id=f"{kafka.topic_prefix}g",
                transactional_id_prefix=f"{kafka.topic_prefix}tx",
                startup_mode="earliest-offset",
                reference_rows=str(data),
            )
            client = submit(settings, config)
            try:
                wait_for_job_to_read_experiments(kafka, group_id=config.group_id, timeout_s=300)
                expected = max(1, round(rate * seconds))
                receiver, sender = multiprocessing.get_context("spawn").Pipe(duplex=False)
                consumer = multiprocessing.get_context("spawn").Process(
                    target=_consume,
                    args=(kafka, kafka.topic("assignments"), expected, seconds + 120.0, sender),
                    daemon=True,
                )
                consumer.start()
                time.sleep(2.0)  # the consumer has joined its partitions before the first session
                sent, achieved = _offer(kafka, rows, rate, seconds)
                received: list[tuple[int, int, int]] = receiver.recv()
                consumer.join(timeout=30)
            finally:
                client.cancel().result()
        received.sort()
        steady = received[int(len(received) * _WARM_UP_SHARE) :]
        result = LatencyRun(
            offered_rate=rate,
            achieved_rate=achieved,
            checkpoint_ms=args.latency_checkpoint_ms,
            sessions=sent,
            received=len(received),
            processing_ms=_percentiles([decided - ts for ts, decided, _ in steady]),
            visible_ms=_percentiles([seen - ts for ts, _, seen in steady]),
        )
        logger.info("latency bench %s", result)
        return [result], {"model": origin}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def markdown(results: list[LatencyRun], details: dict[str, Any], command: str) -> str:
    """The section for BENCHMARKS.md."""
    lines = [
        f"Command: `{command}`",
        "",
        f"Model: {details['model']}. One running experiment, 50/50, traffic 1.0; the job runs (exactly-once sink, "
        "parallelism 1) before the first session; sessions offered at a fixed rate, each stamped with its send "
        "time; a read_committed consumer in another process reads the assignments meanwhile. Latency from a "
        "session's send time: *processing* until the job decided it (`decided_ts`), *visible* until the consumer "
        f"received it. The first {_WARM_UP_SHARE:.0%} of sessions are left out (warm-up).",
        "",
        "| offered /s | achieved /s | checkpoint ms | sessions | received | processing p50 / p99 / max ms "
        "| visible p50 / p99 / max ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        p, v = r.processing_ms, r.visible_ms
        lines.append(
            f"| {r.offered_rate:,.0f} | {r.achieved_rate:,.0f} | {r.checkpoint_ms:,} | {r.sessions:,} "
            f"| {r.received:,} | {p[0]:,.0f} / {p[1]:,.0f} / {p[2]:,.0f} | {v[0]:,.0f} / {v[1]:,.0f} / {v[2]:,.0f} |"
        )
    lines.append("")
    for r in results:
        processing_ok = r.processing_ms[1] <= 50
        visible_ok = r.visible_ms[1] <= r.checkpoint_ms + 300
        lines.append(
            f"Targets at {r.offered_rate:,.0f} sessions/s: processing p99 <= 50 ms: "
            f"{'met' if processing_ok else 'NOT met'} ({r.processing_ms[1]:,.0f} ms); visible p99 <= checkpoint "
            f"interval + 300 ms = {r.checkpoint_ms + 300:,} ms: {'met' if visible_ok else 'NOT met'} "
            f"({r.visible_ms[1]:,.0f} ms). All {r.sessions:,} sessions received: "
            f"{'yes' if r.received == r.sessions else f'NO ({r.received:,})'}."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run only this benchmark: `python -m bench.bench_latency`."""
    from bench.run import main as run_main

    return run_main(["--only", NAME, *(argv or [])])


if __name__ == "__main__":
    raise SystemExit(main())
