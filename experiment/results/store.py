"""The results store: a DuckDB file that the collector fills from Kafka and the reports and dashboard read.

Why it looks like this:
- **Replays never double count.** Raw records are stored keyed by their source event id (assignments by
  (experiment_id, event_id), attributed outcomes by (experiment_id, outcome_event_id), dead letters by
  (source_topic, partition, offset)) and inserted with `INSERT OR IGNORE`, so re-reading a topic from offset 0
  changes nothing. The tables and the record-to-row checks are in `experiment.results.schema`.
- **First exposure wins.** The per-customer view takes the variant and the pre-period covariate of the customer's
  earliest assignment (min event_ts, ties broken by event_id), whatever order the records arrived in.
- **Derived, not maintained** (but one minimum). The customers view and the sufficient statistics are computed
  from the raw rows at query time, optionally `as_of` a time, so an as-of report is reproducible and there is no
  counter to corrupt. The one thing kept as rows arrive is each customer's first exposure (`first_exposures`):
  the smallest (event_ts, event_id) of the assignments actually inserted, upserted in the same transaction. A
  minimum is idempotent and order-free, so it is exactly what a GROUP BY over `assignments` gives, for any as-of
  time too (the first exposure up to T is the first exposure, if it is <= T); reports then read one row per
  customer instead of grouping every exposure. A store written before the table existed is filled on its first
  writable open; read-only, it is derived from `assignments` as before.
- **Model health is a state, not a log.** `experiment_health` keeps one row per (experiment, model version): the
  job's newest word on whether it can use that model (`model_unusable` with the reason, or `model_ready`), so a
  repaired model clears the warning and a replay of older records changes nothing.
- **Segments are the first exposure's.** The job writes a customer's segments (`experiment.core.segments`) on
  their first-exposure record only; `first_exposures` keeps the `segments` of the row it keeps, and
  `segment_stats` groups the customers of `variant_stats` by one of them ("unknown" when the first exposure has no
  value for it), so summed over a dimension's values it is `variant_stats`, exactly. Only that query reads the
  column: `variant_stats` and the reports do not pay for it. A store written before the column existed gets it
  (null) on its first writable open; read-only, its customers are all "unknown".
- **Exact sums.** Revenue is kept in integer cents, so the statistics are integer sums: identical whatever DuckDB's
  parallel aggregation order (byte-identical reports).
- **One definition.** Definitions are kept as the JSON the `experiments` topic carried and handed out as
  `ExperimentDefinition`, parsed by the definition's own parser, so every reader gets the same defaults (and the
  same control for a definition written before `control` existed).

Times are epoch milliseconds (UTC); days are UTC calendar days. The connection is acquired in `open()`.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from experiment.core.definition import ExperimentDefinition
from experiment.core.errors import DataValidationError, ExperimentError, InfraError
from experiment.core.segments import (
    AGE_BANDS,
    BUILTIN_SEGMENTS,
    CUSTOMER_TYPES,
    GENDERS,
    HISTORY_TIERS,
    MISSING,
    UNKNOWN,
)
from experiment.results.schema import (
    ASSIGNMENT_COLUMNS,
    DEAD_COLUMNS,
    HEALTH_COLUMNS,
    OUTCOME_COLUMNS,
    SCHEMA,
    SEGMENT_COLUMNS,
    SEGMENTS_TYPE,
    assignment_row,
    dead_row,
    experiment_row,
    health_row,
    outcome_row,
)
from experiment.stats.sufficient import VariantStats

__all__ = ["ModelHealth", "ResultsStore", "to_epoch_ms"]

logger = logging.getLogger(__name__)

_MS_PER_DAY = 86_400_000

# The first exposure of each customer up to $as_of, derived from every exposure. It is the smallest (event_ts,
# event_id, ...) struct per customer: the row a window ordered by (event_ts, event_id) would number 1 (event_id is
# unique within an experiment), found by one hash aggregate instead of sorting every exposure. Parameters: $exp,
# $as_of. The reference the maintained `first_exposures` table is tested and benchmarked against.
_FIRST_DERIVED_SQL = """
SELECT $exp AS experiment_id, customer_id, e.variant, e.event_ts AS first_exposure_ts, e.pre_period_purchases
FROM (
    SELECT customer_id, min({'event_ts': event_ts, 'event_id': event_id, 'variant': variant,
                             'pre_period_purchases': pre_period_purchases}) AS e
    FROM assignments
    WHERE experiment_id = $exp AND event_ts <= $as_of
    GROUP BY customer_id
)
"""

# The same rows read from the maintained table (the first exposure up to $as_of is the first exposure, if <= $as_of).
_FIRST_TABLE_SQL = """
SELECT $exp AS experiment_id, customer_id, variant, event_ts AS first_exposure_ts, pre_period_purchases
FROM first_exposures WHERE experiment_id = $exp AND event_ts <= $as_of
"""

# Upsert of the first exposures of the assignment rows in `{source}` (rows just inserted): per customer the
# smallest (event_ts, event_id), replacing a stored one only if smaller, so replays and arrival order do not matter.
# The segments are those of the row kept: `arg_min_null` by the same key (plain `arg_min` would skip a null and take a
# later row's), outside the struct so that the struct compared per row stays small.
_UPSERT_FIRST_SQL = """
INSERT INTO first_exposures
    (experiment_id, customer_id, event_ts, event_id, variant, pre_period_purchases, segments)
