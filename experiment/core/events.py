"""The one schema module: every event abflow puts on Kafka, with pure validation and JSON builders.

Why one module: the simulator writes `sessions`/`outcomes`, the Flink job reads them and writes `assignments`,
`attributed-outcomes` and `dead-letter`, and the collector reads those. If each part kept its own idea of a field,
a rename would silently split the system. Everything here is pure (no Kafka, no Flink), so the job can call it per
record and the tests can pin every rejection reason.

Validation is strict because a bad record must never become a decision: a record that fails goes to
`dead-letter` with the exact reason produced here (docs/pipeline.md). Reasons name the field, what was expected
and what was found, e.g. ``field 'ts' must be an integer (epoch ms), got str``.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
import orjson

from experiment.core.errors import DataValidationError

__all__ = [
    "BASE_FEATURES",
    "DEAD_LETTER_MAX_RAW_BYTES",
    "DEFAULT_CATEGORIES",
    "DEFAULT_MAX_BYTES",
    "HEALTH_STATUSES",
    "HealthStatus",
    "InvalidEvent",
    "Outcome",
    "Session",
    "assignment_record",
    "attributed_outcome_record",
    "dead_letter_record",
    "default_feature_names",
    "experiment_health_record",
    "feature_names_for",
    "outcome_json",
    "parse_outcome",
    "parse_session",
    "session_json",
    "to_json",
]

#: Demographic features every session carries, before the purchase counts `cat1..catK`.
BASE_FEATURES: tuple[str, ...] = ("age", "man", "woman")
#: Number of product categories in the seed's layout (data.generator writes the same).
DEFAULT_CATEGORIES = 60
#: Largest accepted message; a session with 60 counts is well under 2 KiB.
DEFAULT_MAX_BYTES = 16_384
#: How much of a raw value a dead letter keeps. A message may be up to the broker's limit (1 MiB) and JSON escapes
#: a control character as 6 bytes, so a dead letter holding all of it could exceed the limit itself: the job's
#: sink would then fail on every replay of that record. 64 KiB keeps every dead letter under 400 KiB.
DEAD_LETTER_MAX_RAW_BYTES = 65_536
#: Longest reason a dead letter keeps (a reason can quote a message key, which no size check bounds).
_DEAD_LETTER_MAX_ERROR_CHARS = 1_000
#: Largest `ts`: a signed 64-bit integer, what the outputs' readers (Java, DuckDB BIGINT) can hold.
_MAX_EPOCH_MS = 2**63 - 1
#: Largest sum of a session's purchase counts (`pre_period_purchases` is built on it): beyond 2**53 a double no
#: longer holds every integer, and the outputs and the store need an exact 64-bit count.
_MAX_PURCHASES = 2**53
#: Largest revenue: its cents must be an exact integer in a double (the store keeps integer cents).
_MAX_REVENUE = 2**53 / 100

_SESSION_FIELDS = frozenset({"event_id", "customer_id", "ts", "features"})
_OUTCOME_FIELDS = frozenset({"event_id", "customer_id", "ts", "type", "category", "revenue"})
_OUTCOME_TYPES = frozenset({"purchase"})
_CATEGORY = re.compile(r"cat[1-9][0-9]*")

#: What the job can say about an experiment's model on `experiment-health`.
HealthStatus = Literal["model_unusable", "model_ready"]
HEALTH_STATUSES: tuple[HealthStatus, ...] = ("model_unusable", "model_ready")


class InvalidEvent(DataValidationError):
    """A record that does not follow its schema; `reason` is the exact, human-readable cause."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Session:
    """A visit: who, when (epoch ms) and the features the model scores (`age`, `man`, `woman`, `cat1..catK`)."""

    event_id: str
    customer_id: str
    ts: int
    features: dict[str, float]
    #: Sum of the purchase counts `cat1..catK`: the session's part of the CUPED covariate.
    purchases: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    """A purchase: who, when (epoch ms), in which category and for how much revenue (currency units)."""

    event_id: str
    customer_id: str
    ts: int
    type: Literal["purchase"]
    category: str
    revenue: float


