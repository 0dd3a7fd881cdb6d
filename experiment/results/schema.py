"""The results store's tables, and how one topic record becomes one row of them.

Why apart from the store: this is the write-side contract (which fields a record must have, which types it may
carry, what a replay is keyed by), checked record by record before anything is written; the store itself is about
transactions and queries. A record that fails here raises `DataValidationError` naming it, and the collector skips
it. Every column is checked against its SQL type (text that UTF-8 can hold, integers that fit BIGINT, finite
numbers), so no single record can fail a batch's insert. An experiment definition must pass the definition's own
parser (`experiment.core.definition`), the same one every reader and the job use.

`segments` (the first exposure's segments, `experiment.core.segments`) is a column on `assignments` and on
`first_exposures` holding the JSON object as canonical text (`segments_json`: compact, keys sorted), null on every
other exposure and on records written before the field existed. Text rather than a MAP column: a MAP costs DuckDB
several times more to write (each entry is two list elements), and the collector writes far more often than anyone
asks for segments; the segment queries read it with DuckDB's JSON functions. A store created before the column
gets it on its first writable open (`SEGMENT_COLUMNS`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from experiment.core.definition import ExperimentDefinition
from experiment.core.errors import DataValidationError, ExperimentError
from experiment.core.events import HEALTH_STATUSES
from experiment.core.segments import MAX_SEGMENT_CHARS, MAX_SEGMENTS
from experiment.stats.sufficient import to_cents

__all__ = [
    "ASSIGNMENT_COLUMNS",
    "DEAD_COLUMNS",
    "FIRST_EXPOSURES_TABLE",
    "HEALTH_COLUMNS",
    "MAX_PRE_PERIOD_PURCHASES",
    "OUTCOME_COLUMNS",
    "ROW_BUILDERS",
    "SCHEMA",
    "SEGMENTS_TYPE",
    "SEGMENT_COLUMNS",
    "assignment_row",
    "dead_row",
    "experiment_row",
    "health_row",
    "outcome_row",
    "segments_json",
]

#: The SQL type of `segments`: the JSON object {segment name: value} as text (`segments_json`).
SEGMENTS_TYPE = "VARCHAR"

FIRST_EXPOSURES_TABLE = f"""CREATE TABLE IF NOT EXISTS first_exposures (
        experiment_id VARCHAR NOT NULL, customer_id VARCHAR NOT NULL, event_ts BIGINT NOT NULL,
        event_id VARCHAR NOT NULL, variant VARCHAR NOT NULL, pre_period_purchases BIGINT NOT NULL,
        segments {SEGMENTS_TYPE}, PRIMARY KEY (experiment_id, customer_id))"""

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS experiments (
        id VARCHAR PRIMARY KEY, version BIGINT NOT NULL, updated_ts BIGINT, definition VARCHAR NOT NULL)""",
    f"""CREATE TABLE IF NOT EXISTS assignments (
        experiment_id VARCHAR NOT NULL, event_id VARCHAR NOT NULL, experiment_version BIGINT,
        customer_id VARCHAR NOT NULL, variant VARCHAR NOT NULL, score DOUBLE, decision VARCHAR,
        model_version VARCHAR, first_exposure BOOLEAN, event_ts BIGINT NOT NULL, decided_ts BIGINT,
        pre_period_purchases BIGINT NOT NULL, segments {SEGMENTS_TYPE}, PRIMARY KEY (experiment_id, event_id))""",
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
    # The first exposure of each customer (smallest (event_ts, event_id)), kept by the store as assignments arrive:
    # a minimum is idempotent and order-free, so replays and any arrival order give the rows a GROUP BY over
    # `assignments` gives, and reports read one row per customer instead of grouping every exposure.
    FIRST_EXPOSURES_TABLE,
)

