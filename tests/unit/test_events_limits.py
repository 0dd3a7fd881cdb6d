"""The limits that keep every record the job writes representable downstream, found by the hostile-input test.

- a `ts` beyond 2**63 - 1 would be decided, and its assignment would stop the collector (DuckDB BIGINT);
- purchase counts summing beyond 2**53 would either stop the collector or fail the job's output mid-session;
- a revenue beyond 2**53 cents would stop the collector (integer cents);
- a string with a lone surrogate (a JSON escape such as "\\ud800", which `json` accepts) would be decided, and then
  its assignment could not be written (orjson refuses it) after the customer's first exposure had been cached;
- a dead letter holding a whole 1 MiB value (JSON escapes a control character as 6 bytes) would exceed the
  broker's message limit, and the job's exactly-once sink would fail on every replay of that record.
"""

from __future__ import annotations

import base64
import json

import pytest

from experiment.core import events
from experiment.core.events import InvalidEvent

NAMES = events.default_feature_names(3)


def _session(ts: int = 1, **features: float) -> bytes:
    values = dict.fromkeys(NAMES, 0.0) | features
    return events.session_json("e", "c", ts, values).encode()


def _reason(raw: bytes) -> str:
    with pytest.raises(InvalidEvent) as caught:
        events.parse_session(raw, feature_names=NAMES)
    return caught.value.reason


def test_ts_must_fit_a_signed_64_bit_integer() -> None:
    assert events.parse_session(_session(2**63 - 1), feature_names=NAMES).ts == 2**63 - 1
    for ts in (2**63, 2**64 - 1):
        assert _reason(_session(ts)) == f"field 'ts' must be <= {2**63 - 1} (a 64-bit epoch ms), got {ts}"
        outcome = events.outcome_json("o", "c", ts, "cat1", 1.0).encode()
        with pytest.raises(InvalidEvent, match="must be <= 9223372036854775807"):
            events.parse_outcome(outcome)


def test_purchase_counts_must_sum_to_an_exact_double_integer() -> None:
    assert events.parse_session(_session(cat1=2.0**52, cat2=2.0**52), feature_names=NAMES).purchases == 2**53
    assert _reason(_session(cat1=1e16)) == "purchase counts cat1..cat3 must sum to at most 9007199254740992, got 1e+16"
    assert "must sum to at most" in _reason(_session(cat1=1e308, cat2=1e308))  # the sum overflows to infinity
    assert "must sum to at most" in _reason(_session(cat3=2**64 - 1))
    # A large value that is not a count (the total of all features may even overflow) is still a valid session.
    assert events.parse_session(_session(age=1e308, man=1e308), feature_names=NAMES).purchases == 0


def test_revenue_must_have_exact_cents() -> None:
    top = 2**53 / 100
    assert events.parse_outcome(events.outcome_json("o", "c", 1, "cat1", top).encode()).revenue == top
    with pytest.raises(InvalidEvent, match=r"^field 'revenue' must be at most 90071992547409\.92 \(exact cents\)"):
        events.parse_outcome(events.outcome_json("o", "c", 1, "cat1", 1e300).encode())


def test_dead_letter_keeps_at_most_64_kib_of_the_raw_value_and_says_so() -> None:
    limit = events.DEAD_LETTER_MAX_RAW_BYTES
    small = b"\x01" * limit
    assert events.dead_letter_record(source_topic="s", partition=0, offset=1, raw=small, error="x")["error"] == "x"

    huge = b"\x01" * 1_000_000
    record = events.dead_letter_record(source_topic="s", partition=0, offset=1, raw=huge, error="oversized")
    assert record["raw"] == "\x01" * limit and record["raw_encoding"] == "utf-8"
    assert record["error"] == f"oversized [the dead letter keeps the first {limit} of 1000000 bytes]"
    assert len(events.to_json(record).encode()) < 7 * limit < 1_048_576  # 6 bytes per escaped control character

    accents = "é".encode() * limit  # a cut in the middle of a character drops that character
    record = events.dead_letter_record(source_topic="s", partition=0, offset=1, raw=accents, error="x")
    assert record["raw"] == "é" * (limit // 2) and f"first {limit} of {2 * limit} bytes" in record["error"]

    binary = b"\xff" * (limit + 1)
    record = events.dead_letter_record(source_topic="s", partition=0, offset=1, raw=binary, error="x")
    assert record["raw_encoding"] == "base64" and base64.b64decode(record["raw"]) == binary[:limit]


def test_dead_letter_reason_is_cut_at_1000_characters() -> None:
    reason = "customer_id 'c' does not match the message key '" + "k" * 500_000 + "'"
    record = events.dead_letter_record(source_topic="s", partition=0, offset=1, raw=b"{}", error=reason)
    assert record["error"] == f"{reason[:1000]}... ({len(reason) - 1000} more characters)"


def test_strings_must_be_valid_unicode() -> None:
    for field in ("event_id", "customer_id"):
        raw = json.dumps(
            {"event_id": "e", "customer_id": "c", "ts": 1, "features": dict.fromkeys(NAMES, 0.0)} | {field: "x\ud800"}
        ).encode()
        assert _reason(raw) == f"field '{field}' must be valid Unicode, got a lone surrogate"
    outcome = json.dumps(json.loads(events.outcome_json("o", "c", 1, "cat1", 1.0)) | {"event_id": "\udfff"}).encode()
    with pytest.raises(InvalidEvent, match=r"^field 'event_id' must be valid Unicode"):
        events.parse_outcome(outcome)
    assert events.parse_session(_session(), feature_names=NAMES).event_id == "e"  # non-ASCII is fine: "é" below
    assert events.parse_outcome(events.outcome_json("é\U0001f642", "c", 1, "cat1", 1.0).encode()).event_id[0] == "é"
