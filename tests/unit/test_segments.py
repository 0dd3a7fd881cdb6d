"""The segments of a first exposure (`experiment.core.segments`): bands, labels, attributes and the size contract."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiment.core.definition import RESERVED_SEGMENT_NAMES
from experiment.core.events import default_feature_names
from experiment.core.segments import (
    AGE_BANDS,
    BUILTIN_SEGMENTS,
    HISTORY_TIERS,
    MAX_SEGMENT_CHARS,
    MAX_SEGMENTS,
    age_band,
    history_tier,
    segment_value,
    segments_of,
)


def _features(age: float = 30.0, man: float = 0.0, woman: float = 1.0, **cats: float) -> dict[str, float]:
    features = dict.fromkeys(default_feature_names(10), 0.0)
    features.update(age=age, man=man, woman=woman)
    features.update(cats)
    return features


def test_a_young_woman_new_customer_with_one_attribute() -> None:
    assert segments_of(_features(age=30.0, cat3=2.0), 0, ("cat3",)) == {
        "age_band": "25-34",
        "gender": "woman",
        "customer_type": "new",
        "history_tier": "0",
        "cat3": "2",
    }


def test_an_older_returning_man_with_a_missing_and_a_fractional_attribute() -> None:
    features = _features(age=70.0, man=1.0, woman=0.0) | {"score_bucket": 0.25}
    assert segments_of(features, 12, ("score_bucket", "not_a_feature")) == {
        "age_band": "65+",
        "gender": "man",
        "customer_type": "returning",
        "history_tier": "10+",
        "score_bucket": "0.25",
        "not_a_feature": "missing",
    }


@pytest.mark.parametrize(
    ("age", "band"),
    [
        (-5.0, "18-24"),
        (0.0, "18-24"),
        (17.0, "18-24"),
        (18.0, "18-24"),
        (24.0, "18-24"),
        (24.999, "18-24"),
        (25.0, "25-34"),
        (34.0, "25-34"),
        (35.0, "35-44"),
        (44.5, "35-44"),
        (45.0, "45-54"),
        (54.0, "45-54"),
        (55.0, "55-64"),
        (64.9, "55-64"),
        (65.0, "65+"),
        (90.0, "65+"),
        (1e9, "65+"),
        (math.inf, "65+"),
        (-math.inf, "18-24"),
        (math.nan, "missing"),
        (None, "missing"),
    ],
)
def test_age_bands_include_their_lower_bound_and_clamp_at_the_ends(age: float | None, band: str) -> None:
    assert age_band(age) == band


@pytest.mark.parametrize(
    ("pre", "tier", "kind"),
    [
        (0, "0", "new"),
        (1, "1-2", "returning"),
        (2, "1-2", "returning"),
        (3, "3-9", "returning"),
        (9, "3-9", "returning"),
        (10, "10+", "returning"),
        (2**53, "10+", "returning"),
    ],
)
def test_history_tiers_and_customer_type(pre: int, tier: str, kind: str) -> None:
    assert history_tier(pre) == tier
    segments = segments_of(_features(), pre)
    assert (segments["history_tier"], segments["customer_type"]) == (tier, kind)


@pytest.mark.parametrize(
    ("man", "woman", "gender"),
    [(0.0, 1.0, "woman"), (1.0, 0.0, "man"), (0.0, 0.0, "unstated"), (1.0, 1.0, "woman"), (0.5, 0.0, "unstated")],
)
def test_gender(man: float, woman: float, gender: str) -> None:
    assert segments_of(_features(man=man, woman=woman), 0)["gender"] == gender


def test_a_session_without_demographics_is_missing_and_unstated() -> None:
    assert segments_of({}, 0) == {
        "age_band": "missing",
        "gender": "unstated",
        "customer_type": "new",
        "history_tier": "0",
    }


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (3.0, "3"),
        (3, "3"),
        (-0.0, "0"),
        (2.5, "2.5"),
        (1e-05, "1e-05"),
        (2.0**53, "9007199254740992"),
        (2.0**54, "1.8014398509481984e+16"),
        (1e300, "1e+300"),
        (math.inf, "inf"),
        (math.nan, "nan"),
        (True, "1"),
        ("text", "text"),
    ],
)
def test_attribute_values_are_written_compactly(value: object, text: str) -> None:
    assert segment_value(value) == text


def test_builtins_are_the_definitions_reserved_names_in_order() -> None:
    assert BUILTIN_SEGMENTS == RESERVED_SEGMENT_NAMES
    assert tuple(segments_of(_features(), 0)) == RESERVED_SEGMENT_NAMES


def test_attributes_that_would_break_the_store_contract_are_left_out() -> None:
    long_name = "f" * (MAX_SEGMENT_CHARS + 1)
    many = [f"a{i}" for i in range(50)]
    features = dict.fromkeys([long_name, *many], 1.0) | {"age": 40.0, "gender": 7.0}
    segments = segments_of(features, 3, ("gender", long_name, *many))
    assert segments["gender"] == "unstated"  # a built-in name is never overwritten by an attribute
    assert long_name not in segments
    assert len(segments) == MAX_SEGMENTS
    assert list(segments)[len(BUILTIN_SEGMENTS) :] == many[: MAX_SEGMENTS - len(BUILTIN_SEGMENTS)]


_numbers = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**70), 2**70)


@settings(max_examples=400, deadline=None)
@given(
    age=st.floats(allow_nan=False, allow_infinity=True),
    man=st.sampled_from([0.0, 1.0]),
    woman=st.sampled_from([0.0, 1.0]),
    pre=st.integers(0, 2**53),
    extra=st.dictionaries(st.text(min_size=1, max_size=80), _numbers, max_size=40),
)
def test_property_every_age_has_a_band_and_values_are_short_deterministic_strings(
    age: float, man: float, woman: float, pre: int, extra: dict[str, float]
) -> None:
    features = {**extra, "age": age, "man": man, "woman": woman}
    attributes = tuple(extra)
    segments = segments_of(features, pre, attributes)
    assert segments["age_band"] in AGE_BANDS
    assert segments["history_tier"] in HISTORY_TIERS
    assert segments == segments_of(dict(features), pre, attributes)  # deterministic, pure
    assert len(segments) <= MAX_SEGMENTS
    for key, value in segments.items():
        assert isinstance(key, str) and isinstance(value, str)
        assert 1 <= len(key) <= MAX_SEGMENT_CHARS and 1 <= len(value) <= MAX_SEGMENT_CHARS
    for name in attributes:
        if name in segments and name not in BUILTIN_SEGMENTS:
            value = features[name]
            assert segments[name] == segment_value(value)
            if not isinstance(value, bool) and float(value).is_integer() and abs(value) <= 2**53:
                assert segments[name] == str(int(value))  # integers without ".0"


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=True), st.floats(allow_nan=False, allow_infinity=True))
def test_property_bands_are_monotone_in_age(a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert AGE_BANDS.index(age_band(low)) <= AGE_BANDS.index(age_band(high))