#: Columns added after the first stores were written: (table, column), each of type `SEGMENTS_TYPE`. The store adds
#: any that an existing file lacks on its first writable open (existing rows get null); a read-only reader of such a
#: file reads them as null.
SEGMENT_COLUMNS = (("assignments", "segments"), ("first_exposures", "segments"))

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
    "segments",
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


#: Bounds of a BIGINT column (DuckDB's signed 64-bit integer): a larger number would fail the whole insert.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
#: Largest `pre_period_purchases`: the job's own bound on purchase counts (beyond 2**53 a double no longer holds
#: every integer), so Σx² and Σx·r of millions of customers stay far inside HUGEINT.
MAX_PRE_PERIOD_PURCHASES = 2**53


def _ident(rec: Mapping[str, Any]) -> Any:
    return rec.get("event_id") or rec.get("outcome_event_id") or rec.get("experiment_id") or rec.get("id") or "?"


def _fail(rec: Mapping[str, Any], kind: str, message: str) -> DataValidationError:
    return DataValidationError(f"{kind} record {_ident(rec)!r}: {message}")


def _require(rec: Mapping[str, Any], kind: str, names: Iterable[str]) -> None:
    missing = [n for n in names if rec.get(n) is None]
    if missing:
        raise DataValidationError(
            f"{kind} record {_ident(rec)!r} lacks required field(s) {missing}; got keys {sorted(rec)}"
        )


def _unicode(rec: Mapping[str, Any], kind: str, name: str, value: str) -> str:
    """`value` if it can be written as UTF-8; a lone surrogate (JSON `"\ud800"`) cannot, and would fail the insert."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise _fail(rec, kind, f"{name} is not valid Unicode ({error.reason}: {value[:40]!r})") from error
    return value


def _text(rec: Mapping[str, Any], kind: str, name: str) -> str:
    """A required text column: the value as text (ids may arrive as numbers), valid Unicode."""
    return _unicode(rec, kind, name, str(rec[name]))


def _optional_text(rec: Mapping[str, Any], kind: str, name: str) -> str | None:
    value = rec.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(rec, kind, f"{name} must be a string or null, got {value!r}")
    return _unicode(rec, kind, name, value)


def _int(rec: Mapping[str, Any], kind: str, name: str) -> int:
    """A required BIGINT column: `int(value)` (a float or numeric string is truncated, as it always was), in range."""
    value = rec[name]
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError) as error:
        raise _fail(rec, kind, f"{name} must be an integer, got {value!r}") from error
    if not _INT64_MIN <= number <= _INT64_MAX:
        raise _fail(rec, kind, f"{name} must fit a signed 64-bit integer, got {value!r}")
    return number


def _optional_int(rec: Mapping[str, Any], kind: str, name: str) -> int | None:
    value = rec.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not _INT64_MIN <= value <= _INT64_MAX:
        raise _fail(rec, kind, f"{name} must be a signed 64-bit integer or null, got {value!r}")
    return value


def _finite(value: float) -> bool:
    """`math.isfinite`, false for an int too large for a double (where `isfinite` raises)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _optional_number(rec: Mapping[str, Any], kind: str, name: str) -> float | int | None:
    value = rec.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(rec, kind, f"{name} must be a number or null, got {value!r}")
    if not _finite(value):
        raise _fail(rec, kind, f"{name} must be a finite number, got {value!r}")
    return value


