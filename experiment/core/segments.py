"""The segments of a first exposure: the labels the lift is broken down by ("for whom does it work?").

Why fixed at the first exposure: a segment must be a pre-treatment covariate. A label read later could itself be
moved by the treatment (a customer the new category made buy becomes "returning"), and comparing the arms within
such a label compares different people, not the same people treated differently. So the job computes the segments
once, from the session of the customer's first exposure and the purchases before it, writes them on that
`assignments` record only, and the store groups each customer by them for good. The long story is in
docs/statistics.md ("Lift by segment").

Built-in segments, for every first exposure (`BUILTIN_SEGMENTS`, the definition's `RESERVED_SEGMENT_NAMES`):

- `age_band`: "18-24", "25-34", "35-44", "45-54", "55-64", "65+" on the `age` feature (a band includes its lower
  bound: 24.9 is "18-24", 25 is "25-34"); ages below 25 are "18-24" and from 65 on "65+", so every number has a band;
  "missing" without an age (or NaN).
- `gender`: "woman" if `woman` == 1, else "man" if `man` == 1, else "unstated".
- `customer_type`: "new" when `pre_period_purchases` == 0, else "returning".
- `history_tier`: "0", "1-2", "3-9", "10+" on `pre_period_purchases`.

Besides them, one entry per attribute the experiment names (`segment_attributes`): key = the feature name, value =
its value written compactly ("3" for 3.0, "2.5", "1e+300"), "missing" when the session lacks it.

Every result is a small str -> str dict the collector and the store accept (at most `MAX_SEGMENTS` entries, keys
and values at most `MAX_SEGMENT_CHARS` characters): an attribute that would break that (a name longer than
`MAX_SEGMENT_CHARS`, a built-in name, or one beyond the entry limit) is left out. Pure, no I/O; the job calls it
for first exposures only (not per session), so it is a handful of comparisons.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from experiment.core.definition import RESERVED_SEGMENT_NAMES

__all__ = [
    "AGE_BANDS",
    "BUILTIN_SEGMENTS",
    "CUSTOMER_TYPES",
    "GENDERS",
    "HISTORY_TIERS",
    "MAX_SEGMENTS",
    "MAX_SEGMENT_CHARS",
    "MISSING",
    "UNKNOWN",
    "age_band",
    "history_tier",
    "segment_value",
    "segments_of",
]

#: The built-in segment names, in the order every first exposure records them (and `segment_dimensions` lists them).
BUILTIN_SEGMENTS: tuple[str, ...] = RESERVED_SEGMENT_NAMES
AGE_BANDS: tuple[str, ...] = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
GENDERS: tuple[str, ...] = ("woman", "man", "unstated")
CUSTOMER_TYPES: tuple[str, ...] = ("new", "returning")
HISTORY_TIERS: tuple[str, ...] = ("0", "1-2", "3-9", "10+")
#: Most entries a `segments` object may hold, and the longest key or value (characters): the store's contract.
MAX_SEGMENTS = 32
MAX_SEGMENT_CHARS = 64
#: The value of a named attribute the session does not carry (and of `age_band` without an age).
MISSING = "missing"
#: The store's group for customers whose first exposure recorded no value for the dimension asked about.
UNKNOWN = "unknown"

_BUILTIN = frozenset(BUILTIN_SEGMENTS)
#: Upper bounds (exclusive) of the age bands but the last.
_AGE_UPPER = (25.0, 35.0, 45.0, 55.0, 65.0)
#: Largest magnitude written as an integer: beyond 2**53 a float no longer holds every integer, and the digits of
#: 1e300 would not fit `MAX_SEGMENT_CHARS`; larger values are written like `repr` (e.g. "1e+300").
_MAX_EXACT = 2.0**53


def age_band(age: float | None) -> str:
    """The age band of `age` (see the module docstring); "missing" for None or NaN."""
    if age is None or age != age:  # NaN is the one value unequal to itself
        return MISSING
    for bound, band in zip(_AGE_UPPER, AGE_BANDS, strict=False):
        if age < bound:
            return band
    return AGE_BANDS[-1]


def history_tier(pre_period_purchases: int) -> str:
    """The tier of a pre-period purchase count: "0", "1-2", "3-9" or "10+" (a count is never negative)."""
    if pre_period_purchases <= 0:
        return "0"
    if pre_period_purchases <= 2:
        return "1-2"
    if pre_period_purchases <= 9:
        return "3-9"
    return "10+"


def segment_value(value: object) -> str:
    """A feature value as a short segment label: integers without ".0" ("3"), other numbers in `repr` form.

    `repr` of a float is its shortest round-trip form ("2.5", "1e-05", "1e+300", "nan", "inf"), at most 24 characters.
    Anything that is not a number (sessions never carry one) is written with `str`, cut to `MAX_SEGMENT_CHARS`.
    """
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return str(value)[:MAX_SEGMENT_CHARS]
    if math.isfinite(number) and number.is_integer() and abs(number) <= _MAX_EXACT:
        return str(int(number))
    return repr(number)


def segments_of(
    features: Mapping[str, float], pre_period_purchases: int, attributes: Sequence[str] = ()
) -> dict[str, str]:
    """The segments of a first exposure: the built-in ones, then one per named attribute (module docstring).

    `features` are the session's (`age`, `man`, `woman`, `cat1..catK`), `pre_period_purchases` the exposure's CUPED
    covariate (purchases before it), `attributes` the experiment's `segment_attributes`.
    """
    customer_new = pre_period_purchases <= 0
    segments = {
        "age_band": age_band(features.get("age")),
        "gender": "woman" if features.get("woman") == 1 else "man" if features.get("man") == 1 else "unstated",
        "customer_type": "new" if customer_new else "returning",
        "history_tier": history_tier(pre_period_purchases),
    }
    for name in attributes:
        if len(segments) >= MAX_SEGMENTS:
            break
        if name in _BUILTIN or len(name) > MAX_SEGMENT_CHARS:
            continue
        value = features.get(name)
        segments[name] = MISSING if value is None else segment_value(value)
    return segments