def default_feature_names(categories: int = DEFAULT_CATEGORIES) -> tuple[str, ...]:
    """`age`, `man`, `woman`, `cat1` … `cat{categories}`: the seed's feature layout."""
    if categories < 1:
        raise InvalidEvent(f"categories must be >= 1, got {categories}")
    return (*BASE_FEATURES, *(f"cat{i}" for i in range(1, categories + 1)))


def feature_names_for(names: Iterable[str]) -> tuple[str, ...]:
    """Validate a feature list (e.g. a model's) and return it as a tuple, for `parse_session`."""
    result = tuple(names)
    if len(set(result)) != len(result):
        raise InvalidEvent(f"feature names contain duplicates: {sorted(result)}")
    return result


# --------------------------------------------------------------------------------------------------------------
# Parsing (the edge: bytes in, typed event or InvalidEvent out)
# --------------------------------------------------------------------------------------------------------------


def _decode(raw: bytes, max_bytes: int, kind: str) -> dict[str, Any]:
    """Size check, then JSON: orjson first (the faster parser), the stdlib for whatever orjson refuses.

    orjson parses the well-formed majority; what it refuses (bad UTF-8, NaN/Infinity literals, lone surrogates,
    broken JSON) goes through the stdlib path below, so the accepted values and every rejection reason are those
    of `json.loads`. One difference: integers beyond 64 bits come back as floats (a `ts` that large is then
    rejected as not an integer).
    """
    if len(raw) > max_bytes:
        raise InvalidEvent(f"oversized payload: {len(raw)} bytes > max_bytes={max_bytes}")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    else:
        if isinstance(value, dict):
            return value
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"payload is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidEvent(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise InvalidEvent("invalid JSON: nested too deeply") from None
    if not isinstance(value, dict):
        raise InvalidEvent(f"a {kind} must be a JSON object, got {_type_name(value)}")
    return value


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _check_fields(obj: Mapping[str, Any], expected: frozenset[str], kind: str) -> None:
    missing = expected - obj.keys()
    if missing:
        raise InvalidEvent(f"{kind} is missing field(s): {', '.join(sorted(missing))}")
    extra = obj.keys() - expected
    if extra:
        raise InvalidEvent(f"{kind} has unexpected field(s): {', '.join(sorted(extra))}")


def _string(obj: Mapping[str, Any], name: str) -> str:
    value = obj[name]
    if not isinstance(value, str):
        raise InvalidEvent(f"field '{name}' must be a string, got {_type_name(value)}")
    if not value:
        raise InvalidEvent(f"field '{name}' must not be empty")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a JSON escape such as "\ud800": no output could carry it as UTF-8
            raise InvalidEvent(f"field '{name}' must be valid Unicode, got a lone surrogate") from None
    return value