SELECT experiment_id, customer_id, e.event_ts, e.event_id, e.variant, e.pre_period_purchases, segments FROM (
    SELECT experiment_id, customer_id, min({{'event_ts': event_ts, 'event_id': event_id, 'variant': variant,
                                           'pre_period_purchases': pre_period_purchases}}) AS e,
           arg_min_null(segments, {{'event_ts': event_ts, 'event_id': event_id}}) AS segments
    FROM {source} GROUP BY experiment_id, customer_id
)
ON CONFLICT (experiment_id, customer_id) DO UPDATE SET
    event_ts = excluded.event_ts, event_id = excluded.event_id, variant = excluded.variant,
    pre_period_purchases = excluded.pre_period_purchases, segments = excluded.segments
WHERE excluded.event_ts < first_exposures.event_ts
   OR (excluded.event_ts = first_exposures.event_ts AND excluded.event_id < first_exposures.event_id)
"""

# One row per customer (first exposure wins) with what they did up to $as_of. Parameters: $exp, $as_of.
_CUSTOMERS_SQL = """
WITH first AS ({first}), outcome_sums AS (
    SELECT f.customer_id, bool_or(o.converted) AS converted, sum(o.revenue_cents) AS revenue_cents
    FROM first f JOIN outcomes o
      ON o.experiment_id = f.experiment_id AND o.customer_id = f.customer_id
     AND o.ts >= f.first_exposure_ts AND o.ts <= $as_of
    GROUP BY f.customer_id
)
SELECT f.experiment_id, f.customer_id, f.variant, f.first_exposure_ts,
       coalesce(s.converted, false) AS converted,
       coalesce(s.revenue_cents, 0)::HUGEINT AS revenue_cents,
       f.pre_period_purchases::HUGEINT AS pre_period_purchases
FROM first f LEFT JOIN outcome_sums s USING (customer_id)
"""

# Daily increments per (variant, day) as the 8 sums of `VariantStats`, exact, in one pass over the exposures: a
# customer joins on their first-exposure day (users, Σx, Σx²); on each later day with outcomes their cumulative
# revenue r goes from r_prev to r_new, adding r_new − r_prev to Σr and r_new² − r_prev² to Σr², and their first
# converting day adds the conversion (and x to Σxc). Summed over all days they are the customers view's totals,
# so the per-variant statistics are the increments' sums and need no second pass. Parameters: $exp, $as_of.
_INCREMENTS_SQL = """
WITH first AS MATERIALIZED (
    SELECT customer_id, variant, first_exposure_ts, pre_period_purchases::HUGEINT AS x FROM ({first})
), joins AS (
    SELECT variant, first_exposure_ts // {day_ms} AS day, count(*)::HUGEINT AS users,
           coalesce(sum(x), 0)::HUGEINT AS x_sum, coalesce(sum(x * x), 0)::HUGEINT AS x_sq
    FROM first GROUP BY ALL
), per_day AS (
    SELECT c.variant, c.customer_id, c.x, o.ts // {day_ms} AS day,
           sum(o.revenue_cents)::HUGEINT AS rc, bool_or(o.converted) AS conv
    FROM first c JOIN outcomes o
      ON o.experiment_id = $exp AND o.customer_id = c.customer_id
     AND o.ts >= c.first_exposure_ts AND o.ts <= $as_of
    GROUP BY ALL
), cumulative AS (
    SELECT *, sum(rc) OVER w AS r_new,
           coalesce(bool_or(conv) OVER (PARTITION BY customer_id ORDER BY day
                    ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), false) AS conv_before
    FROM per_day WINDOW w AS (PARTITION BY customer_id ORDER BY day ROWS UNBOUNDED PRECEDING)
), gains AS (
    SELECT variant, day,
           coalesce(sum(CASE WHEN conv AND NOT conv_before THEN 1 ELSE 0 END), 0)::HUGEINT AS conversions,
           coalesce(sum(rc), 0)::HUGEINT AS r_sum,
           coalesce(sum(r_new * r_new - (r_new - rc) * (r_new - rc)), 0)::HUGEINT AS r_sq,
           coalesce(sum(x * rc), 0)::HUGEINT AS xr,
           coalesce(sum(CASE WHEN conv AND NOT conv_before THEN x ELSE 0 END), 0)::HUGEINT AS xc
    FROM cumulative GROUP BY ALL
)
SELECT variant, day, users, 0, 0, 0, x_sum, x_sq, 0, 0 FROM joins
UNION ALL
SELECT variant, day, 0, conversions, r_sum, r_sq, 0, 0, xr, xc FROM gains
"""

#: The customers view and the daily increments by where the first exposures come from (True: derived).
_CUSTOMERS = {
    derived: _CUSTOMERS_SQL.format(first=_FIRST_DERIVED_SQL if derived else _FIRST_TABLE_SQL)
    for derived in (True, False)
}
_INCREMENTS = {
    derived: _INCREMENTS_SQL.format(first=_FIRST_DERIVED_SQL if derived else _FIRST_TABLE_SQL, day_ms=_MS_PER_DAY)
    for derived in (True, False)
}

_FAR_FUTURE_MS = 2**62

# The first exposures with their segments, for `segment_stats` only (so `variant_stats` never carries the column).
# `{segments}` is the column, or a typed null for a read-only store written before it existed.
_SEGMENT_FIRST_TABLE_SQL = """
SELECT customer_id, variant, event_ts AS first_exposure_ts, pre_period_purchases, {segments} AS segments
FROM first_exposures WHERE experiment_id = $exp AND event_ts <= $as_of
"""
_SEGMENT_FIRST_DERIVED_SQL = """
SELECT customer_id, e.variant, e.event_ts AS first_exposure_ts, e.pre_period_purchases, segments FROM (
    SELECT customer_id, min({{'event_ts': event_ts, 'event_id': event_id, 'variant': variant,
                             'pre_period_purchases': pre_period_purchases}}) AS e,
           arg_min_null({segments}, {{'event_ts': event_ts, 'event_id': event_id}}) AS segments
    FROM assignments
    WHERE experiment_id = $exp AND event_ts <= $as_of
    GROUP BY customer_id
)
"""
# Per (segment value, variant) the 8 sums of `VariantStats` over the customers view (first exposure wins, outcomes in
# [first exposure, $as_of]): the same customers and sums as `_INCREMENTS_SQL` totals, grouped by the value of
# dimension $path (a JSON pointer) in the first exposure's segments ($unknown without one). Parameters: $exp,
# $as_of, $path, $unknown.
_SEGMENT_STATS_SQL = """
WITH first AS MATERIALIZED (
    SELECT customer_id, variant, first_exposure_ts, pre_period_purchases::HUGEINT AS x,
           coalesce(json_extract_string(segments, $path), $unknown) AS segment
    FROM ({first})
), sums AS (
    SELECT f.customer_id, bool_or(o.converted) AS conv, sum(o.revenue_cents)::HUGEINT AS r
    FROM first f JOIN outcomes o
      ON o.experiment_id = $exp AND o.customer_id = f.customer_id
     AND o.ts >= f.first_exposure_ts AND o.ts <= $as_of
    GROUP BY f.customer_id
)
SELECT f.segment, f.variant, count(*)::HUGEINT,
       coalesce(sum(CASE WHEN s.conv THEN 1 ELSE 0 END), 0)::HUGEINT,
       coalesce(sum(s.r), 0)::HUGEINT, coalesce(sum(s.r * s.r), 0)::HUGEINT,
       coalesce(sum(f.x), 0)::HUGEINT, coalesce(sum(f.x * f.x), 0)::HUGEINT,
       coalesce(sum(f.x * s.r), 0)::HUGEINT, coalesce(sum(CASE WHEN s.conv THEN f.x ELSE 0 END), 0)::HUGEINT