def _segments(rec: Mapping[str, Any], kind: str) -> str | None:
    """The optional `segments`: null/absent, or an object of at most 32 str -> str entries, each at most 64 chars.

    Keys must not be empty (a dimension needs a name). Anything else refuses the record, like any other bad column:
    the segment queries would group by garbage. Returns the canonical text the column holds (`segments_json`).
    """
    value = rec.get("segments")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _fail(rec, kind, f"segments must be an object or null, got {_type_name(value)}")
    if len(value) > MAX_SEGMENTS:
        raise _fail(rec, kind, f"segments must hold at most {MAX_SEGMENTS} entries, got {len(value)}")
    for key, item in value.items():
        if not isinstance(key, str) or not key or len(key) > MAX_SEGMENT_CHARS:
            raise _fail(rec, kind, f"segments keys must be 1 to {MAX_SEGMENT_CHARS} characters, got {str(key)[:80]!r}")
        if not isinstance(item, str) or len(item) > MAX_SEGMENT_CHARS:
            shown = item[:80] if isinstance(item, str) else item
            raise _fail(
                rec,
                kind,
                f"segments[{key!r}] must be a string of at most {MAX_SEGMENT_CHARS} characters, got {shown!r}",
            )
        _unicode(rec, kind, "segments key", key)
        _unicode(rec, kind, f"segments[{key[:40]!r}]", item)
    return segments_json(value)


def segments_json(segments: Mapping[str, str]) -> str:
    """The text the `segments` column holds: compact JSON, keys sorted, UTF-8 as is (one text per set of segments).

    Both of the collector's paths write it through here, so the same segments are always the same text.
    """
    return orjson.dumps(segments, option=orjson.OPT_SORT_KEYS).decode()


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def assignment_row(rec: Mapping[str, Any]) -> tuple[Any, ...]:
    """An `assignments` record as a row of `ASSIGNMENT_COLUMNS`; a replay is keyed by (experiment_id, event_id).

    Every column is checked against its SQL type here, so a record DuckDB would refuse is refused alone, with its
    reason, instead of failing the batch it came in.
    """
    kind = "assignments"
    _require(rec, kind, ("event_id", "experiment_id", "customer_id", "variant", "event_ts"))
    pre = rec.get("pre_period_purchases", 0)
    if isinstance(pre, bool) or not isinstance(pre, int) or not 0 <= pre <= MAX_PRE_PERIOD_PURCHASES:
        raise DataValidationError(
            f"assignments record {rec['event_id']!r}: pre_period_purchases must be an int in "
            f"[0, {MAX_PRE_PERIOD_PURCHASES}], got {pre!r}"
        )
    score = rec.get("score")
    if score is not None:
        try:
            score = float(score)
        except (TypeError, ValueError, OverflowError) as error:
            raise _fail(rec, kind, f"score must be a number or null, got {score!r}") from error
        if not math.isfinite(score):
            raise _fail(rec, kind, f"score must be a finite number, got {rec.get('score')!r}")
    first = rec.get("first_exposure")
    if first is not None and not isinstance(first, bool):
        raise _fail(rec, kind, f"first_exposure must be true, false or null, got {first!r}")
    return (
        _text(rec, kind, "experiment_id"),
        _text(rec, kind, "event_id"),
        _optional_int(rec, kind, "experiment_version"),
        _text(rec, kind, "customer_id"),
        _text(rec, kind, "variant"),
        score,
        _optional_text(rec, kind, "decision"),
        _optional_text(rec, kind, "model_version"),
        first,
        _int(rec, kind, "event_ts"),
        _optional_int(rec, kind, "decided_ts"),
        pre,
        _segments(rec, kind),
    )


def outcome_row(rec: Mapping[str, Any]) -> tuple[Any, ...]:
    """An `attributed-outcomes` record as a row of `OUTCOME_COLUMNS`, revenue in integer cents (exact sums)."""
    kind = "attributed-outcomes"
    _require(rec, kind, ("outcome_event_id", "experiment_id", "customer_id", "ts"))
    revenue = rec.get("revenue") or 0.0
    if not isinstance(revenue, int | float) or not _finite(revenue):
        raise DataValidationError(
            f"attributed-outcomes record {rec['outcome_event_id']!r}: revenue must be a finite number, got {revenue!r}"
        )
    cents = to_cents(float(revenue))
    if not _INT64_MIN <= cents <= _INT64_MAX:
        raise _fail(rec, kind, f"revenue in cents must fit a signed 64-bit integer, got {revenue!r}")
    converted = rec.get("converted", True)
    return (
        _text(rec, kind, "experiment_id"),
        _text(rec, kind, "outcome_event_id"),
        _text(rec, kind, "customer_id"),
        _optional_text(rec, kind, "variant"),
        _int(rec, kind, "ts"),
        bool(converted),
        cents,
        _optional_number(rec, kind, "seconds_since_exposure"),
    )


