"""The results store's tables, and how one topic record becomes one row of them.

Why apart from the store: this is the write-side contract (which fields a record must have, which types it may
carry, what a replay is keyed by), checked record by record before anything is written; the store itself is about
transactions and queries. A record that fails here raises `DataValidationError` naming it, and the collector skips
it. An experiment definition needs only an id and an int version here (the upsert key and its order), so the store
keeps whatever the `experiments` topic carried; the readers parse it with the definition's own parser.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from experiment.core.errors import DataValidationError
from experiment.core.events import HEALTH_STATUSES
from experiment.stats.sufficient import to_cents

__all__ = [
    "ASSIGNMENT_COLUMNS",
    "DEAD_COLUMNS",
    "HEALTH_COLUMNS",
    "OUTCOME_COLUMNS",
    "ROW_BUILDERS",
    "SCHEMA",
    "assignment_row",
    "dead_row",
    "experiment_row",
    "health_row",
    "outcome_row",
]

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS experiments (
        id VARCHAR PRIMARY KEY, version BIGINT NOT NULL, updated_ts BIGINT, definition VARCHAR NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS assignments (
        experiment_id VARCHAR NOT NULL, event_id VARCHAR NOT NULL, experiment_version BIGINT,
        customer_id VARCHAR NOT NULL, variant VARCHAR NOT NULL, score DOUBLE, decision VARCHAR,
        model_version VARCHAR, first_exposure BOOLEAN, event_ts BIGINT NOT NULL, decided_ts BIGINT,
        pre_period_purchases BIGINT NOT NULL, PRIMARY KEY (experiment_id, event_id))""",
    """CREATE TABLE IF NOT EXISTS outcomes (
        experiment_id VARCHAR NOT NULL, outcome_event_id VARCHAR NOT NULL, customer_id VARCHAR NOT NULL,
        variant VARCHAR, ts BIGINT NOT NULL, converted BOOLEAN NOT NULL, revenue_cents BIGINT NOT NULL,
        seconds_since_exposure DOUBLE, PRIMARY KEY (experiment_id, outcome_event_id))""",
    """CREATE TABLE IF NOT EXISTS dead_letters (
        source_topic VARCHAR NOT NULL, kafka_partition BIGINT NOT NULL, kafka_offset BIGINT NOT NULL,
        raw VARCHAR, raw_encoding VARCHAR, error VARCHAR,
        PRIMARY KEY (source_topic, kafka_partition, kafka_offset))""",
    # `revision` counts the newer records that replaced a row, so that `version()` moves when a status changes.
    """CREATE TABLE IF NOT EXISTS experiment_health (
        experiment_id VARCHAR NOT NULL, model_version VARCHAR NOT NULL, experiment_version BIGINT,
        status VARCHAR NOT NULL, reason VARCHAR, ts BIGINT NOT NULL, revision BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (experiment_id, model_version))""",
)

ASSIGNMENT_COLUMNS = (
    "experiment_id",
    "event_id",
    "experiment_version",
    "customer_id",
    "variant",
    "score",
    "decision",
    "model_version",
    "first_exposure",
    "event_ts",
    "decided_ts",
    "pre_period_purchases",
)
OUTCOME_COLUMNS = (
    "experiment_id",
    "outcome_event_id",
    "customer_id",
    "variant",
    "ts",
    "converted",
    "revenue_cents",
    "seconds_since_exposure",
)
DEAD_COLUMNS = ("source_topic", "kafka_partition", "kafka_offset", "raw", "raw_encoding", "error")
HEALTH_COLUMNS = ("experiment_id", "model_version", "experiment_version", "status", "reason", "ts")


def _require(rec: Mapping[str, Any], kind: str, names: Iterable[str]) -> None:
    missing = [n for n in names if rec.get(n) is None]
    if missing:
        ident = rec.get("event_id") or rec.get("outcome_event_id") or "?"
        raise DataValidationError(f"{kind} record {ident!r} lacks required field(s) {missing}; got keys {sorted(rec)}")