FROM first f LEFT JOIN sums s USING (customer_id)
GROUP BY ALL
"""
#: The values of each built-in dimension in their natural order (segment_stats lists segments in it).
_SEGMENT_ORDER: dict[str, tuple[str, ...]] = {
    "age_band": AGE_BANDS,
    "gender": GENDERS,
    "customer_type": CUSTOMER_TYPES,
    "history_tier": HISTORY_TIERS,
}


def to_epoch_ms(value: int | float | dt.datetime | dt.date | str | None) -> int | None:
    """Normalise an as-of time to epoch milliseconds (UTC).

    Accepts epoch ms, a datetime (naive = UTC), a date (its end: 23:59:59.999 UTC) or an ISO-8601 string (a bare
    date means the end of that day).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"as_of must be a time, got {value!r}")
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        if len(text) == 10:
            return to_epoch_ms(dt.date.fromisoformat(text))
        return to_epoch_ms(dt.datetime.fromisoformat(text.replace("Z", "+00:00")))
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return round(aware.timestamp() * 1000)
    if isinstance(value, dt.date):
        start = dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
        return int(start.timestamp() * 1000) + _MS_PER_DAY - 1
    raise TypeError(f"as_of must be epoch ms, a datetime, a date or an ISO string; got {type(value).__name__}")