def dead_row(rec: Mapping[str, Any]) -> tuple[Any, ...]:
    """A `dead-letter` record as a row of `DEAD_COLUMNS`, keyed by where the bad record was read."""
    kind = "dead-letter"
    _require(rec, kind, ("source_topic", "partition", "offset"))
    return (
        _text(rec, kind, "source_topic"),
        _int(rec, kind, "partition"),
        _int(rec, kind, "offset"),
        _optional_text(rec, kind, "raw"),
        _optional_text(rec, kind, "raw_encoding"),
        _optional_text(rec, kind, "error"),
    )


def health_row(rec: Mapping[str, Any]) -> tuple[Any, ...]:
    """An `experiment-health` record as a row of `HEALTH_COLUMNS`; its status must be a known one."""
    kind = "experiment-health"
    _require(rec, kind, ("experiment_id", "model_version", "status", "ts"))
    if rec["status"] not in HEALTH_STATUSES:
        raise DataValidationError(
            f"experiment-health record of {rec['experiment_id']!r}: status must be one of {list(HEALTH_STATUSES)}, "
            f"got {rec['status']!r}"
        )
    version = rec.get("experiment_version")
    return (
        _text(rec, kind, "experiment_id"),
        _text(rec, kind, "model_version"),
        None if version is None else _int(rec, kind, "experiment_version"),
        str(rec["status"]),
        _optional_text(rec, kind, "reason"),
        _int(rec, kind, "ts"),
    )


def experiment_row(defn_json: str) -> tuple[Any, ...]:
    """(id, version, updated_ts, JSON) of a definition the definition's own parser accepts.

    Why parse here: a definition the parser refuses (the job refuses it too) used to be stored and then hid the
    experiment's last valid definition from every report; now it is refused with the parser's reason, like any
    other bad record, and the stored one stays.
    """
    try:
        defn = json.loads(defn_json)
    except (TypeError, json.JSONDecodeError) as error:
        raise DataValidationError(f"experiment definition is not valid JSON: {error}") from error
    if not isinstance(defn, dict) or not defn.get("id") or not isinstance(defn.get("version"), int):
        raise DataValidationError(
            f"experiment definition needs a string 'id' and an int 'version'; got {str(defn_json)[:200]!r}"
        )
    kind = "experiments"
    try:
        ExperimentDefinition.from_dict(defn)
    except ExperimentError as error:
        raise DataValidationError(
            f"experiment definition {defn['id']!r} version {defn['version']}: the definition parser refuses it: {error}"
        ) from error
    _lone_surrogates(defn, defn, kind, "definition")
    return (_text(defn, kind, "id"), _int(defn, kind, "version"), _optional_int(defn, kind, "updated_ts"), defn_json)


def _lone_surrogates(value: Any, rec: Mapping[str, Any], kind: str, where: str) -> None:
    """Refuse text anywhere in a decoded JSON value that UTF-8 cannot hold (the reports write UTF-8)."""
    if isinstance(value, str):
        _unicode(rec, kind, where, value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _lone_surrogates(key, rec, kind, where)
            _lone_surrogates(item, rec, kind, f"{where}.{key}")
    elif isinstance(value, list):
        for item in value:
            _lone_surrogates(item, rec, kind, where)


#: The row builder of each kind of record the collector reads (its `CollectStats` names).
ROW_BUILDERS: dict[str, Any] = {
    "assignments": assignment_row,
    "outcomes": outcome_row,
    "dead_letters": dead_row,
    "experiments": experiment_row,
    "health": health_row,
}
