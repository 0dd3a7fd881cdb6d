"""Run the collector's store step on in-memory polls (no broker): the rows it stored and its stats.

Used to hold the collector's fast path equal to its reference path, record by record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.bench_collect import _TP, _Record
from experiment.results.collector import Collector, CollectStats
from experiment.results.store import ResultsStore
from experiment.runtime.config import KafkaSettings, load_settings

__all__ = ["collect_polls"]


def collect_polls(
    tmp_path: Path,
    name: str,
    polls: list[list[tuple[str, bytes | None]]],
    *,
    reference: bool,
    tables: Sequence[str],
) -> tuple[dict[str, list[Any]], CollectStats]:
    """Store each poll (a list of (kind, raw value)) in one store step, then read `tables` back, sorted."""
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
        rows = {table: store.con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall() for table in tables}
    return rows, stats