def _epoch_ms(obj: Mapping[str, Any], name: str) -> int:
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEvent(f"field '{name}' must be an integer (epoch ms), got {_type_name(value)}")
    if value < 0:
        raise InvalidEvent(f"field '{name}' must be >= 0 (epoch ms), got {value}")
    if value > _MAX_EPOCH_MS:
        raise InvalidEvent(f"field '{name}' must be <= {_MAX_EPOCH_MS} (a 64-bit epoch ms), got {value}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent(f"{where} must be a number, got {_type_name(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidEvent(f"{where} must be finite, got {value}")
    return number


@dataclass(frozen=True)
class _Layout:
    """Precomputed facts about one feature list (cached): the hot path then runs mostly in C."""

    names: tuple[str, ...]
    keys: frozenset[str]
    count_names: tuple[str, ...]  # the purchase counts cat1..catK


@functools.lru_cache(maxsize=16)
def _layout(feature_names: tuple[str, ...]) -> _Layout:
    count_names = tuple(name for name in feature_names if _CATEGORY.fullmatch(name))
    return _Layout(feature_names, frozenset(feature_names), count_names)


_NUMBER_TYPES = frozenset({int, float})
_FLOAT_ONLY = {float}


def parse_session(raw: bytes, *, feature_names: Sequence[str], max_bytes: int = DEFAULT_MAX_BYTES) -> Session:
    """Validate one `sessions` message; raise `InvalidEvent` with the exact reason.

    `features` must hold exactly `feature_names` (an unknown key such as `cat99` or a missing one is an error, so
    that a model never scores a silently zero-filled feature); every value is a finite number >= 0 (counts and
    indicators cannot be negative, nor can an age).

    Every session of the stream passes here, so a well-formed one takes a fast path (msgspec decodes and checks
    the schema in C); anything it does not accept goes through
    `_parse_session_checked`, which accepts exactly the same messages and names the reason of a rejection. The two
    are held equal by tests/unit/test_events_fast_path.py on valid, malformed and fuzzed messages.
    """
    layout = _layout(tuple(feature_names))
    if len(raw) <= max_bytes:
        session = _fast_session(raw, layout)
        if session is not None:
            return session
    return _parse_session_checked(raw, layout, max_bytes)


class _SessionWire(msgspec.Struct, forbid_unknown_fields=True):
    """The `sessions` schema as msgspec checks it: all four fields, nothing else, the same constraints."""

    event_id: Annotated[str, msgspec.Meta(min_length=1)]
    customer_id: Annotated[str, msgspec.Meta(min_length=1)]
    ts: Annotated[int, msgspec.Meta(ge=0, le=_MAX_EPOCH_MS)]
    features: dict[str, Annotated[float, msgspec.Meta(ge=0)]]


_SESSION_DECODER = msgspec.json.Decoder(_SessionWire)


def _fast_session(raw: bytes, layout: _Layout) -> Session | None:
    """The session if msgspec accepts it and it has exactly the layout's finite features; otherwise None."""
    try:
        wire = _SESSION_DECODER.decode(raw)
    except (msgspec.MsgspecError, ValueError):  # ValueError: e.g. UnicodeDecodeError from a key
        return None
    features = wire.features
    if features.keys() != layout.keys or not math.isfinite(sum(features.values())):
        return None
    total = sum(map(features.__getitem__, layout.count_names))
    if not total <= _MAX_PURCHASES:
        return None
    return Session(wire.event_id, wire.customer_id, wire.ts, features, int(total))


def _parse_session_checked(raw: bytes, layout: _Layout, max_bytes: int) -> Session:
    """The reference validation: every check in Python, raising `InvalidEvent` with the first failure."""
    obj = _decode(raw, max_bytes, "session")
    _check_fields(obj, _SESSION_FIELDS, "session")
    event_id = _string(obj, "event_id")
    customer_id = _string(obj, "customer_id")
    ts = _epoch_ms(obj, "ts")
    features_obj = obj["features"]
    if not isinstance(features_obj, dict):
        raise InvalidEvent(f"field 'features' must be an object, got {_type_name(features_obj)}")
    if features_obj.keys() != layout.keys:
        unknown = features_obj.keys() - layout.keys
        if unknown:
            raise InvalidEvent(f"unknown feature key(s): {', '.join(sorted(unknown))}")
        missing = [name for name in layout.names if name not in features_obj]
        raise InvalidEvent(f"missing feature key(s): {', '.join(missing)}")
    # Whole-list checks in C. Numbers only (bool is not int here), none negative, and a finite total (any NaN or
    # infinity makes the sum NaN or infinite). Any failure takes the slow path below, which names the first bad
    # value.
    values = list(map(features_obj.__getitem__, layout.names))
    types = set(map(type, values))
    if not (types <= _NUMBER_TYPES and min(values, default=0) >= 0 and math.isfinite(sum(values))):
        _raise_first_bad_feature(layout.names, values)  # raises unless only the total overflowed
    # All floats (what every producer of ours writes): the parsed object already is the feature dict.
    features = features_obj if types == _FLOAT_ONLY else dict(zip(layout.names, map(float, values), strict=True))
    total = sum(map(features_obj.__getitem__, layout.count_names))
    if not total <= _MAX_PURCHASES:
        counts = f"{layout.count_names[0]}..{layout.count_names[-1]}"
        raise InvalidEvent(f"purchase counts {counts} must sum to at most {_MAX_PURCHASES}, got {total}")
    return Session(event_id=event_id, customer_id=customer_id, ts=ts, features=features, purchases=int(total))


def _raise_first_bad_feature(names: Sequence[str], values: Sequence[Any]) -> None:
    for name, value in zip(names, values, strict=True):
        number = _number(value, f"feature '{name}'")
        if number < 0:
            raise InvalidEvent(f"feature '{name}' must be >= 0 (a count or indicator), got {number:g}")


def parse_outcome(raw: bytes, *, categories: int | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> Outcome:
    """Validate one `outcomes` message; raise `InvalidEvent` with the exact reason.

    `type` must be "purchase" and `revenue` a finite number >= 0. `category` must be a category key `catN`; with
    `categories` given, also N <= categories. The job passes None: an experiment tests a *new* category (e.g.
    `cat61` when sessions carry `cat1..cat60`), and purchases in it are exactly the outcomes that matter.
    """
    obj = _decode(raw, max_bytes, "outcome")
    _check_fields(obj, _OUTCOME_FIELDS, "outcome")
    event_id = _string(obj, "event_id")
    customer_id = _string(obj, "customer_id")
    ts = _epoch_ms(obj, "ts")
    kind = _string(obj, "type")
    if kind not in _OUTCOME_TYPES:
        raise InvalidEvent(f"field 'type' must be one of {sorted(_OUTCOME_TYPES)}, got {kind!r}")
    category = _string(obj, "category")
    if not _CATEGORY.fullmatch(category):
        raise InvalidEvent(f"unknown category key {category!r} (expected catN, N >= 1)")
    if categories is not None and int(category[3:]) > categories:
        raise InvalidEvent(f"unknown category key {category!r} (expected cat1..cat{categories})")
    revenue = _number(obj["revenue"], "field 'revenue'")
    if revenue < 0:
        raise InvalidEvent(f"field 'revenue' must be >= 0, got {obj['revenue']}")
    if revenue > _MAX_REVENUE:
        raise InvalidEvent(f"field 'revenue' must be at most {_MAX_REVENUE:.2f} (exact cents), got {revenue:g}")
    return Outcome(
        event_id=event_id, customer_id=customer_id, ts=ts, type="purchase", category=category, revenue=revenue
    )


# --------------------------------------------------------------------------------------------------------------
# Builders (typed values in, the exact JSON objects of the topics out)
# --------------------------------------------------------------------------------------------------------------


def to_json(record: Mapping[str, Any]) -> str:
    """Compact JSON with sorted keys: one object per Kafka message, stable bytes for the same record."""
    return json.dumps(record, separators=(",", ":"), sort_keys=True, allow_nan=False)


def session_json(event_id: str, customer_id: str, ts: int, features: Mapping[str, float]) -> str:
    """A `sessions` message (what the simulator and the website send)."""
    return to_json({"event_id": event_id, "customer_id": customer_id, "ts": ts, "features": dict(features)})


def outcome_json(event_id: str, customer_id: str, ts: int, category: str, revenue: float) -> str:
    """An `outcomes` message of type purchase."""
    return to_json(
        {
            "event_id": event_id,
            "customer_id": customer_id,
            "ts": ts,
            "type": "purchase",
            "category": category,
            "revenue": revenue,
        }
    )


def assignment_record(
    *,
    event_id: str,
    experiment_id: str,
    experiment_version: int,
    customer_id: str,
    variant: str,
    score: float | None,
    decision: Literal["show", "hide"],
    model_version: str | None,
    first_exposure: bool,
    event_ts: int,
    decided_ts: int,
    pre_period_purchases: int,
    segments: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """An `assignments` record: one per (session, running experiment); `score` is None for the control.

    `segments` are the first exposure's segments (`experiment.core.segments.segments_of`): an object on the
    record with `first_exposure` true, null on every other one (a segment is fixed at the first exposure).
    """
    return {
        "event_id": event_id,
        "experiment_id": experiment_id,
        "experiment_version": experiment_version,
        "customer_id": customer_id,
        "variant": variant,
        "score": score,
        "decision": decision,
        "model_version": model_version,
        "first_exposure": first_exposure,
        "event_ts": event_ts,
        "decided_ts": decided_ts,
        "pre_period_purchases": pre_period_purchases,
        "segments": None if segments is None else dict(segments),
    }


def attributed_outcome_record(
    *, experiment_id: str, customer_id: str, variant: str, outcome: Outcome, exposure_ts: int
) -> dict[str, Any]:
    """An `attributed-outcomes` record for an outcome at or after the customer's first exposure."""
    return {
        "experiment_id": experiment_id,
        "customer_id": customer_id,
        "variant": variant,
        "outcome_event_id": outcome.event_id,
        "event_id": outcome.event_id,
        "ts": outcome.ts,
        "converted": outcome.type == "purchase",
        "revenue": outcome.revenue,
        "seconds_since_exposure": (outcome.ts - exposure_ts) / 1000.0,
    }


def dead_letter_record(
    *,
    source_topic: str,
    partition: int,
    offset: int,
    raw: bytes | None,
    error: str,
    max_raw_bytes: int = DEAD_LETTER_MAX_RAW_BYTES,
) -> dict[str, Any]:
    """A `dead-letter` record: the source position, the raw value (base64 when not UTF-8) and the reason.

    The raw value is kept whole up to `max_raw_bytes`; of a larger one only its first `max_raw_bytes` bytes are
    kept (UTF-8 cut at a character boundary) and the reason says so. A reason longer than 1,000 characters is cut
    too. Both bound the dead letter's size (see `DEAD_LETTER_MAX_RAW_BYTES`).
    """
    if len(error) > _DEAD_LETTER_MAX_ERROR_CHARS:
        error = (
            f"{error[:_DEAD_LETTER_MAX_ERROR_CHARS]}... ({len(error) - _DEAD_LETTER_MAX_ERROR_CHARS} more characters)"
        )
    if raw is None:
        text, encoding = None, "utf-8"
    else:
        kept = raw[:max_raw_bytes]
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(kept).decode("ascii"), "base64"
        else:
            text, encoding = kept.decode("utf-8", errors="ignore"), "utf-8"  # only a cut last character is dropped
            kept = text.encode("utf-8")
        if len(kept) < len(raw):
            error = f"{error} [the dead letter keeps the first {len(kept)} of {len(raw)} bytes]"
    return {
        "source_topic": source_topic,
        "partition": partition,
        "offset": offset,
        "raw": text,
        "raw_encoding": encoding,
        "error": error,
    }


def experiment_health_record(
    *,
    experiment_id: str,
    experiment_version: int,
    model_version: str,
    status: HealthStatus,
    reason: str | None,
    ts: int,
) -> dict[str, Any]:
    """An `experiment-health` record: whether the job can use the experiment's model, and if not, why.

    Why a record and not only a log line: an unusable model makes the experiment assign nobody, and the people who
    look at `experiment show`, the dashboard and the reports never read the job's log. `reason` is the job's exact
    error for `model_unusable` and None for `model_ready`; `ts` is when the job found out (epoch ms).
    """
    return {
        "experiment_id": experiment_id,
        "experiment_version": experiment_version,
        "model_version": model_version,
        "status": status,
        "reason": reason,
        "ts": ts,
    }
