"""`abflow collect` killed with SIGKILL mid-batch, three times: the store ends up exactly as a clean ingest.

The job's output for a known traffic plan (`tests.helpers.fault_traffic`: two experiments, new and returning
customers, purchases inside and outside the attribution window) is written to `assignments` and
`attributed-outcomes` the way the job writes it: in Kafka transactions, with some transactions aborted (their
records reuse real customers' ids with an earlier time and another variant, so a leaked one would change the
numbers). Then `abflow collect --follow` runs as a real process in its own process group and is killed with
`killpg(SIGKILL)` after it has stored at least one batch of this run: once at the moment it is seen holding the
store (inside a batch's store transaction), the other times at a random moment (inside the transaction, between
the store's commit and the Kafka offset commit, or while it polls). After the kills a plain `abflow collect` must
finish, caught up.

The killed-and-restarted store must equal a clean ingest of the same topics into a fresh store: the same rows,
and per experiment and variant the same users, conversions and revenue cents, which must also be the plan's. The
size scales with `ABFLOW_FAULT_SCALE`; `ABFLOW_FAULT_SEED` repeats a run's kill times (it is printed).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb
import pytest

from experiment.core import events
from experiment.core.errors import InfraError
from experiment.kafka.clients import make_producer
from experiment.results.collector import collect
from experiment.results.store import ResultsStore
from experiment.runtime.config import KafkaSettings
from tests.helpers.fault_traffic import count_records, plan_traffic, scaled
from tests.helpers.flink_job import definition, publish

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.fault]

ROOT = Path(__file__).resolve().parents[2]
MODEL_VERSION = "0" * 64
FEATURES = events.default_feature_names(10)
KILLS = 3
TRANSACTION_RECORDS = 2_000
#: `abflow collect`, run by this interpreter (the `abflow` script need not be on PATH).
COLLECT = (sys.executable, "-c", "from experiment.cli.main import main; main()", "collect")


def _write_job_output(kafka: KafkaSettings, records: Iterable[tuple[str, dict[str, Any]]], abort_every: int) -> int:
    """Write (logical topic, record) pairs in transactions like the job's sink; every `abort_every`-th transaction
    also gets an aborted one whose records would shift first exposures if a reader counted them. Returns how many
    records were aborted."""
    producer = make_producer(kafka, transactional_id=f"{kafka.topic_prefix}job-tx", linger_ms=20)
    producer.init_transactions()
    batch: list[tuple[str, dict[str, Any]]] = []
    aborted = 0
    transactions = 0

    def commit() -> None:
        nonlocal transactions, aborted
        producer.begin_transaction()
        for topic, record in batch:
            producer.send(kafka.topic(topic), key=record["customer_id"].encode(), value=events.to_json(record).encode())
        producer.commit_transaction()
        transactions += 1
        if transactions % abort_every == 0:
            producer.begin_transaction()
            for topic, record in batch[:200]:
                if topic != "assignments":
                    continue
                fake = {**record, "event_id": f"aborted-{aborted}", "event_ts": 0, "variant": "aborted"}
                producer.send(kafka.topic(topic), key=fake["customer_id"].encode(), value=events.to_json(fake).encode())
                aborted += 1
            producer.flush()
            producer.abort_transaction()
        batch.clear()

    for item in records:
        batch.append(item)
        if len(batch) == TRANSACTION_RECORDS:
            commit()
    if batch:
        commit()
    producer.close()
    return aborted


def _stored(store: Path) -> int | None:
    """Assignment + outcome rows in the store, or None while the collector holds the file."""
    if not store.exists():
        return 0
    try:
        with ResultsStore(store, read_only=True) as reader:
            row = reader.con.execute(
                "SELECT (SELECT count(*) FROM assignments) + (SELECT count(*) FROM outcomes)"
            ).fetchone()
    except (InfraError, duckdb.Error):
        return None
    return int(row[0])


def _wait_stored(store: Path, predicate: Any, timeout_s: float, what: str) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        n = _stored(store)
        if n is not None and predicate(n):
            return n
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for the store: {what}")


def _stats(store: Path, experiment_ids: Iterable[str]) -> dict[str, Any]:
    with ResultsStore(store, read_only=True) as reader:
        return {exp_id: reader.variant_stats(exp_id) for exp_id in experiment_ids}


def _rows(store: Path) -> tuple[list[dict], list[dict]]:
    with ResultsStore(store, read_only=True) as reader:
        cursor = reader.con.execute("SELECT * FROM assignments")
        names = [c[0] for c in cursor.description]
        assignments = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        cursor = reader.con.execute("SELECT * FROM outcomes")
        names = [c[0] for c in cursor.description]
        outcomes = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    return assignments, outcomes


def _differing_rows(a: Path, b: Path) -> dict[str, int]:
    """Rows in one store and not the other, per table (multiset difference both ways)."""
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH '{a}' AS a (READ_ONLY)")
        con.execute(f"ATTACH '{b}' AS b (READ_ONLY)")
        return {
            table: con.execute(
                f"SELECT (SELECT count(*) FROM (SELECT * FROM a.{table} EXCEPT ALL SELECT * FROM b.{table})) + "
                f"(SELECT count(*) FROM (SELECT * FROM b.{table} EXCEPT ALL SELECT * FROM a.{table}))"
            ).fetchone()[0]
            for table in ("assignments", "outcomes", "experiments", "dead_letters")
        }
    finally:
        con.close()


def test_collector_killed_mid_batch_stores_exactly_what_a_clean_ingest_stores(abflow_settings, tmp_path) -> None:
    kafka = abflow_settings.kafka
    seed = int(os.environ.get("ABFLOW_FAULT_SEED") or time.time_ns() % 2**32)
    rng = random.Random(seed)
    print(f"[collector-crash] ABFLOW_FAULT_SEED={seed}")

    two_arms = definition("crash-two", "model.pmml", MODEL_VERSION, FEATURES, traffic=0.9)
    three_arms = definition(
        "crash-three", "model.pmml", MODEL_VERSION, FEATURES, variants=(("control", 0.4), ("t1", 0.3), ("t2", 0.3))
    )
    running = [two_arms, three_arms]
    plan = plan_traffic(running, customers=scaled(15_000, 600), rounds=3, feature_names=FEATURES, tag="crash")
    output = plan.job_output()
    for d in running:
        publish(kafka, d)
    started = time.monotonic()
    records = [("assignments", r) for r in output.assignments] + [
        ("attributed-outcomes", r) for r in output.attributed_outcomes
    ]
    aborted = _write_job_output(kafka, records, abort_every=4)
    total = len(records)
    print(f"[collector-crash] {total} records ({aborted} aborted) written in {time.monotonic() - started:.1f}s")

    store = tmp_path / "killed.duckdb"
    env = {
        **os.environ,
        "ABFLOW_KAFKA_BOOTSTRAP": kafka.bootstrap_servers,
        "ABFLOW_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "ABFLOW_HOME": str(tmp_path / "home"),
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    env.pop("ABFLOW_CONFIG", None)
    log_path = tmp_path / "collect.log"

    def start(*flags: str) -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            return subprocess.Popen(
                [*COLLECT, "--store", str(store), "--batch-records", str(TRANSACTION_RECORDS), *flags],
                cwd=tmp_path,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )

    kills: list[tuple[str, int, int]] = []
    stored = 0
    for k in range(KILLS):
        process = start("--follow")
        # Odd kills land while the collector holds the store (inside a batch's store transaction, or opening or
        # closing the file); even ones at a random moment, which may also fall between the store's commit and the
        # Kafka offset commit, or in a poll.
        mode = "writing" if k % 2 else "random"
        try:
            before = stored
            _wait_stored(store, lambda n, before=before: n > before or n == total, 120, "progress after a restart")
            if mode == "random":
                time.sleep(rng.uniform(0.0, 0.4))
            else:
                deadline = time.monotonic() + 30
                while _stored(store) is not None and time.monotonic() < deadline:
                    pass  # busy-poll: the kill must follow the moment the collector is seen holding the file
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL
        stored = _wait_stored(store, lambda n: True, 60, "readable after the kill")
        kills.append((mode, before, stored))
    print(f"[collector-crash] kills (when, rows stored before, after): {kills} of {total}")
    assert any(0 < after < total for _mode, _before, after in kills), f"no kill landed mid-ingest: {kills}"

    final = start("--json")
    out, _ = final.communicate(timeout=180)
    assert final.returncode == 0, log_path.read_text(errors="replace")[-3000:]
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary["caught_up"] is True and summary["skipped"] == 0, summary

    clean = tmp_path / "clean.duckdb"
    clean_stats = collect(abflow_settings, str(clean), group_id=kafka.topic("clean-collector"), timeout_s=120)
    assert clean_stats.caught_up and clean_stats.skipped == 0

    # The same rows, and the same statistics, as a clean ingest: nothing lost, nothing doubled.
    assert _differing_rows(store, clean) == dict.fromkeys(("assignments", "outcomes", "experiments", "dead_letters"), 0)
    ids = [d.id for d in running]
    killed_stats, reference = _stats(store, ids), _stats(clean, ids)
    assert killed_stats == reference
    # ... and what the plan says: users, conversions and revenue cents per variant.
    for d in running:
        got = {v: (s.users, s.conversions, s.revenue_cents_sum) for v, s in killed_stats[d.id].items()}
        want = {v: (t.users, t.conversions, t.revenue_cents) for v, t in plan.variant_totals(d.id).items()}
        assert got == want, d.id
    # Per record: every assignment and attribution exactly once, none of the aborted ones.
    assignments, outcomes = _rows(store)
    count = count_records(plan, assignments, outcomes)
    count.assert_exact()
    assert count.assignments_seen + count.attributions_seen == total