def assignment_row(rec: Mapping[str, Any]) -> tuple[Any, ...]:
    """An `assignments` record as a row of `ASSIGNMENT_COLUMNS`; a replay is keyed by (experiment_id, event_id)."""
    _require(rec, "assignments", ("event_id", "experiment_id", "customer_id", "variant", "event_ts"))
    pre = rec.get("pre_period_purchases", 0)
    if isinstance(pre, bool) or not isinstance(pre, int) or pre < 0:
        raise DataValidationError(
            f"assignments record {rec['event_id']!r}: pre_period_purchases must be an int >= 0, got {pre!r}"
        )
    score = rec.get("score")
    return (
        str(rec["experiment_id"]),
        str(rec["event_id"]),
        rec.get("experiment_version"),
        str(rec["customer_id"]),
        str(rec["variant"]),
        None if score is None else float(score),
        rec.get("decision"),
        rec.get("model_version"),
        rec.get("first_exposure"),
        int(rec["event_ts"]),
        rec.get("decided_ts"),
        pre,
    )


def outcome_row(rec: Mapping[str, Any]) -> tuple[Any, ...]:
    """An `attributed-outcomes` record as a row of `OUTCOME_COLUMNS`, revenue in integer cents (exact sums)."""
    _require(rec, "attributed-outcomes", ("outcome_event_id", "experiment_id", "customer_id", "ts"))
    revenue = rec.get("revenue") or 0.0
    if not isinstance(revenue, int | float) or not math.isfinite(revenue):
        raise DataValidationError(
            f"attributed-outcomes record {rec['outcome_event_id']!r}: revenue must be a finite number, got {revenue!r}"
        )
    converted = rec.get("converted", True)
    return (
        str(rec["experiment_id"]),
        str(rec["outcome_event_id"]),
        str(rec["customer_id"]),
        rec.get("variant"),
        int(rec["ts"]),
        bool(converted),
        to_cents(float(revenue)),
        rec.get("seconds_since_exposure"),
    )


def dead_row(rec: Mapping[str, Any]) -> tuple[Any, ...]:
    """A `dead-letter` record as a row of `DEAD_COLUMNS`, keyed by where the bad record was read."""
    _require(rec, "dead-letter", ("source_topic", "partition", "offset"))
    return (
        str(rec["source_topic"]),
        int(rec["partition"]),
        int(rec["offset"]),
        rec.get("raw"),
        rec.get("raw_encoding"),
        rec.get("error"),
    )


def health_row(rec: Mapping[str, Any]) -> tuple[Any, ...]:
    """An `experiment-health` record as a row of `HEALTH_COLUMNS`; its status must be a known one."""
    _require(rec, "experiment-health", ("experiment_id", "model_version", "status", "ts"))
    if rec["status"] not in HEALTH_STATUSES:
        raise DataValidationError(
            f"experiment-health record of {rec['experiment_id']!r}: status must be one of {list(HEALTH_STATUSES)}, "
            f"got {rec['status']!r}"
        )
    version = rec.get("experiment_version")
    return (
        str(rec["experiment_id"]),
        str(rec["model_version"]),
        None if version is None else int(version),
        str(rec["status"]),
        rec.get("reason"),
        int(rec["ts"]),
    )


def experiment_row(defn_json: str) -> tuple[Any, ...]:
    """(id, version, updated_ts, JSON) of a definition; only the id and an int version are required."""
    try:
        defn = json.loads(defn_json)
    except (TypeError, json.JSONDecodeError) as error:
        raise DataValidationError(f"experiment definition is not valid JSON: {error}") from error
    if not isinstance(defn, dict) or not defn.get("id") or not isinstance(defn.get("version"), int):
        raise DataValidationError(
            f"experiment definition needs a string 'id' and an int 'version'; got {str(defn_json)[:200]!r}"
        )
    return (str(defn["id"]), int(defn["version"]), defn.get("updated_ts"), defn_json)


#: The row builder of each kind of record the collector reads (its `CollectStats` names).
ROW_BUILDERS: dict[str, Any] = {
    "assignments": assignment_row,
    "outcomes": outcome_row,
    "dead_letters": dead_row,
    "experiments": experiment_row,
    "health": health_row,
}
