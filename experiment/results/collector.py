"""The results collector: the Flink job's output topics, read exactly as committed, into the DuckDB results store.

Why it is built this way:
- **read_committed.** The job writes `assignments`, `attributed-outcomes`, `dead-letter` and `experiment-health`
  in Kafka transactions (exactly-once sink); a read_uncommitted reader would count records of transactions that
  later abort.
- **Store first, offsets second.** Each poll's records are written in ONE store transaction
  (`ResultsStore.record_batch`), and only then are the offsets committed to Kafka. A crash in between replays
  the batch on restart, and the store ignores the replay (idempotent by event id), so restarting is always safe.
- **The store is held only while writing.** DuckDB lets one process hold the file, and the report and dashboard
  must be able to read while the collector waits on Kafka, so each batch opens the store, writes one transaction
  and closes it (retrying for a while if a reader holds the file).
- **A fresh store starts from the beginning.** Kafka keeps the group's offsets even when the store file is deleted;
  if the store is empty, the collector ignores committed offsets and rereads the topics from their start.
- **Caught up means the end offsets at start.** Without `follow`, the collector stops once it has read every
  partition up to the (last stable) end offset it saw when it started, so "collect, then report" is one command.
  `until` lets the demo stop exactly when everything it simulated is accounted for.

One consumer with manual assignment of every partition (no group rebalances); the group id only stores offsets.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from experiment.core.errors import DataValidationError, InfraError
from experiment.core.segments import MAX_SEGMENT_CHARS, MAX_SEGMENTS
from experiment.results.schema import MAX_PRE_PERIOD_PURCHASES, ROW_BUILDERS, segments_json
from experiment.stats.sufficient import to_cents

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from experiment.results.store import ResultsStore
    from experiment.runtime.config import Settings

__all__ = ["DEFAULT_BATCH_RECORDS", "DEFAULT_GROUP", "CollectStats", "Collector", "collect"]

logger = logging.getLogger(__name__)

#: The consumer group that stores the collector's offsets (the topic prefix is prepended, like topic names).
DEFAULT_GROUP = "abflow-collector"

#: JSON values decoded by msgspec (a C parser); anything it refuses goes through `json.loads` as before.
_DECODER = msgspec.json.Decoder()

_Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
#: A first exposure's segments, as `schema.assignment_row` accepts them (lengths in characters, as Python counts).
_Segments = Annotated[
    dict[
        Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SEGMENT_CHARS)],
        Annotated[str, msgspec.Meta(max_length=MAX_SEGMENT_CHARS)],
    ],
    msgspec.Meta(max_length=MAX_SEGMENTS),
]


class _AssignmentRecord(msgspec.Struct, kw_only=True):
    """An `assignments` record exactly as the job writes it, fields in `ASSIGNMENT_COLUMNS` order.

    Why: msgspec checks these types in C while decoding, so a well-formed record becomes its row without a Python
    check per field. It accepts only what `schema.assignment_row` accepts unchanged; anything else (a missing
    field, a number as text, a lone surrogate) fails here and takes the checked path, which decides and names it.
    """

    experiment_id: str
    event_id: str
    experiment_version: _Int64 | None = None
    customer_id: str
    variant: str
    score: float | None = None
    decision: str | None = None
    model_version: str | None = None
    first_exposure: bool | None = None
    event_ts: _Int64
    decided_ts: _Int64 | None = None
    pre_period_purchases: Annotated[int, msgspec.Meta(ge=0, le=MAX_PRE_PERIOD_PURCHASES)] = 0
    segments: _Segments | None = None


class _OutcomeRecord(msgspec.Struct, kw_only=True):
    """An `attributed-outcomes` record as the job writes it (the same contract as `_AssignmentRecord`)."""

    experiment_id: str
    outcome_event_id: str
    customer_id: str
    variant: str | None = None
    ts: _Int64
    converted: bool | None = True
    revenue: float | None = None
    seconds_since_exposure: float | None = None


_ASSIGNMENT_DECODER = msgspec.json.Decoder(_AssignmentRecord)
_OUTCOME_DECODER = msgspec.json.Decoder(_OutcomeRecord)
_FAST_FAILED = (msgspec.DecodeError, msgspec.ValidationError, OverflowError)
_CENTS_MAX = 2**63 - 1


def _assignment_fast(raw: bytes) -> tuple[Any, ...]:
    """The row of a well-formed assignment (the same tuple `schema.assignment_row` builds)."""
    rec = _ASSIGNMENT_DECODER.decode(raw)
    row = msgspec.structs.astuple(rec)
    if rec.segments is None:  # every exposure but a customer's first
        return row
    return (*row[:-1], segments_json(rec.segments))


def _outcome_fast(raw: bytes) -> tuple[Any, ...]:
    """The row of a well-formed attributed outcome (the same tuple `schema.outcome_row` builds)."""
    rec = _OUTCOME_DECODER.decode(raw)
    cents = to_cents(rec.revenue) if rec.revenue else 0
    if not -_CENTS_MAX - 1 <= cents <= _CENTS_MAX:
        raise OverflowError("revenue in cents does not fit BIGINT")  # the checked path names it
    return (
        rec.experiment_id,
        rec.outcome_event_id,
        rec.customer_id,
        rec.variant,
        rec.ts,
        bool(rec.converted),
        cents,
        rec.seconds_since_exposure,
    )


#: Typed fast paths by kind; the other kinds (rare) are decoded to dicts and checked field by field.
_FAST_ROWS: dict[str, Callable[[bytes], tuple[Any, ...]]] = {
    "assignments": _assignment_fast,
    "outcomes": _outcome_fast,
}


@dataclass
class CollectStats:
    """What one run of the collector read and stored (records, not unique rows: replays are counted too)."""

    assignments: int = 0
    outcomes: int = 0
    dead_letters: int = 0
    experiments: int = 0
    health: int = 0
    skipped: int = 0
    batches: int = 0
    elapsed_s: float = 0.0
    caught_up: bool = False
    skipped_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def records(self) -> int:
        """Records stored (all kinds)."""
        return self.assignments + self.outcomes + self.dead_letters + self.experiments + self.health

    def as_dict(self) -> dict[str, Any]:
        """Plain numbers for JSON."""
        return asdict(self) | {"records": self.records}


#: Records per poll, and so per store transaction: large polls amortise the transaction; smaller ones bound memory
#: and commit progress more often.
DEFAULT_BATCH_RECORDS = 50_000


class Collector:
    """Reads the job's output topics and `experiments` into the store at `store_path`.

    Use as a context manager (the consumer is created in `open()`); the store is opened per batch.
    """

    def __init__(
        self,
        settings: Settings,
        store_path: str | Path,
        *,
        group_id: str | None = None,
        from_beginning: bool = False,
        max_poll_records: int = DEFAULT_BATCH_RECORDS,
        poll_timeout_ms: int = 500,
        lock_timeout_s: float = 60.0,
        reference: bool = False,
    ) -> None:
        from experiment.kafka.topics import (
            ASSIGNMENTS,
            ATTRIBUTED_OUTCOMES,
            DEAD_LETTER,
            EXPERIMENT_HEALTH,
            EXPERIMENTS,
        )

        self.settings = settings
        self.store_path = store_path
        self.lock_timeout_s = lock_timeout_s
        self.group_id = group_id or settings.kafka.topic(DEFAULT_GROUP)
        self.from_beginning = from_beginning
        self.max_poll_records = max_poll_records
        self.poll_timeout_ms = poll_timeout_ms
        self.reference = reference
        kafka = settings.kafka
        self.topics = {
            kafka.topic(ASSIGNMENTS): "assignments",
            kafka.topic(ATTRIBUTED_OUTCOMES): "outcomes",
            kafka.topic(DEAD_LETTER): "dead_letters",
            kafka.topic(EXPERIMENTS): "experiments",
            kafka.topic(EXPERIMENT_HEALTH): "health",
        }
        self._consumer: Any = None
        self._partitions: list[Any] = []

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def open(self) -> Collector:
        """Create the topics if needed, connect, assign every partition and pick the start positions."""
        if self._consumer is not None:
            return self
        from kafka import TopicPartition

        from experiment.kafka.clients import make_consumer
        from experiment.kafka.topics import ensure_topics

        ensure_topics(self.settings.kafka)
        consumer = make_consumer(
            self.settings.kafka,
            group_id=self.group_id,
            read_committed=True,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            max_poll_records=self.max_poll_records,
            # Big polls: opening the store and one transaction per poll cost about as much as thousands of rows.
            max_partition_fetch_bytes=16 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
            client_id="abflow-collector",
        )
        try:
            partitions = []
            for topic in self.topics:
                ids = consumer.partitions_for_topic(topic)
                if not ids:
                    raise InfraError(f"Topic '{topic}' has no partitions on {self.settings.kafka.bootstrap_servers}.")
                partitions += [TopicPartition(topic, p) for p in sorted(ids)]
            consumer.assign(partitions)
            with self._open_store() as store:
                empty = store.version() == 0
            if self.from_beginning or empty:
                logger.info(
                    "collector starts from the beginning group=%s reason=%s",
                    self.group_id,
                    "asked" if self.from_beginning else "empty store",
                )
                consumer.seek_to_beginning(*partitions)
        except BaseException:
            consumer.close()
            raise
        self._consumer = consumer
        self._partitions = partitions
        return self

    def close(self) -> None:
        """Close the consumer (offsets were committed after every batch)."""
        if self._consumer is not None:
            self._consumer.close(autocommit=False)
            self._consumer = None

    def __enter__(self) -> Collector:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _open_store(self) -> Iterator[ResultsStore]:
        """Open the store for one short transaction, waiting while another process holds the file."""
        from experiment.results.store import ResultsStore

        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            store = ResultsStore(self.store_path)
            try:
                store.open()
                break
            except InfraError as error:
                if time.monotonic() > deadline:
                    raise
                logger.debug("store busy, retrying path=%s reason=%s", self.store_path, error)
                time.sleep(0.2)
        try:
            yield store
        finally:
            store.close()

    # -- the loop -----------------------------------------------------------------------------------------------

    def lag(self, end: Mapping[Any, int]) -> int:
        """Records (and transaction markers) between the current positions and `end`."""
        consumer = self._require()
        return sum(max(0, end[tp] - consumer.position(tp)) for tp in self._partitions)

    def end_offsets(self) -> dict[Any, int]:
        """The last stable offsets of every assigned partition now (read_committed: open transactions excluded)."""
        return dict(self._require().end_offsets(self._partitions))

    def run(
        self,
        *,
        follow: bool = False,
        until: Callable[[ResultsStore, CollectStats], bool] | None = None,
        timeout_s: float | None = None,
        progress: Callable[[CollectStats, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> CollectStats:
        """Collect until caught up (default), forever (`follow`), or until `until(store, stats)` is true.

        `progress(stats, lag)` is called after each batch; `lag` is the distance to the end offsets seen at
        start (0 in follow mode once caught up). `timeout_s` bounds the run; hitting it raises `InfraError`
        unless following. `should_stop` lets a signal handler end a follow loop cleanly.
        """
        consumer = self._require()
        stats = CollectStats()
        started = time.monotonic()
        end = self.end_offsets()
        done = False
        if until is not None:
            with self._open_store() as store:
                done = until(store, stats)
        while True:
            if done:
                stats.caught_up = self.lag(end) == 0
                return stats
            batch = consumer.poll(timeout_ms=self.poll_timeout_ms, max_records=self.max_poll_records)
            if batch:
                with self._open_store() as store:
                    self._store(store, batch, stats)
                    done = until is not None and until(store, stats)
                consumer.commit()
                stats.batches += 1
            lag = self.lag(end)
            stats.elapsed_s = time.monotonic() - started
            if progress is not None:
                progress(stats, lag)
            if done:
                continue
            if until is None and not follow and lag == 0:
                stats.caught_up = True
                return stats
            if should_stop is not None and should_stop():
                stats.caught_up = lag == 0
                return stats
            if timeout_s is not None and stats.elapsed_s > timeout_s:
                if follow:
                    stats.caught_up = lag == 0
                    return stats
                raise InfraError(
                    f"The collector did not finish within {timeout_s:.0f} s: {lag} records still to read on "
                    f"{sorted(self.topics)}; stored so far {stats.as_dict()}."
                )
            if (follow or until is not None) and lag == 0 and not batch:
                end = self.end_offsets()

    def _store(self, store: ResultsStore, batch: Mapping[Any, list[Any]], stats: CollectStats) -> None:
        """Parse and validate one poll's records one by one, then write them in one store transaction.

        Why not `record_batch`: it validates all or nothing, so one bad record made the whole poll fall back to a
        transaction per record. Here a bad record is skipped (counted, with its reason) before the transaction,
        and the good ones go in as columns. Assignments and outcomes, nearly every record, are decoded straight
        into typed rows (`_FAST_ROWS`); whatever that refuses goes through the checked path, which names the reason.
        """
        if self.reference:
            self._store_reference(store, batch, stats)
            return
        rows: dict[str, list[Any]] = {kind: [] for kind in self.topics.values()}
        decode = _DECODER.decode
        for tp, records in batch.items():
            kind = self.topics[tp.topic]
            build = ROW_BUILDERS[kind]
            fast = _FAST_ROWS.get(kind)
            append = rows[kind].append
            for record in records:
                raw = record.value
                if fast is not None and raw is not None:
                    try:
                        append(fast(raw))
                        continue
                    except _FAST_FAILED:
                        pass  # the checked path below decides, and names the reason
                value: Any = None
                if kind != "experiments" and raw is not None:
                    try:
                        value = decode(raw)
                    except (msgspec.DecodeError, UnicodeDecodeError):
                        value = None  # the reference parser names the reason (or accepts what msgspec refuses)
                if value.__class__ is not dict:
                    value = _parse(record, kind, stats)
                    if value is None:
                        continue
                try:
                    append(build(value))
                except DataValidationError as error:
                    _skip(stats, f"{kind}: {error}")
        stored = _write(store, rows, stats)
        stats.assignments += stored.get("assignments", 0)
        stats.outcomes += stored.get("outcomes", 0)
        stats.dead_letters += stored.get("dead_letters", 0)
        stats.experiments += stored.get("experiments", 0)
        stats.health += stored.get("health", 0)

    def _store_reference(self, store: ResultsStore, batch: Mapping[Any, list[Any]], stats: CollectStats) -> None:
        """The previous path, kept as the reference the fast one is tested and benchmarked against.

        `json.loads` per record, then `record_batch` (record by record, one transaction each, if one is bad).
        """
        parsed: dict[str, list[Any]] = {kind: [] for kind in self.topics.values()}
        for tp, records in batch.items():
            kind = self.topics[tp.topic]
            for record in records:
                value = _parse(record, kind, stats)
                if value is not None:
                    parsed[kind].append(value)
        try:
            store.record_batch(**parsed)
        except DataValidationError as error:
            logger.warning("batch rejected by the store, storing record by record reason=%s", error)
            for kind, values in parsed.items():
                for value in values:
                    try:
                        store.record_batch(**{kind: [value]})
                    except DataValidationError as record_error:
                        _skip(stats, f"{kind}: {record_error}")
                        parsed[kind] = [v for v in parsed[kind] if v is not value]
        stats.assignments += len(parsed["assignments"])
        stats.outcomes += len(parsed["outcomes"])
        stats.dead_letters += len(parsed["dead_letters"])
        stats.experiments += len(parsed["experiments"])
        stats.health += len(parsed["health"])

    def _require(self) -> Any:
        if self._consumer is None:
            raise InfraError("The collector is not open; use `with Collector(settings, store) as collector:`.")
        return self._consumer


def _write(store: ResultsStore, rows: dict[str, list[Any]], stats: CollectStats) -> dict[str, int]:
    """Write the rows in one transaction; the rows stored per kind.

    Why the halving: the row checks make every row one DuckDB accepts, but should the store still refuse a batch
    for its data (`DataValidationError`), retrying the same poll after a restart would fail forever and block the
    collector. So the batch is split in halves, each its own transaction, until the refused rows stand alone; they
    are skipped with the store's reason, everything else is stored. Other errors (disk, lock) still stop the run.
    """
    try:
        store.record_rows(**rows)
    except DataValidationError as error:
        items = [(kind, row) for kind, kind_rows in rows.items() for row in kind_rows]
        if len(items) <= 1:
            for kind, _row in items:
                _skip(stats, f"{kind}: {error}")
            return {}
        logger.warning("batch refused by the store, splitting it rows=%d reason=%s", len(items), error)
        stored: dict[str, int] = {}
        half = len(items) // 2
        for part in (items[:half], items[half:]):
            sub: dict[str, list[Any]] = {kind: [] for kind in rows}
            for kind, row in part:
                sub[kind].append(row)
            for kind, count in _write(store, sub, stats).items():
                stored[kind] = stored.get(kind, 0) + count
        return stored
    return {kind: len(kind_rows) for kind, kind_rows in rows.items()}


def _skip(stats: CollectStats, reason: str) -> None:
    stats.skipped += 1
    short = reason.split(" at topic=")[0][:80]
    stats.skipped_reasons[short] = stats.skipped_reasons.get(short, 0) + 1
    logger.warning("record skipped reason=%s", reason)


def _parse(record: Any, kind: str, stats: CollectStats) -> Any:
    """The record's value as the store wants it, or None (counted and logged) when it cannot be stored."""
    where = f"topic={record.topic} partition={record.partition} offset={record.offset}"
    if record.value is None:
        _skip(stats, f"{kind}: tombstone at {where}")
        return None
    try:
        text = record.value.decode("utf-8")
    except UnicodeDecodeError:
        _skip(stats, f"{kind}: value is not UTF-8 at {where}")
        return None
    if kind == "experiments":
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        _skip(stats, f"{kind}: invalid JSON at {where}: {error.msg}")
        return None
    if not isinstance(value, dict):
        _skip(stats, f"{kind}: not a JSON object at {where}")
        return None
    return value


def collect(
    settings: Settings,
    store_path: str | None = None,
    *,
    follow: bool = False,
    until: Callable[[ResultsStore, CollectStats], bool] | None = None,
    timeout_s: float | None = None,
    progress: Callable[[CollectStats, int], None] | None = None,
    group_id: str | None = None,
    from_beginning: bool = False,
    should_stop: Callable[[], bool] | None = None,
    batch_records: int = DEFAULT_BATCH_RECORDS,
) -> CollectStats:
    """Open the store and the collector, run once, close both (what `abflow collect` and the demo call)."""
    with Collector(
        settings,
        store_path or settings.store_path,
        group_id=group_id,
        from_beginning=from_beginning,
        max_poll_records=batch_records,
    ) as collector:
        stats = collector.run(
            follow=follow, until=until, timeout_s=timeout_s, progress=progress, should_stop=should_stop
        )
    logger.info("collect done %s", " ".join(f"{k}={v}" for k, v in stats.as_dict().items()))
    return stats
