"""The collector's fast path (msgspec, per-record validation, columnar insert) stores exactly what the reference
path (`json.loads`, `record_batch`) stores, and skips and counts the same records for the same reasons."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.bench_collect import _TP, _Record, job_output
from experiment.results.collector import Collector, CollectStats
from experiment.results.store import ResultsStore
from experiment.runtime.config import KafkaSettings, load_settings

BIG = 2**63 - 1
TABLES = ("experiments", "assignments", "outcomes", "dead_letters", "experiment_health")


def _assignment(event_id: str, **extra: Any) -> dict[str, Any]:
    rec = {
        "event_id": event_id,
        "experiment_id": "exp-ü",
        "experiment_version": 1,
        "customer_id": "c-1",
        "variant": "treatment",
        "score": 0.5,
        "decision": "show",
        "model_version": "m",
        "first_exposure": True,
        "event_ts": 1,
        "decided_ts": 2,
        "pre_period_purchases": 0,
    }
    return rec | extra


EDGE: list[tuple[str, bytes | None]] = [
    ("experiments", json.dumps({"id": "exp-ü", "version": 2, "updated_ts": None, "name": "日本"}).encode()),
    ("experiments", b"{not json"),
    (
        "assignments",
        json.dumps(
            _assignment(
                "nulls",
                score=None,
                decision=None,
                model_version=None,
                first_exposure=None,
                decided_ts=None,
                experiment_version=None,
            )
        ).encode(),
    ),
    (
        "assignments",
        json.dumps(
            _assignment("unicode-é😀", customer_id="客户\u2028", variant="tréatment"), ensure_ascii=False
        ).encode(),
    ),
    ("assignments", json.dumps(_assignment("escaped-é😀", customer_id="客户")).encode()),
    (
        "assignments",
        json.dumps(
            _assignment(
                "huge", event_ts=BIG, decided_ts=-BIG, pre_period_purchases=BIG, experiment_version=BIG, score=1e308
            )
        ).encode(),
    ),
    ("assignments", json.dumps(_assignment("nulls")).encode()),  # a replay of a key: ignored
    ("assignments", json.dumps(_assignment("dup-key", event_ts=5) | {"event_ts": 6}).encode()),
    (
        "assignments",
        b'{"event_id":"dupe","event_id":"dupe2","experiment_id":"e","customer_id":"c","variant":"v","event_ts":3}',
    ),
    ("assignments", json.dumps(_assignment("int-score", score=1)).encode()),
    ("assignments", json.dumps(_assignment("neg", pre_period_purchases=-1)).encode()),
    ("assignments", json.dumps(_assignment("bool-pre", pre_period_purchases=True)).encode()),
    (
        "assignments",
        b'{"event_id":"subnormal","experiment_id":"e","customer_id":"c","variant":"v","event_ts":3,"score":1e-320}',
    ),
    ("assignments", b"\xff\xfe not utf-8"),
    ("assignments", None),
    ("assignments", b"[1, 2]"),
    ("assignments", b'"just a string"'),
    ("assignments", b'{"event_id": "missing"}'),
    (
        "outcomes",
        json.dumps(
            {
                "experiment_id": "exp-ü",
                "outcome_event_id": "o1",
                "customer_id": "c-1",
                "variant": None,
                "ts": 10,
                "converted": None,
                "revenue": None,
                "seconds_since_exposure": None,
            }
        ).encode(),
    ),
    (
        "outcomes",
        json.dumps(
            {
                "experiment_id": "exp-ü",
                "outcome_event_id": "o2",
                "customer_id": "c-1",
                "variant": "v",
                "ts": 10,
                "revenue": 12.345,
                "converted": 0,
            }
        ).encode(),
    ),
    ("outcomes", b'{"experiment_id":"e","outcome_event_id":"o3","customer_id":"c","ts":1,"revenue":Infinity}'),
    ("outcomes", b'{"experiment_id":"e","outcome_event_id":"o4","customer_id":"c","ts":1,"revenue":"12"}'),
    ("outcomes", b'{"experiment_id":"e","outcome_event_id":"o5","customer_id":"c","ts":1,"revenue":1e400}'),
    (
        "dead_letters",
        json.dumps(
            {
                "source_topic": "sessions",
                "partition": 0,
                "offset": BIG,
                "raw": "\u0000x",
                "raw_encoding": None,
                "error": "bad",
            }
        ).encode(),
    ),
    ("dead_letters", b'{"source_topic": "sessions"}'),
    (
        "health",
        json.dumps(
            {
                "experiment_id": "exp-ü",
                "model_version": "m",
                "experiment_version": None,
                "status": "model_unusable",
                "reason": "r",
                "ts": 5,
            }
        ).encode(),
    ),
    (
        "health",
        json.dumps(
            {
                "experiment_id": "exp-ü",
                "model_version": "m",
                "experiment_version": 1,
                "status": "model_ready",
                "reason": None,
                "ts": 6,
            }
        ).encode(),
    ),
    ("health", json.dumps({"experiment_id": "exp-ü", "model_version": "m", "status": "weird", "ts": 7}).encode()),
]


def _collect(tmp_path: Path, name: str, polls: list[list[tuple[str, bytes | None]]], reference: bool) -> tuple:
    settings = replace(load_settings(), kafka=KafkaSettings(topic_prefix="t."))
    collector = Collector(settings, tmp_path / f"{name}.duckdb", reference=reference)
    physical = {kind: topic for topic, kind in collector.topics.items()}
    stats = CollectStats()
    offsets: dict[str, int] = {}
    for poll in polls:
        batch: dict[Any, list[Any]] = {}
        for kind, value in poll:
            topic = physical[kind]
            offsets[topic] = offsets.get(topic, -1) + 1
            batch.setdefault(_TP(topic, 0), []).append(_Record(topic, 0, offsets[topic], value))
        with collector._open_store() as store:
            collector._store(store, batch, stats)
    with ResultsStore(tmp_path / f"{name}.duckdb", read_only=True) as store:
        rows = {t: store.con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in TABLES}
    return rows, stats


def test_edge_records_store_the_same_rows_and_skips(tmp_path: Path) -> None:
    polls = [EDGE, EDGE]  # the second poll is a replay: nothing changes
    fast_rows, fast = _collect(tmp_path, "fast", polls, reference=False)
    ref_rows, ref = _collect(tmp_path, "ref", polls, reference=True)
    assert fast_rows == ref_rows
    assert fast.as_dict() == ref.as_dict()
    assert fast.skipped > 10 and fast_rows["assignments"] and fast_rows["experiment_health"]
    assert any(r[1] == "unicode-é😀" for r in fast_rows["assignments"])


def test_job_output_stores_the_same_rows(tmp_path: Path) -> None:
    records = job_output(4_000, invalid_every=500)
    polls = [records[i : i + 700] for i in range(0, len(records), 700)]
    kinds = {"attributed-outcomes": "outcomes", "dead-letter": "dead_letters", "experiment-health": "health"}
    polls = [[(kinds.get(topic, topic), value) for topic, value in poll] for poll in polls]
    fast_rows, fast = _collect(tmp_path, "fast", polls, reference=False)
    ref_rows, ref = _collect(tmp_path, "ref", polls, reference=True)
    assert fast_rows == ref_rows
    assert fast.as_dict() == ref.as_dict()
    assert fast.skipped > 0
