"""The event schemas: every rejection reason, and the builders' exact output."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from experiment.core import events

FEATURES = events.default_feature_names(3)  # age, man, woman, cat1, cat2, cat3


def _session(**overrides: object) -> dict:
    base = {
        "event_id": "e1",
        "customer_id": "c1",
        "ts": 1_700_000_000_000,
        "features": {"age": 31, "man": 1, "woman": 0, "cat1": 2, "cat2": 0, "cat3": 5},
    }
    base.update(overrides)
    return base


def _outcome(**overrides: object) -> dict:
    base = {
        "event_id": "o1",
        "customer_id": "c1",
        "ts": 1_700_000_000_500,
        "type": "purchase",
        "category": "cat4",
        "revenue": 19.5,
    }
    base.update(overrides)
    return base


def _raw(obj: object) -> bytes:
    return json.dumps(obj).encode()


def _reason_session(raw: bytes, **kwargs: object) -> str:
    with pytest.raises(events.InvalidEvent) as info:
        events.parse_session(raw, feature_names=FEATURES, **kwargs)
    return info.value.reason


def _reason_outcome(raw: bytes, **kwargs: object) -> str:
    with pytest.raises(events.InvalidEvent) as info:
        events.parse_outcome(raw, **kwargs)
    return info.value.reason


def test_valid_session_parses_with_typed_fields_and_purchase_sum() -> None:
    session = events.parse_session(_raw(_session()), feature_names=FEATURES)
    assert session.event_id == "e1" and session.customer_id == "c1" and session.ts == 1_700_000_000_000
    assert session.features == {"age": 31.0, "man": 1.0, "woman": 0.0, "cat1": 2.0, "cat2": 0.0, "cat3": 5.0}
    assert all(type(v) is float for v in session.features.values())
    assert session.purchases == 7  # cat1 + cat2 + cat3, not age or the gender indicators


def test_session_json_builder_roundtrips() -> None:
    features = {name: float(i) for i, name in enumerate(FEATURES)}
    raw = events.session_json("e9", "c9", 5, features).encode()
    assert events.parse_session(raw, feature_names=FEATURES).features == features


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "invalid JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
        (b"[1, 2]", "a session must be a JSON object, got array"),
        (b"\xff\xfe{}", "payload is not UTF-8: invalid start byte at byte 0"),
    ],
)
def test_session_rejects_undecodable_payloads(raw: bytes, reason: str) -> None:
    assert _reason_session(raw) == reason


def test_deeply_nested_json_is_a_reason_not_a_crash() -> None:
    assert _reason_session(b"[" * 20_000, max_bytes=100_000) == "invalid JSON: nested too deeply"


def test_session_rejects_oversized_payload_before_parsing() -> None:
    raw = _raw(_session())
    assert _reason_session(raw, max_bytes=10) == f"oversized payload: {len(raw)} bytes > max_bytes=10"


def test_session_missing_and_extra_fields_are_named() -> None:
    missing = _session()
    del missing["ts"], missing["event_id"]
    assert _reason_session(_raw(missing)) == "session is missing field(s): event_id, ts"
    assert _reason_session(_raw(_session(color="red"))) == "session has unexpected field(s): color"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"ts": "yesterday"}, "field 'ts' must be an integer (epoch ms), got str"),
        ({"ts": 1.5}, "field 'ts' must be an integer (epoch ms), got float"),
        ({"ts": True}, "field 'ts' must be an integer (epoch ms), got bool"),
        ({"ts": -1}, "field 'ts' must be >= 0 (epoch ms), got -1"),
        ({"customer_id": 42}, "field 'customer_id' must be a string, got int"),
        ({"customer_id": ""}, "field 'customer_id' must not be empty"),
        ({"event_id": None}, "field 'event_id' must be a string, got null"),
        ({"features": [1, 2]}, "field 'features' must be an object, got array"),
    ],
)
def test_session_wrong_types(overrides: dict, reason: str) -> None:
    assert _reason_session(_raw(_session(**overrides))) == reason


def test_session_feature_errors() -> None:
    good = _session()["features"]
    assert _reason_session(_raw(_session(features={**good, "cat99": 1}))) == "unknown feature key(s): cat99"
    partial = {k: v for k, v in good.items() if k != "cat2"}
    assert _reason_session(_raw(_session(features=partial))) == "missing feature key(s): cat2"
    assert _reason_session(_raw(_session(features={**good, "cat1": -3}))) == (
        "feature 'cat1' must be >= 0 (a count or indicator), got -3"
    )
    assert _reason_session(_raw(_session(features={**good, "age": "old"}))) == "feature 'age' must be a number, got str"
    assert _reason_session(_raw(_session(features={**good, "man": True}))) == "feature 'man' must be a number, got bool"
    nan = _raw(_session()).replace(b'"cat3": 5', b'"cat3": NaN')
    assert _reason_session(nan) == "feature 'cat3' must be finite, got nan"


def test_valid_outcome_and_builder() -> None:
    outcome = events.parse_outcome(_raw(_outcome()))
    assert outcome == events.Outcome("o1", "c1", 1_700_000_000_500, "purchase", "cat4", 19.5)
    raw = events.outcome_json("o2", "c2", 7, "cat61", 3).encode()
    assert events.parse_outcome(raw).category == "cat61"  # a new category is exactly what experiments test


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"type": "refund"}, "field 'type' must be one of ['purchase'], got 'refund'"),
        ({"category": "shoes"}, "unknown category key 'shoes' (expected catN, N >= 1)"),
        ({"category": "cat0"}, "unknown category key 'cat0' (expected catN, N >= 1)"),
        ({"revenue": -2}, "field 'revenue' must be >= 0, got -2"),
        ({"revenue": "9.99"}, "field 'revenue' must be a number, got str"),
    ],
)
def test_outcome_rejections(overrides: dict, reason: str) -> None:
    assert _reason_outcome(_raw(_outcome(**overrides))) == reason


def test_outcome_category_bound_when_given() -> None:
    assert _reason_outcome(_raw(_outcome(category="cat9")), categories=5) == (
        "unknown category key 'cat9' (expected cat1..cat5)"
    )


def test_dead_letter_keeps_raw_utf8_or_base64() -> None:
    text = events.dead_letter_record(source_topic="s", partition=2, offset=9, raw=b'{"a":1}', error="x")
    assert text == {
        "source_topic": "s",
        "partition": 2,
        "offset": 9,
        "raw": '{"a":1}',
        "raw_encoding": "utf-8",
        "error": "x",
    }
    binary = events.dead_letter_record(source_topic="s", partition=0, offset=1, raw=b"\xff\x00", error="y")
    assert binary["raw_encoding"] == "base64" and base64.b64decode(binary["raw"]) == b"\xff\x00"


def test_assignment_and_attribution_builders_have_design_fields() -> None:
    rec = events.assignment_record(
        event_id="e",
        experiment_id="x",
        experiment_version=2,
        customer_id="c",
        variant="control",
        score=None,
        decision="hide",
        model_version=None,
        first_exposure=True,
        event_ts=10,
        decided_ts=11,
        pre_period_purchases=4,
    )
    assert set(rec) == {
        "event_id",
        "experiment_id",
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
    }
    assert rec["segments"] is None  # only a first exposure carries its segments
    outcome = events.Outcome("o", "c", 5_000, "purchase", "cat1", 2.5)
    attributed = events.attributed_outcome_record(
        experiment_id="x", customer_id="c", variant="t", outcome=outcome, exposure_ts=2_000
    )
    assert attributed["outcome_event_id"] == attributed["event_id"] == "o"
    assert attributed["seconds_since_exposure"] == 3.0 and attributed["converted"] is True
    assert json.loads(events.to_json(attributed)) == attributed


@given(st.binary(max_size=200))
def test_parsers_never_raise_anything_but_invalid_event(raw: bytes) -> None:
    for parse in (lambda r: events.parse_session(r, feature_names=FEATURES), events.parse_outcome):
        try:
            parse(raw)
        except events.InvalidEvent as exc:
            assert exc.reason


@pytest.mark.parametrize(
    "raw",
    [
        _raw(_session()),
        _raw(_session()).replace(b'"cat3": 5', b'"cat3": 5.0'),  # mixed int/float features
        b"  " + _raw(_session()) + b"\n",
    ],
)
def test_fast_parse_equals_the_stdlib_parse(raw: bytes) -> None:
    """orjson is only a fast path: values are exactly those `json.loads` gives, whatever the input."""
    session = events.parse_session(raw, feature_names=FEATURES)
    obj = json.loads(raw.decode("utf-8"))
    assert (session.event_id, session.customer_id, session.ts) == (obj["event_id"], obj["customer_id"], obj["ts"])
    assert session.features == {k: float(v) for k, v in obj["features"].items()}
    assert all(type(v) is float for v in session.features.values())
    assert session.purchases == sum(v for k, v in obj["features"].items() if k.startswith("cat"))


def test_infinity_literal_gets_the_stdlib_reason() -> None:
    inf = _raw(_session()).replace(b'"cat3": 5', b'"cat3": Infinity')
    assert _reason_session(inf) == "feature 'cat3' must be finite, got inf"
