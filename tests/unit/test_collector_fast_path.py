"""The collector's fast path (msgspec, per-record validation, columnar insert) stores exactly what the reference
path (`json.loads`, `record_batch`) stores, and skips and counts the same records for the same reasons."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.bench_collect import job_output
from experiment.core.errors import DataValidationError
from experiment.results.collector import CollectStats
from experiment.results.store import ResultsStore
from tests.helpers.collect_polls import collect_polls

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
    return collect_polls(tmp_path, name, polls, reference=reference, tables=TABLES)


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


def test_fast_rows_follow_the_tables_column_order() -> None:
    from experiment.results import collector
    from experiment.results.schema import ASSIGNMENT_COLUMNS, OUTCOME_COLUMNS

    assert collector._AssignmentRecord.__struct_fields__ == ASSIGNMENT_COLUMNS
    assert collector._OutcomeRecord.__struct_fields__ == tuple(
        "revenue" if c == "revenue_cents" else c for c in OUTCOME_COLUMNS
    )


def test_regression_a_lone_surrogate_is_skipped_with_its_reason_and_never_fails_the_batch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: `"\\ud800"` (valid JSON, not valid Unicode) passed the checks and failed the whole batch's
    insert (pyarrow cannot encode it), so the collector crashed and, replaying the same poll, never got past it."""
    surrogate = "bad-\ud800"
    poll: list[tuple[str, bytes | None]] = [
        ("assignments", json.dumps(_assignment("good-1")).encode()),
        ("assignments", json.dumps(_assignment("lone-customer", customer_id=surrogate)).encode()),
        ("assignments", json.dumps(_assignment("lone-decision", decision=surrogate)).encode()),
        ("assignments", json.dumps(_assignment(surrogate)).encode()),
        ("assignments", json.dumps(_assignment("pair-ok", customer_id="\ud83d\ude00")).encode()),  # a valid pair
        (
            "outcomes",
            json.dumps(
                {"experiment_id": "e", "outcome_event_id": "o-lone", "customer_id": "c", "ts": 1, "variant": surrogate}
            ).encode(),
        ),
        (
            "dead_letters",
            json.dumps({"source_topic": "sessions", "partition": 0, "offset": 1, "raw": surrogate}).encode(),
        ),
        (
            "health",
            json.dumps(
                {"experiment_id": "e", "model_version": "m", "status": "model_unusable", "reason": surrogate, "ts": 1}
            ).encode(),
        ),
        ("assignments", json.dumps(_assignment("good-2")).encode()),
    ]
    fast_rows, fast = _collect(tmp_path, "fast", [poll, poll], reference=False)
    ref_rows, ref = _collect(tmp_path, "ref", [poll, poll], reference=True)
    assert fast_rows == ref_rows and fast.as_dict() == ref.as_dict()
    assert sorted(r[1] for r in fast_rows["assignments"]) == ["good-1", "good-2", "pair-ok"]
    assert not fast_rows["outcomes"] and not fast_rows["dead_letters"] and not fast_rows["experiment_health"]
    assert fast.skipped == 2 * 6
    logged = [r.getMessage() for r in caplog.records if "record skipped" in r.getMessage()]
    assert sum("is not valid Unicode (surrogates not allowed" in m for m in logged) == len(logged) >= 2 * 6
    with ResultsStore(tmp_path / "direct.duckdb") as store, pytest.raises(DataValidationError, match="surrogate"):
        store.record_batch(assignments=[_assignment("x", customer_id=surrogate)])


def test_regression_values_of_the_wrong_sql_type_are_skipped_not_fatal(tmp_path: Path) -> None:
    """A value DuckDB's column cannot take (text for a number, a number for text, out of BIGINT) used to fail the
    whole batch's insert; each such record is now skipped with its reason and the rest are stored."""
    poll: list[tuple[str, bytes | None]] = [
        ("assignments", json.dumps(_assignment("good")).encode()),
        ("assignments", json.dumps(_assignment("decision-int", decision=5)).encode()),
        ("assignments", json.dumps(_assignment("first-text", first_exposure="yes")).encode()),
        ("assignments", json.dumps(_assignment("version-text", experiment_version="1")).encode()),
        ("assignments", json.dumps(_assignment("ts-text", event_ts="soon")).encode()),
        ("assignments", json.dumps(_assignment("ts-huge", event_ts=2**64)).encode()),
        ("assignments", json.dumps(_assignment("score-text", score="high")).encode()),
        ("assignments", json.dumps(_assignment("pre-too-big", pre_period_purchases=2**53 + 1)).encode()),
        (
            "outcomes",
            b'{"experiment_id":"e","outcome_event_id":"o-huge","customer_id":"c","ts":1,"revenue":1'
            + b"0" * 400
            + b"}",
        ),
        (
            "outcomes",
            b'{"experiment_id":"e","outcome_event_id":"o-cents","customer_id":"c","ts":1,"revenue":1e300}',
        ),
        ("dead_letters", json.dumps({"source_topic": "s", "partition": "p", "offset": 1}).encode()),
    ]
    fast_rows, fast = _collect(tmp_path, "fast", [poll], reference=False)
    ref_rows, ref = _collect(tmp_path, "ref", [poll], reference=True)
    assert fast_rows == ref_rows and fast.as_dict() == ref.as_dict()
    assert [r[1] for r in fast_rows["assignments"]] == ["good"]
    assert fast.skipped == len(poll) - 1


class _RefusingStore:
    """A store that refuses any transaction holding a row whose id is in `refused` (as DuckDB would)."""

    def __init__(self, refused: set[str]) -> None:
        self.refused = refused
        self.written: list[str] = []

    def record_rows(self, **rows: list[tuple[Any, ...]]) -> None:
        ids = [row[1] for kind_rows in rows.values() for row in kind_rows]
        if self.refused & set(ids):
            raise DataValidationError(f"refused {sorted(self.refused & set(ids))}")
        self.written += ids


def test_a_batch_the_store_still_refuses_is_split_until_only_the_refused_rows_are_skipped() -> None:
    from experiment.results.collector import _write

    store = _RefusingStore({"a7", "o3"})
    rows: dict[str, list[Any]] = {
        "assignments": [("e", f"a{i}") for i in range(20)],
        "outcomes": [("e", f"o{i}") for i in range(5)],
        "dead_letters": [],
    }
    stats = CollectStats()
    stored = _write(store, rows, stats)  # type: ignore[arg-type]
    assert stored == {"assignments": 19, "outcomes": 4, "dead_letters": 0}
    assert set(store.written) == ({f"a{i}" for i in range(20)} - {"a7"}) | ({f"o{i}" for i in range(5)} - {"o3"})
    assert len(store.written) == 23 and stats.skipped == 2


def test_kafka_client_checks_record_crcs_in_c() -> None:
    """kafka-python checks every fetched batch's CRC-32C; without the `crc32c` package it does so in pure Python,
    which was half of `abflow collect`'s time. The package is a dependency so that the check stays on and cheap."""
    from kafka.record import util

    assert util._crc32c is not util.crc32c_py