@dataclass(frozen=True)
class ModelHealth:
    """The job's newest word on one model version of an experiment (a row of `experiment_health`)."""

    experiment_id: str
    model_version: str
    experiment_version: int | None
    status: str
    reason: str | None
    ts: int

    @property
    def unusable(self) -> bool:
        """True when the job refuses this model, so the experiment assigns nobody."""
        return self.status == "model_unusable"

    def headline(self) -> str:
        """The one line every surface shows for an unusable model (the same words in the CLI, dashboard, reports)."""
        return (
            f"MODEL UNUSABLE in the job: {self.reason or 'no reason given'} (model {self.model_version}): "
            "the experiment assigns nobody"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON."""
        return asdict(self)


class ResultsStore:
    """DuckDB-backed results store. Use as a context manager or call `open()`/`close()`.

    `derive_first_exposures=True` computes first exposures from every assignment instead of reading the maintained
    table: the reference that table is tested and benchmarked against.
    """

    def __init__(self, path: str | Path, *, read_only: bool = False, derive_first_exposures: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.derive_first_exposures = derive_first_exposures
        self._con: Any = None
        self._has_health = False
        self._has_first = False
        #: The tables whose `segments` column exists (a store written before it lacks them until a writable open).
        self._segment_tables: frozenset[str] = frozenset()
        # Daily increments read on a read-only connection, by (experiment, as_of): (that connection, rows).
        self._increments_memo: dict[tuple[str, int], tuple[Any, list[tuple[str, int, tuple[int, ...]]]]] = {}

    # -- lifecycle -----------------------------------------------------------------------------------------------------

    def open(self) -> ResultsStore:
        """Connect (creating the file and schema unless read-only)."""
        import duckdb

        if self._con is not None:
            return self
        if self.read_only and not self.path.exists():
            raise InfraError(f"results store {self.path} does not exist")
        if not self.read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(str(self.path), read_only=self.read_only)
        except duckdb.Error as error:
            raise InfraError(f"cannot open results store {self.path}: {error}") from error
        had_first = self._has_table("first_exposures")
        if not self.read_only:
            for statement in SCHEMA:
                self._con.execute(statement)
            self._add_segment_columns()  # before the rebuild below, which reads `assignments.segments`
            if not had_first:
                self.rebuild_first_exposures()  # a store written before the table existed (or a new, empty one)
        # A store written before model health existed lacks the table; read-only readers then see no health rows.
        self._has_health = self._has_table("experiment_health")
        self._has_first = self._has_table("first_exposures")
        self._segment_tables = self._tables_with_segments()
        logger.debug("store opened path=%s read_only=%s", self.path, self.read_only)
        return self

    def _has_table(self, name: str) -> bool:
        return bool(
            self._con.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() AND table_name = ?",
                [name],
            ).fetchone()[0]
        )

    def _tables_with_segments(self) -> frozenset[str]:
        rows = self._con.execute(
            "SELECT table_name FROM duckdb_columns() WHERE database_name = current_database() "
            "AND schema_name = 'main' AND column_name = 'segments'"
        ).fetchall()
        return frozenset(str(r[0]) for r in rows)

    def _add_segment_columns(self) -> None:
        """Add `segments` to the tables of a store written before it existed (existing rows: null), once."""
        present = self._tables_with_segments()
        for table, column in SEGMENT_COLUMNS:
            if table not in present:
                self._con.execute(f"ALTER TABLE {table} ADD COLUMN {column} {SEGMENTS_TYPE}")
                logger.info("store upgraded path=%s added=%s.%s", self.path, table, column)

    def rebuild_first_exposures(self) -> None:
        """Recompute `first_exposures` from every stored assignment, in one transaction.

        For a store written before the table existed (done on its first writable open) and for bulk loads that
        insert into `assignments` with SQL rather than through `record_rows` (the report benchmark does).
        """
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("DELETE FROM first_exposures")
            con.execute(_UPSERT_FIRST_SQL.format(source="assignments"))
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> ResultsStore:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def con(self) -> Any:
        """The live DuckDB connection; raises if the store is not open."""
        if self._con is None:
            raise InfraError(f"results store {self.path} is not open; use `with ResultsStore(path) as store:`")
        return self._con

    # -- writes --------------------------------------------------------------------------------------------------------

    def record_assignment(self, rec: Mapping[str, Any]) -> None:
        """Store one `assignments` record (idempotent by (experiment_id, event_id))."""
        self.record_batch(assignments=[rec])

    def record_outcome(self, rec: Mapping[str, Any]) -> None:
        """Store one `attributed-outcomes` record (idempotent by (experiment_id, outcome_event_id))."""
        self.record_batch(outcomes=[rec])

    def record_dead_letter(self, rec: Mapping[str, Any]) -> None:
        """Store one `dead-letter` record (idempotent by source_topic/partition/offset)."""
        self.record_batch(dead_letters=[rec])

    def record_experiment(self, defn_json: str) -> None:
        """Keep the definition with the highest version per experiment id."""
        self.record_batch(experiments=[defn_json])

    def record_health(self, rec: Mapping[str, Any]) -> None:
        """Keep the newest `experiment-health` record per (experiment_id, model_version)."""
        self.record_batch(health=[rec])

    def record_batch(
        self,
        *,
        assignments: Sequence[Mapping[str, Any]] = (),
        outcomes: Sequence[Mapping[str, Any]] = (),
        dead_letters: Sequence[Mapping[str, Any]] = (),
        experiments: Sequence[str] = (),
        health: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """Write many records in ONE transaction (the collector's path: thousands of records per second).

        Every record is validated before anything is written; an invalid record raises `DataValidationError`
        naming it and the whole batch is left unwritten (the caller dead-letters or skips it and retries).
        """
        self.record_rows(
            assignments=[assignment_row(r) for r in assignments],
            outcomes=[outcome_row(r) for r in outcomes],
            dead_letters=[dead_row(r) for r in dead_letters],
            experiments=[experiment_row(d) for d in experiments],
            health=[health_row(r) for r in health],
        )

    def record_rows(
        self,
        *,
        assignments: Sequence[tuple[Any, ...]] = (),
        outcomes: Sequence[tuple[Any, ...]] = (),
        dead_letters: Sequence[tuple[Any, ...]] = (),
        experiments: Sequence[tuple[Any, ...]] = (),
        health: Sequence[tuple[Any, ...]] = (),
    ) -> None:
        """Write rows already built by `experiment.results.schema`'s row functions, in ONE transaction.

        The collector's path: it validates record by record (skipping the bad ones) and hands over only good rows.
        """
        rows_a, rows_o, rows_d, rows_e, rows_h = assignments, outcomes, dead_letters, experiments, health
        if not (rows_a or rows_o or rows_d or rows_e or rows_h):
            return
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            self._insert_assignments(rows_a)
            self._insert("outcomes", OUTCOME_COLUMNS, rows_o)
            self._insert("dead_letters", DEAD_COLUMNS, rows_d)
            for row in rows_e:
                con.execute(
                    "INSERT INTO experiments VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                    "version = excluded.version, updated_ts = excluded.updated_ts, "
                    "definition = excluded.definition "
                    "WHERE excluded.version > experiments.version",
                    list(row),
                )
            self._upsert_health(rows_h)
            con.execute("COMMIT")
        except Exception as error:
            con.execute("ROLLBACK")
            if isinstance(error, _data_errors()):
                # What the row checks should have caught: the caller can still find and skip the record.
                raise DataValidationError(f"the results store {self.path} refused the batch: {error!r}") from error
            raise
        logger.debug(
            "batch stored assignments=%d outcomes=%d dead_letters=%d experiments=%d health=%d",
            len(rows_a),
            len(rows_o),
            len(rows_d),
            len(rows_e),
            len(rows_h),
        )

    def _insert(self, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        self.con.register("_abflow_batch", _arrow(columns, rows))
        try:
            self.con.execute(
                f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) SELECT {', '.join(columns)} FROM _abflow_batch"
            )
        finally:
            self.con.unregister("_abflow_batch")

    def _insert_assignments(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert new assignments, then fold the rows actually inserted (not replays) into `first_exposures`."""
        if not rows:
            return
        con = self.con
        columns = ", ".join(ASSIGNMENT_COLUMNS)
        con.register("_abflow_batch", _arrow(ASSIGNMENT_COLUMNS, rows))
        try:
            # `sql()`, not `execute()`: a DML statement runs once, at once, and its Arrow result is not copied again.
            inserted = con.sql(
                f"INSERT OR IGNORE INTO assignments ({columns}) SELECT {columns} FROM _abflow_batch "
                "RETURNING experiment_id, customer_id, event_ts, event_id, variant, pre_period_purchases, segments"
            ).to_arrow_table()
        finally:
            con.unregister("_abflow_batch")
        if inserted.num_rows == 0:
            return
        con.register("_abflow_inserted", inserted)
        try:
            con.execute(_UPSERT_FIRST_SQL.format(source="_abflow_inserted"))
        finally:
            con.unregister("_abflow_inserted")

    def _upsert_health(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Keep the newest record per (experiment, model version), counting replacements as one upsert per record.

        Why not one upsert per record: a poll holds hundreds of health records (one per job task and minute) for a
        handful of keys, and each DuckDB statement costs a millisecond or more. Replaying the records in order
        here gives the same final row and the same `revision` (newer records that replaced a row) as one by one.
        """
        if not rows:
            return
        con = self.con
        stored = {
            (str(e), str(m)): int(ts)
            for e, m, ts in con.execute("SELECT experiment_id, model_version, ts FROM experiment_health").fetchall()
        }
        newest: dict[tuple[str, str], list[Any]] = {}  # key -> [current ts, newest row of the batch, replacements]
        for row in rows:
            key, ts = (row[0], row[1]), row[5]
            state = newest.get(key)
            if state is None:
                if key not in stored:
                    newest[key] = [ts, row, 0]
                    continue
                state = newest[key] = [stored[key], None, 0]
            if ts > state[0]:
                state[0], state[1], state[2] = ts, row, state[2] + 1
        for _ts, row, replacements in newest.values():
            if row is None:
                continue
            con.execute(
                f"INSERT INTO experiment_health ({', '.join(HEALTH_COLUMNS)}, revision) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (experiment_id, model_version) DO UPDATE SET "
                "experiment_version = excluded.experiment_version, status = excluded.status, "
                "reason = excluded.reason, ts = excluded.ts, "
                "revision = experiment_health.revision + excluded.revision "
                "WHERE excluded.ts > experiment_health.ts",
                [*row, replacements],
            )

    # -- reads ---------------------------------------------------------------------------------------------------------

    def experiment_ids(self) -> list[str]:
        """The id of every experiment with a stored definition, sorted (also those `experiments()` leaves out)."""
        return [str(r[0]) for r in self.con.execute("SELECT id FROM experiments ORDER BY id").fetchall()]

    def experiments(self) -> list[ExperimentDefinition]:
        """The latest definition of every experiment, sorted by id.

        The collector keeps any definition with an id and an int version, so the store may hold one the parser
        refuses (one the job refused, too); it is left out here with a warning rather than hiding every other
        experiment, and `experiment()` names the problem.
        """
        rows = self.con.execute("SELECT id, definition FROM experiments ORDER BY id").fetchall()
        definitions = []
        for experiment_id, text in rows:
            try:
                definitions.append(self._parse(experiment_id, text))
            except ExperimentError as error:
                logger.warning("stored definition skipped: %s", error)
        return definitions

    def definition_json(self, experiment_id: str) -> str | None:
        """The latest definition JSON of one experiment as recorded, or None."""
        row = self.con.execute("SELECT definition FROM experiments WHERE id = ?", [experiment_id]).fetchone()
        return None if row is None else str(row[0])

    def experiment(self, experiment_id: str) -> ExperimentDefinition | None:
        """The latest definition of one experiment, or None; `ExperimentError` if the stored one is invalid."""
        text = self.definition_json(experiment_id)
        return None if text is None else self._parse(experiment_id, text)

    def _parse(self, experiment_id: str, text: str) -> ExperimentDefinition:
        try:
            return ExperimentDefinition.from_json(text)
        except ExperimentError as error:
            raise ExperimentError(
                f"the latest definition of experiment '{experiment_id}' in the results store {self.path} is not "
                f"valid, so it cannot be analysed: {error}"
            ) from error

    def model_health(self, experiment_id: str) -> list[ModelHealth]:
        """The job's newest health record per model version of the experiment, newest first."""
        if not self._has_health:
            return []
        rows = self.con.execute(
            f"SELECT {', '.join(HEALTH_COLUMNS)} FROM experiment_health WHERE experiment_id = ? "
            "ORDER BY ts DESC, model_version",
            [experiment_id],
        ).fetchall()
        return [ModelHealth(*row) for row in rows]

    def unusable_model(self, experiment_id: str, model_version: str | None) -> ModelHealth | None:
        """The health record that says the job cannot use this model version of the experiment, else None."""
        for health in self.model_health(experiment_id):
            if health.model_version == model_version and health.unusable:
                return health
        return None

    def _variant_names(self, experiment_id: str) -> list[str]:
        """The declared arms, so that an arm nobody reached yet still shows (as zeros); none if unknown or invalid."""
        try:
            defn = self.experiment(experiment_id)
        except ExperimentError:
            return []
        return [] if defn is None else [v.name for v in defn.variants]

    def _increments(self, experiment_id: str, as_of_ms: int) -> list[tuple[str, int, tuple[int, ...]]]:
        """(variant, day, 8 sums) rows of `_INCREMENTS_SQL`; on a read-only store read once per connection.

        Why the memo: a report asks for the totals and the daily series, and a dashboard page also for the funnel,
        each the same pass over every exposure. A read-only connection holds DuckDB's shared file lock, so no
        writer can change the data while it is open; a writable store may be written between calls, so it reads
        afresh each time. The memo is tied to the connection object, so a reopened store reads again.
        """
        key = (experiment_id, as_of_ms)
        con = self.con
        cached = self._increments_memo.get(key)
        if self.read_only and cached is not None and cached[0] is con:
            return cached[1]
        rows = [
            (str(r[0]), int(r[1]), tuple(int(v) for v in r[2:]))
            for r in con.execute(_INCREMENTS[self._derived], {"exp": experiment_id, "as_of": as_of_ms}).fetchall()
        ]
        if self.read_only:
            self._increments_memo[key] = (con, rows)
        return rows

    @property
    def _derived(self) -> bool:
        """Whether first exposures are derived from `assignments` (asked, or a read-only store without the table)."""
        return self.derive_first_exposures or not self._has_first

    def prefetch(self, experiment_id: str, as_of: Any = None) -> None:
        """Run the aggregate pass a report needs now, so that `variant_stats`/`daily_stats` read it from memory.

        For a read-only store only (a writable one reads afresh each time). `abflow report` calls it in a worker
        thread while the statistics libraries load: DuckDB releases the GIL while it runs.
        """
        if self.read_only:
            self._increments(experiment_id, self._as_of(as_of))

    def customers(self, experiment_id: str, as_of: Any = None) -> list[dict[str, Any]]:
        """The per-customer view (first exposure wins), sorted by customer_id; revenue in currency units."""
        params = {"exp": experiment_id, "as_of": self._as_of(as_of)}
        rows = self.con.execute(f"{_CUSTOMERS[self._derived]} ORDER BY customer_id", params).fetchall()
        return [
            {
                "experiment_id": r[0],
                "customer_id": r[1],
                "variant": r[2],
                "first_exposure_ts": r[3],
                "converted": bool(r[4]),
                "revenue": int(r[5]) / 100,
                "pre_period_purchases": int(r[6]),
            }
            for r in rows
        ]

    def variant_stats(self, experiment_id: str, as_of: Any = None) -> dict[str, VariantStats]:
        """Sufficient statistics per variant of the customers view (definition's variants zero-filled).

        They are the sums of the daily increments (the same numbers as aggregating `customers()`, exactly).
        """
        totals: dict[str, list[int]] = {}
        for variant, _day, values in self._increments(experiment_id, self._as_of(as_of)):
            slot = totals.setdefault(variant, [0] * 8)
            for k, v in enumerate(values):
                slot[k] += v
        result = dict.fromkeys(self._variant_names(experiment_id), VariantStats())
        result.update({name: VariantStats(*values) for name, values in totals.items()})
        return dict(sorted(result.items()))

    def segment_stats(
        self, experiment_id: str, dimension: str, as_of: Any = None
    ) -> dict[str, dict[str, VariantStats]]:
        """Segment value -> variant -> `VariantStats`: `variant_stats` split by one segment dimension.

        The customers, outcomes and `as_of` rules are those of `variant_stats`; each customer is counted in the
        value `dimension` had on their first exposure (a built-in such as "age_band", or a `segment_attributes`
        name), or in "unknown" when that exposure recorded none. Summed over the values, each variant's statistics
        are `variant_stats`' exactly. Every segment lists the definition's variants (zeros where nobody is).
        Segments come in the dimension's natural order for the built-in ones (age bands upwards), numerically for
        numeric attribute values, otherwise alphabetically; "missing" and "unknown" last. Runs only when asked: one
        pass over the experiment's customers and outcomes.
        """
        as_of_ms = self._as_of(as_of)
        if self._derived:
            segments = "segments" if "assignments" in self._segment_tables else f"NULL::{SEGMENTS_TYPE}"
            first = _SEGMENT_FIRST_DERIVED_SQL.format(segments=segments)
        else:
            segments = "segments" if "first_exposures" in self._segment_tables else f"NULL::{SEGMENTS_TYPE}"
            first = _SEGMENT_FIRST_TABLE_SQL.format(segments=segments)
        path = "/" + dimension.replace("~", "~0").replace("/", "~1")  # a JSON pointer (RFC 6901): any key
        params = {"exp": experiment_id, "as_of": as_of_ms, "path": path, "unknown": UNKNOWN}
        rows = self.con.execute(_SEGMENT_STATS_SQL.format(first=first), params).fetchall()
        if not rows:
            return {}
        declared = self._variant_names(experiment_id)
        grouped: dict[str, dict[str, VariantStats]] = {}
        for segment, variant, *sums in rows:
            grouped.setdefault(str(segment), {})[str(variant)] = VariantStats(*(int(v) for v in sums))
        result: dict[str, dict[str, VariantStats]] = {}
        for segment in _segment_order(dimension, grouped):
            stats = dict.fromkeys(declared, VariantStats())
            stats.update(grouped[segment])
            result[segment] = dict(sorted(stats.items()))
        return result

    def segment_dimensions(self, experiment_id: str) -> list[str]:
        """The segment dimensions the experiment's first exposures recorded, for `segment_stats`.

        The built-in ones first, in their order, then the named attributes alphabetically; empty before any first
        exposure with segments (and for a store written before segments existed).
        """
        table = "assignments" if self._derived else "first_exposures"
        if table not in self._segment_tables:
            return []
        rows = self.con.execute(
            f"SELECT DISTINCT unnest(json_keys(segments)) FROM {table} "
            "WHERE experiment_id = ? AND segments IS NOT NULL",
            [experiment_id],
        ).fetchall()
        names = {str(name) for (name,) in rows}
        builtin = [name for name in BUILTIN_SEGMENTS if name in names]
        return builtin + sorted(names.difference(BUILTIN_SEGMENTS))

    def daily_stats(self, experiment_id: str, as_of: Any = None) -> list[tuple[dt.date, dict[str, VariantStats]]]:
        """Cumulative statistics per variant at the end of each UTC day.

        Days run from the first exposure to the last day with data (or the as-of day). The last entry equals
        `variant_stats(experiment_id, as_of)`.
        """
        as_of_ms = self._as_of(as_of)
        # Increments are plain 8-tuples of ints: a day's increment alone need not satisfy VariantStats' invariants
        # (a customer exposed yesterday may convert today), only the running totals do.
        increments: dict[int, dict[str, list[int]]] = {}
        for variant, day, gains in self._increments(experiment_id, as_of_ms):
            slot = increments.setdefault(day, {}).setdefault(variant, [0] * 8)
            for k, v in enumerate(gains):
                slot[k] += v
        if not increments:
            return []
        first_day = min(increments)
        last_day = max(increments)
        if as_of is not None and as_of_ms < _FAR_FUTURE_MS:
            last_day = max(last_day, as_of_ms // _MS_PER_DAY)
        running: dict[str, list[int]] = {name: [0] * 8 for name in self._variant_names(experiment_id)}
        series: list[tuple[dt.date, dict[str, VariantStats]]] = []
        epoch = dt.date(1970, 1, 1)
        for day in range(first_day, last_day + 1):
            for variant, values in increments.get(day, {}).items():
                slot = running.setdefault(variant, [0] * 8)
                for k, v in enumerate(values):
                    slot[k] += v
            snapshot = {name: VariantStats(*values) for name, values in sorted(running.items())}
            series.append((epoch + dt.timedelta(days=day), snapshot))
        return series

    def funnel(self, experiment_id: str) -> dict[str, dict[str, int]]:
        """Per variant: decisions recorded, customers exposed, customers scored, customers shown, conversions.

        Customers and conversions are the all-time statistics (shared with the report on a read-only store); the
        distinct counts run on the rows that can count (shown, scored) only, each its own small aggregate, rather
        than as two DISTINCT aggregates over every exposure.
        """
        sql = """
            SELECT variant, sum(decisions)::HUGEINT, sum(shown)::HUGEINT, sum(scored)::HUGEINT FROM (
                SELECT variant, count(*) AS decisions, 0 AS shown, 0 AS scored
                FROM assignments WHERE experiment_id = $exp GROUP BY variant
                UNION ALL
                SELECT variant, 0, count(DISTINCT customer_id), 0
                FROM assignments WHERE experiment_id = $exp AND decision = 'show' GROUP BY variant
                UNION ALL
                SELECT variant, 0, 0, count(DISTINCT customer_id)
                FROM assignments WHERE experiment_id = $exp AND score IS NOT NULL GROUP BY variant
            ) GROUP BY variant
        """
        rows = self.con.execute(sql, {"exp": experiment_id}).fetchall()
        decisions = {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in rows}
        funnel = {}
        for name, stats in self.variant_stats(experiment_id, _FAR_FUTURE_MS).items():
            if stats.users == 0:
                continue  # a declared arm nobody reached: the funnel lists the arms customers are in
            made, shown, scored = decisions.get(name, (0, 0, 0))
            funnel[name] = {
                "decisions": made,
                "customers": stats.users,
                "scored": scored,
                "shown": shown,
                "converted": stats.conversions,
            }
        return funnel

    def score_histogram(self, experiment_id: str, bins: int = 20) -> list[tuple[float, float, int]]:
        """Counts of model scores (non-null, i.e. treatment decisions) in `bins` equal bins over [0, 1]."""
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        rows = self.con.execute(
            "SELECT least(floor(score * $bins)::BIGINT, $bins - 1) AS b, count(*) FROM assignments "
            "WHERE experiment_id = $exp AND score IS NOT NULL GROUP BY b ORDER BY b",
            {"exp": experiment_id, "bins": bins},
        ).fetchall()
        counts = {int(b): int(n) for b, n in rows}
        return [(i / bins, (i + 1) / bins, counts.get(i, 0)) for i in range(bins)]

    def dead_letter_counts(self) -> dict[str, int]:
        """Dead-lettered records per source topic."""
        rows = self.con.execute(
            "SELECT source_topic, count(*) FROM dead_letters GROUP BY source_topic ORDER BY source_topic"
        ).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent dead letters (highest offsets first), for inspection."""
        rows = self.con.execute(
            f"SELECT {', '.join(DEAD_COLUMNS)} FROM dead_letters ORDER BY source_topic, kafka_partition, "
            "kafka_offset DESC LIMIT ?",
            [limit],
        ).fetchall()
        return [
            {
                "source_topic": r[0],
                "partition": r[1],
                "offset": r[2],
                "raw": r[3],
                "raw_encoding": r[4],
                "error": r[5],
            }
            for r in rows
        ]

    def last_event_ts(self, experiment_id: str, as_of: Any = None) -> int | None:
        """The latest assignment or outcome time (epoch ms) of an experiment up to `as_of`, or None."""
        row = self.con.execute(
            "SELECT greatest("
            "(SELECT max(event_ts) FROM assignments WHERE experiment_id = $exp AND event_ts <= $as_of), "
            "(SELECT max(ts) FROM outcomes WHERE experiment_id = $exp AND ts <= $as_of))",
            {"exp": experiment_id, "as_of": self._as_of(as_of)},
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def version(self) -> int:
        """A cheap number that grows whenever data changes (rows are never deleted; versions only grow)."""
        health = "+ (SELECT count(*) + coalesce(sum(revision), 0) FROM experiment_health)" if self._has_health else ""
        row = self.con.execute(
            "SELECT (SELECT count(*) FROM assignments) + (SELECT count(*) FROM outcomes) "
            "+ (SELECT count(*) FROM dead_letters) + (SELECT coalesce(sum(version), 0) FROM experiments) "
            f"+ (SELECT count(*) FROM experiments) {health}"
        ).fetchone()
        return int(row[0])

    @staticmethod
    def _as_of(as_of: Any) -> int:
        ms = to_epoch_ms(as_of)
        return _FAR_FUTURE_MS if ms is None else ms


def _segment_order(dimension: str, grouped: Mapping[str, Any]) -> list[str]:
    """The segment values of `grouped` in the order `segment_stats` lists them (see there)."""
    natural = _SEGMENT_ORDER.get(dimension, ())
    rank = {value: i for i, value in enumerate(natural)}
    last = {MISSING: 1, UNKNOWN: 2}

    def key(value: str) -> tuple[int, int, float, str]:
        if value in last:
            return (2, last[value], 0.0, value)
        if value in rank:
            return (0, rank[value], 0.0, value)
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return (0, len(rank), number, value)
        return (1, 0, 0.0, value)

    return sorted(grouped, key=key)


def _arrow(columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> Any:
    """Rows as an Arrow table, one typed array per column."""
    import pyarrow as pa

    arrays = zip(*rows, strict=True)
    return pa.table({name: pa.array(values) for name, values in zip(columns, arrays, strict=True)})


def _data_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "this data cannot be written" (as opposed to a broken disk or a lost lock)."""
    import duckdb
    import pyarrow as pa

    return (
        duckdb.DataError,
        duckdb.IntegrityError,
        duckdb.InvalidInputException,
        pa.ArrowInvalid,
        pa.ArrowTypeError,
        UnicodeError,
        OverflowError,
    )
