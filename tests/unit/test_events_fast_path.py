"""`parse_session`'s msgspec fast path accepts exactly what the checked path accepts, with the same values.

The fast path only ever returns a Session or defers; so the property is: for any bytes, `parse_session` gives the
same Session (same floats, bit for bit) or the same rejection reason as `_parse_session_checked` alone.
"""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiment.core import events
from experiment.core.events import InvalidEvent, _fast_session, _layout, _parse_session_checked, parse_session

NAMES = events.default_feature_names(4)
LAYOUT = _layout(NAMES)
MAX_BYTES = 4_096


def _outcome(raw: bytes) -> tuple[str, object]:
    try:
        return "ok", parse_session(raw, feature_names=NAMES, max_bytes=MAX_BYTES)
    except InvalidEvent as exc:
        return "invalid", exc.reason


def _reference(raw: bytes) -> tuple[str, object]:
    try:
        return "ok", _parse_session_checked(raw, LAYOUT, MAX_BYTES)
    except InvalidEvent as exc:
        return "invalid", exc.reason


def _same(raw: bytes) -> None:
    got, want = _outcome(raw), _reference(raw)
    assert got[0] == want[0], (raw, got, want)
    if got[0] == "ok":
        a, b = got[1], want[1]
        assert isinstance(a, events.Session) and isinstance(b, events.Session)
        assert (a.event_id, a.customer_id, a.ts, a.purchases) == (b.event_id, b.customer_id, b.ts, b.purchases)
        assert set(a.features) == set(b.features) == set(NAMES)
        for name in NAMES:
            assert math.copysign(1, a.features[name]) == math.copysign(1, b.features[name])
            assert a.features[name].hex() == b.features[name].hex(), name
            assert type(a.features[name]) is float
    else:
        assert got[1] == want[1]


def _valid(**override: object) -> dict[str, object]:
    obj: dict[str, object] = {
        "event_id": "e1",
        "customer_id": "c1",
        "ts": 1_700_000_000_000,
        "features": {"age": 34.0, "man": 1.0, "woman": 0.0, "cat1": 2.0, "cat2": 0.0, "cat3": 1.0, "cat4": 0.0},
    }
    obj.update(override)
    return obj


def test_fast_path_takes_the_valid_message() -> None:
    raw = json.dumps(_valid()).encode()
    session = _fast_session(raw, LAYOUT)
    assert session is not None
    assert session.purchases == 3
    _same(raw)


MALFORMED = [
    b"",
    b"null",
    b"[]",
    b"{",
    b"\xef\xbb\xbf" + json.dumps(_valid()).encode(),  # UTF-8 BOM
    b"\xff\xfe",
    json.dumps(_valid()).encode().replace(b'"c1"', b'"c\xff"'),  # not UTF-8 inside a string
    json.dumps(_valid(ts=True)).encode(),
    json.dumps(_valid(ts=1.0)).encode(),
    json.dumps(_valid(ts=-1)).encode(),
    json.dumps(_valid(ts=2**70)).encode(),
    json.dumps(_valid(ts="1")).encode(),
    json.dumps(_valid(event_id="")).encode(),
    json.dumps(_valid(customer_id=7)).encode(),
    json.dumps(_valid(extra=1)).encode(),
    json.dumps({k: v for k, v in _valid().items() if k != "ts"}).encode(),
    json.dumps(_valid(features=[])).encode(),
    json.dumps(_valid(features={**_valid()["features"], "cat9": 1.0})).encode(),  # type: ignore[dict-item]
    json.dumps(_valid(features={**_valid()["features"], "cat1": -1.0})).encode(),  # type: ignore[dict-item]
    json.dumps(_valid(features={**_valid()["features"], "cat1": True})).encode(),  # type: ignore[dict-item]
    json.dumps(_valid(features={**_valid()["features"], "cat1": "2"})).encode(),  # type: ignore[dict-item]
    json.dumps(_valid(features={**_valid()["features"], "cat1": None})).encode(),  # type: ignore[dict-item]
    json.dumps(_valid(features={**_valid()["features"], "age": 1e308, "cat1": 1e308})).encode(),  # type: ignore[dict-item]
    json.dumps(_valid()).encode().replace(b"34.0", b"NaN"),
    json.dumps(_valid()).encode().replace(b"34.0", b"Infinity"),
    json.dumps(_valid()).encode().replace(b"34.0", b"1e999"),
    json.dumps(_valid()).encode().replace(b"34.0", b"-0.0"),
    json.dumps(_valid()).encode().replace(b"34.0", b"34"),
    json.dumps(_valid()).encode().replace(b"34.0", b"0.1000000000000000055511151231257827"),
    json.dumps(_valid()).encode().replace(b'"c1"', b'"\\ud800"'),  # lone surrogate escape
    json.dumps(_valid()).encode().replace(b'"e1"', b'"e1", "event_id": "e2"'),  # duplicate key
    json.dumps(_valid()).encode() + b" ",
    json.dumps(_valid()).encode() + b" x",
    b" " * (MAX_BYTES + 1),
    json.dumps(_valid(event_id="x" * MAX_BYTES)).encode(),  # oversized
]


@pytest.mark.parametrize("raw", MALFORMED, ids=range(len(MALFORMED)))
def test_edge_cases_agree(raw: bytes) -> None:
    _same(raw)


def test_fast_path_defers_on_every_rejection() -> None:
    """Whatever the checked path rejects, the fast path never accepted (the size check comes before both)."""
    for raw in MALFORMED:
        if _reference(raw)[0] == "invalid" and len(raw) <= MAX_BYTES:
            assert _fast_session(raw, LAYOUT) is None, raw


_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
)


@settings(max_examples=400, deadline=None)
@given(
    values=st.lists(st.floats(min_value=0, max_value=1e12, allow_nan=False), min_size=7, max_size=7),
    ts=st.integers(min_value=0, max_value=2**63 - 1),
)
def test_valid_messages_agree_bit_for_bit(values: list[float], ts: int) -> None:
    features = dict(zip(NAMES, values, strict=True))
    _same(json.dumps(_valid(ts=ts, features=features)).encode())
    _same(events.session_json("e", "c", ts, features).encode())  # orjson's shortest-repr floats


@settings(max_examples=400, deadline=None)
@given(field=st.sampled_from(["event_id", "customer_id", "ts", "features", "age", "cat1", "cat4"]), value=_json_scalars)
def test_one_field_replaced_agrees(field: str, value: object) -> None:
    obj = _valid()
    if field in ("age", "cat1", "cat4"):
        obj["features"] = {**obj["features"], field: value}  # type: ignore[dict-item]
    else:
        obj[field] = value
    _same(json.dumps(obj).encode())


@settings(max_examples=600, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32))
def test_mutated_bytes_agree(seed: int) -> None:
    rng = random.Random(seed)
    raw = bytearray(json.dumps(_valid()).encode())
    for _ in range(rng.randint(1, 3)):
        pos = rng.randrange(len(raw))
        action = rng.random()
        if action < 0.4:
            raw[pos] = rng.randrange(256)
        elif action < 0.7:
            del raw[pos]
        else:
            raw.insert(pos, rng.choice(b'0123456789-.eE",:{}[] \\'))
    _same(bytes(raw))


def test_long_decimal_strings_parse_to_the_same_double() -> None:
    rng = random.Random(7)
    for _ in range(2_000):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 25)))
        text = f"{rng.randint(0, 999)}.{digits}e{rng.randint(-30, 30)}"
        raw = json.dumps(_valid()).encode().replace(b"34.0", text.encode())
        _same(raw)
