"""Segments in the results store: the record contract, bad segments skipped with their reason, a store written before
the column, and `segment_stats` (a hand-computed example; summed over a dimension it is `variant_stats`, exactly)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from experiment.core.errors import DataValidationError
from experiment.results.store import ResultsStore
from experiment.stats.sufficient import VariantStats, to_cents
from tests.helpers.collect_polls import collect_polls
from tests.helpers.fill_store import DAY_MS, START_MS, definition_dict

EXP = "seg-v1"
_FAR = 2**62
_WOMAN_YOUNG = {"age_band": "25-34", "gender": "woman", "customer_type": "new", "history_tier": "0", "cat3": "2"}


def _assignment(event_id: str, **extra: Any) -> dict[str, Any]:
    rec = {
        "event_id": event_id,
        "experiment_id": EXP,
        "experiment_version": 1,
        "customer_id": f"c-{event_id}",
        "variant": "treatment",
        "score": 0.5,
        "decision": "show",
        "model_version": "m",
        "first_exposure": True,
        "event_ts": START_MS,
        "decided_ts": START_MS + 2,
        "pre_period_purchases": 0,
        "segments": dict(_WOMAN_YOUNG),
    }
    return rec | extra


def _outcome(event_id: str, customer: str, ts: int, revenue: float, converted: bool = True) -> dict[str, Any]:
    return {
        "experiment_id": EXP,
        "outcome_event_id": event_id,
        "customer_id": customer,
        "variant": None,
        "ts": ts,
        "converted": converted,
        "revenue": revenue,
        "seconds_since_exposure": None,
    }


def _collect(tmp_path: Path, name: str, polls: list[list[tuple[str, bytes | None]]], reference: bool) -> tuple:
    return collect_polls(tmp_path, name, polls, reference=reference, tables=("assignments", "first_exposures"))


# -- the record contract: what is stored, what is skipped ------------------------------------------------------------

LONG = "x" * 64
BAD_SEGMENTS: list[tuple[str, Any, str]] = [
    ("text", "woman", "segments must be an object or null, got str"),
    ("array", ["woman"], "segments must be an object or null, got array"),
    ("number", 3, "segments must be an object or null, got int"),
    ("too-many", {f"k{i}": "v" for i in range(33)}, "segments must hold at most 32 entries, got 33"),
    ("long-key", {LONG + "y": "v"}, "segments keys must be 1 to 64 characters"),
    ("empty-key", {"": "v"}, "segments keys must be 1 to 64 characters, got ''"),
    ("long-value", {"gender": LONG + "y"}, "segments['gender'] must be a string of at most 64 characters"),
    ("int-value", {"cat3": 2}, "segments['cat3'] must be a string of at most 64 characters, got 2"),
    ("null-value", {"gender": None}, "segments['gender'] must be a string of at most 64 characters, got None"),
    ("object-value", {"gender": {"a": "b"}}, "segments['gender'] must be a string of at most 64 characters"),
    ("surrogate-value", {"gender": "bad-\ud800"}, "is not valid Unicode (surrogates not allowed"),
    ("surrogate-key", {"bad-\udfff": "v"}, "segments key is not valid Unicode (surrogates not allowed"),
]

GOOD_SEGMENTS: list[tuple[str, Any]] = [
    ("builtins", dict(_WOMAN_YOUNG)),
    ("empty", {}),
    ("null", None),
    ("edge-sizes", {f"{i:02d}".ljust(64, "k"): "😀" * 64 for i in range(32)}),  # 32 entries, 64 code points each
    ("unicode", {"région": "Île-de-France", "age_band": "65+"}),
]


def test_good_segments_are_stored_on_assignments_and_first_exposures_by_both_paths(tmp_path: Path) -> None:
    poll: list[tuple[str, bytes | None]] = [
        ("assignments", json.dumps(_assignment(name, segments=segments), ensure_ascii=False).encode())
        for name, segments in GOOD_SEGMENTS
    ]
    absent = _assignment("absent")
    del absent["segments"]  # a record written before the field existed
    poll.append(("assignments", json.dumps(absent).encode()))
    fast_rows, fast = _collect(tmp_path, "fast", [poll, poll], reference=False)  # the second poll: a replay
    ref_rows, ref = _collect(tmp_path, "ref", [poll, poll], reference=True)
    assert fast_rows == ref_rows and fast.as_dict() == ref.as_dict()
    assert fast.skipped == 0 and fast.assignments == 2 * len(poll)
    stored = {row[1]: _loads(row[-1]) for row in fast_rows["assignments"]}
    assert stored == {name: segments for name, segments in GOOD_SEGMENTS} | {"absent": None}
    first = {row[1]: _loads(row[-1]) for row in fast_rows["first_exposures"]}  # (experiment, customer, ..., segments)
    assert first == {f"c-{name}": segments for name, segments in GOOD_SEGMENTS} | {"c-absent": None}
    # The column holds one canonical text per set of segments: compact, keys sorted, UTF-8 as is.
    assert {row[1]: row[-1] for row in fast_rows["assignments"]}["unicode"] == (
        '{"age_band":"65+","région":"Île-de-France"}'
    )


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def test_both_paths_store_the_same_text_whatever_the_key_order_escapes_or_duplicates(tmp_path: Path) -> None:
    raw = [
        b'{"event_id":"order","experiment_id":"e","customer_id":"c1","variant":"v","event_ts":1,'
        b'"segments":{"gender":"woman","age_band":"25-34"}}',
        rb'{"event_id":"escaped","experiment_id":"e","customer_id":"c2","variant":"v","event_ts":1,'
        rb'"segments":{"\u00e2ge":"\ud83d\ude00","a\"b/c~d":"x"}}',
        b'{"event_id":"duplicate","experiment_id":"e","customer_id":"c3","variant":"v","event_ts":1,'
        b'"segments":{"gender":"man","gender":"woman"}}',
    ]
    poll: list[tuple[str, bytes | None]] = [("assignments", value) for value in raw]
    fast_rows, fast = _collect(tmp_path, "fast", [poll], reference=False)
    ref_rows, ref = _collect(tmp_path, "ref", [poll], reference=True)
    assert fast_rows == ref_rows and fast.as_dict() == ref.as_dict() and fast.skipped == 0
    assert {row[1]: row[-1] for row in fast_rows["assignments"]} == {
        "order": '{"age_band":"25-34","gender":"woman"}',
        "escaped": '{"a\\"b/c~d":"x","âge":"😀"}',
        "duplicate": '{"gender":"woman"}',
    }
    with ResultsStore(tmp_path / "fast.duckdb", read_only=True) as store:  # any key can be asked for
        assert store.segment_dimensions("e") == ["age_band", "gender", 'a"b/c~d', "âge"]
        for dimension, value in (('a"b/c~d', "x"), ("âge", "😀"), ("gender", "woman")):
            split = store.segment_stats("e", dimension)
            assert {s: d["v"].users for s, d in split.items()} == {
                value: 1 + (value == "woman"),
                "unknown": 2 - (value == "woman"),
            }


def test_bad_segments_skip_the_record_with_its_reason_by_both_paths(tmp_path: Path, caplog) -> None:
    poll: list[tuple[str, bytes | None]] = [("assignments", json.dumps(_assignment("good")).encode())]
    poll += [("assignments", json.dumps(_assignment(name, segments=bad)).encode()) for name, bad, _ in BAD_SEGMENTS]
    poll.append(("assignments", json.dumps(_assignment("good-2", segments=None)).encode()))
    fast_rows, fast = _collect(tmp_path, "fast", [poll, poll], reference=False)
    ref_rows, ref = _collect(tmp_path, "ref", [poll, poll], reference=True)
    assert fast_rows == ref_rows and fast.as_dict() == ref.as_dict()
    assert sorted(row[1] for row in fast_rows["assignments"]) == ["good", "good-2"]
    assert fast.skipped == 2 * len(BAD_SEGMENTS) and fast.assignments == 2 * 2
    assert sum(fast.skipped_reasons.values()) == 2 * len(BAD_SEGMENTS)
    logged = [r.getMessage() for r in caplog.records if "record skipped" in r.getMessage()]
    for name, _bad, reason in BAD_SEGMENTS:
        mine = [m for m in logged if f"assignments record '{name}'" in m]
        assert len(mine) == 2 * 2 and all(reason in m for m in mine), (name, mine[:1])  # fast and reference, twice


@pytest.mark.parametrize(("name", "bad", "reason"), BAD_SEGMENTS, ids=[b[0] for b in BAD_SEGMENTS])
def test_record_batch_refuses_bad_segments_naming_the_record(tmp_path: Path, name: str, bad: Any, reason: str) -> None:
    with ResultsStore(tmp_path / "r.duckdb") as store:
        with pytest.raises(DataValidationError, match=f"assignments record '{name}'") as error:
            store.record_batch(assignments=[_assignment(name, segments=bad)])
        assert reason in str(error.value)
        assert store.con.execute("SELECT count(*) FROM assignments").fetchone() == (0,)


# -- segment_stats ---------------------------------------------------------------------------------------------------


def _seg(age_band: str, gender: str, **more: str) -> dict[str, str]:
    return {"age_band": age_band, "gender": gender, "customer_type": "new", "history_tier": "0", **more}


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """Five customers, by hand: a later non-first exposure, a customer without segments, outcomes around as_of."""
    t0 = START_MS
    assignments = [
        _assignment("a1", customer_id="u1", variant="control", event_ts=t0, segments=_seg("25-34", "woman")),
        _assignment("a2", customer_id="u2", variant="treatment", event_ts=t0, segments=_seg("25-34", "woman")),
        _assignment("a3", customer_id="u3", variant="treatment", event_ts=t0, segments=_seg("65+", "man", cat3="2")),
        _assignment("a4", customer_id="u4", variant="control", event_ts=t0 + DAY_MS, segments=_seg("65+", "woman"))
        | {"pre_period_purchases": 3},
        _assignment("a5", customer_id="u5", variant="treatment", event_ts=t0, segments=None),  # no segments
        # u2 again, later: not a first exposure, no segments; the first exposure's segments stay
        _assignment("a2b", customer_id="u2", variant="treatment", event_ts=t0 + 5, first_exposure=False, segments=None),
    ]
    outcomes = [
        _outcome("o1", "u2", t0 + 10, 10.0),
        _outcome("o2", "u2", t0 + 2 * DAY_MS, 5.5),  # after the as_of used below
        _outcome("o3", "u4", t0 + DAY_MS + 1, 20.0),
        _outcome("o4", "u3", t0 - 1, 99.0),  # before the first exposure: not counted
        _outcome("o5", "u5", t0 + 1, 1.25),
    ]
    path = tmp_path / "small.duckdb"
    with ResultsStore(path) as store:
        store.record_experiment(json.dumps(definition_dict(EXP)))
        store.record_batch(assignments=assignments, outcomes=outcomes)
    return path


def _stats(users: int, conversions: int, cents: list[int], pre: list[int], converted_pre: list[int]) -> VariantStats:
    """VariantStats of users with revenues `cents` (one per converting user) and covariates `pre`."""
    return VariantStats(
        users=users,
        conversions=conversions,
        revenue_cents_sum=sum(cents),
        revenue_cents_sum_sq=sum(c * c for c in cents),
        pre_sum=sum(pre),
        pre_sum_sq=sum(x * x for x in pre),
        pre_revenue_cents_cross=sum(x * c for x, c in zip(converted_pre, cents, strict=True)),
        pre_conversion_cross=sum(converted_pre),
    )


@pytest.mark.parametrize("read_only", [False, True])
@pytest.mark.parametrize("derive", [False, True])
def test_segment_stats_by_hand(small: Path, read_only: bool, derive: bool) -> None:
    zero = VariantStats()
    with ResultsStore(small, read_only=read_only, derive_first_exposures=derive) as store:
        assert store.segment_dimensions(EXP) == ["age_band", "gender", "customer_type", "history_tier", "cat3"]
        by_gender = store.segment_stats(EXP, "gender")
        assert by_gender == {
            "woman": {
                "control": VariantStats(users=2, conversions=1, revenue_cents_sum=2000, revenue_cents_sum_sq=2000**2,
                                        pre_sum=3, pre_sum_sq=9, pre_revenue_cents_cross=3 * 2000,
                                        pre_conversion_cross=3),
                "treatment": _stats(1, 1, [1550], [0], [0]),
            },
            "man": {"control": zero, "treatment": _stats(1, 0, [], [0], [])},
            "unknown": {"control": zero, "treatment": _stats(1, 1, [125], [0], [0])},
        }  # fmt: skip
        assert list(by_gender) == ["woman", "man", "unknown"]  # the dimension's own order, "unknown" last
        by_age = store.segment_stats(EXP, "age_band")
        assert list(by_age) == ["25-34", "65+", "unknown"]
        assert by_age["25-34"] == {"control": _stats(1, 0, [], [0], []), "treatment": _stats(1, 1, [1550], [0], [0])}
        # An attribute only u3 recorded: everyone else is "unknown"; a dimension nobody has: all "unknown".
        assert {k: {v: s.users for v, s in d.items()} for k, d in store.segment_stats(EXP, "cat3").items()} == {
            "2": {"control": 0, "treatment": 1},
            "unknown": {"control": 2, "treatment": 2},
        }
        assert list(store.segment_stats(EXP, "no-such-dimension")) == ["unknown"]
        # As of the end of the first day: u4 (exposed on day 2) is out, u2's second purchase too.
        as_of = START_MS + DAY_MS - 1
        assert store.segment_stats(EXP, "gender", as_of=as_of) == {
            "woman": {"control": _stats(1, 0, [], [0], []), "treatment": _stats(1, 1, [1000], [0], [0])},
            "man": {"control": zero, "treatment": _stats(1, 0, [], [0], [])},
            "unknown": {"control": zero, "treatment": _stats(1, 1, [125], [0], [0])},
        }
        assert store.segment_stats("no-such-experiment", "gender") == {}
        assert store.segment_dimensions("no-such-experiment") == []


Records = tuple[list[dict[str, Any]], list[dict[str, Any]]]


def _random_store(tmp_path: Path, seed: int) -> tuple[Path, Records]:
    """A random store: repeated exposures with ties, segments on some first exposures, outcomes before and after."""
    rng = random.Random(seed)
    assignments, outcomes = [], []
    for i in range(500):
        customer = f"c{rng.randrange(200):03d}"
        ts = START_MS + rng.randrange(5) * DAY_MS + rng.choice([0, 1_000])
        segments = None
        if rng.random() < 0.6:
            segments = _seg(rng.choice(["18-24", "25-34", "65+"]), rng.choice(["woman", "man", "unstated"]))
            if rng.random() < 0.5:
                segments["cat3"] = str(rng.randrange(3))
        assignments.append(
            _assignment(
                f"e{rng.randrange(10**6):06d}-{i}",
                customer_id=customer,
                variant=rng.choice(["control", "treatment"]),
                event_ts=ts,
                first_exposure=segments is not None,
                pre_period_purchases=rng.randrange(12),
                segments=segments,
            )
        )
    for i in range(300):
        outcomes.append(
            _outcome(
                f"o{i}",
                f"c{rng.randrange(200):03d}",
                START_MS + rng.randrange(7 * DAY_MS),
                round(rng.uniform(0, 90), 2),
                converted=rng.random() < 0.8,
            )
        )
    path = tmp_path / f"random-{seed}.duckdb"
    shuffled = list(assignments)
    rng.shuffle(shuffled)
    with ResultsStore(path) as store:
        store.record_experiment(json.dumps(definition_dict(EXP)))
        for start in range(0, len(shuffled), 61):
            store.record_batch(
                assignments=shuffled[start : start + 61], outcomes=outcomes[start // 2 : start // 2 + 31]
            )
        store.record_batch(assignments=assignments, outcomes=outcomes)  # a replay changes nothing
    return path, (assignments, outcomes)


def _reference_segment_stats(records: Records, dimension: str, as_of: int) -> dict[str, dict[str, VariantStats]]:
    """Plain Python: first exposure = smallest (event_ts, event_id) up to as_of; its segments; outcomes in range."""
    assignments, outcomes = records
    first: dict[str, dict[str, Any]] = {}
    for a in sorted(assignments, key=lambda a: (a["event_ts"], a["event_id"])):
        if a["event_ts"] <= as_of:
            first.setdefault(a["customer_id"], a)
    sums: dict[str, dict[str, list[int]]] = {}
    for customer, a in first.items():
        mine = [o for o in outcomes if o["customer_id"] == customer and a["event_ts"] <= o["ts"] <= as_of]
        r = sum(to_cents(o["revenue"]) for o in mine)
        c = int(any(o["converted"] for o in mine))
        x = a["pre_period_purchases"]
        segment = (a["segments"] or {}).get(dimension, "unknown")
        slot = sums.setdefault(segment, {"control": [0] * 8, "treatment": [0] * 8})[a["variant"]]
        for k, v in enumerate((1, c, r, r * r, x, x * x, x * r, x * c)):
            slot[k] += v
    return {s: {v: VariantStats(*values) for v, values in d.items()} for s, d in sums.items()}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_segment_stats_sum_to_variant_stats_exactly_for_every_dimension(tmp_path: Path, seed: int) -> None:
    path, records = _random_store(tmp_path, seed)
    for read_only in (False, True):
        for derive in (False, True):
            with ResultsStore(path, read_only=read_only, derive_first_exposures=derive) as store:
                dimensions = store.segment_dimensions(EXP)
                assert dimensions == ["age_band", "gender", "customer_type", "history_tier", "cat3"]
                for as_of in (None, START_MS + 2 * DAY_MS + 500, START_MS + 9 * DAY_MS):
                    cut = _FAR if as_of is None else as_of
                    overall = store.variant_stats(EXP, as_of=as_of)
                    for dimension in [*dimensions, "absent"]:
                        split = store.segment_stats(EXP, dimension, as_of=as_of)
                        reference = _reference_segment_stats(records, dimension, cut)
                        assert {k: split[k] for k in reference} == reference, (dimension, as_of)
                        total = {name: VariantStats() for name in overall}
                        for per_variant in split.values():
                            assert list(per_variant) == list(overall)
                            for name, stats in per_variant.items():
                                total[name] = total[name] + stats
                        assert total == overall, (read_only, derive, dimension, as_of)


# -- a store written before the column existed -----------------------------------------------------------------------

_OLD_SCHEMA = (
    """CREATE TABLE experiments (
        id VARCHAR PRIMARY KEY, version BIGINT NOT NULL, updated_ts BIGINT, definition VARCHAR NOT NULL)""",
    """CREATE TABLE assignments (
        experiment_id VARCHAR NOT NULL, event_id VARCHAR NOT NULL, experiment_version BIGINT,
        customer_id VARCHAR NOT NULL, variant VARCHAR NOT NULL, score DOUBLE, decision VARCHAR,
        model_version VARCHAR, first_exposure BOOLEAN, event_ts BIGINT NOT NULL, decided_ts BIGINT,
        pre_period_purchases BIGINT NOT NULL, PRIMARY KEY (experiment_id, event_id))""",
    """CREATE TABLE outcomes (
        experiment_id VARCHAR NOT NULL, outcome_event_id VARCHAR NOT NULL, customer_id VARCHAR NOT NULL,
        variant VARCHAR, ts BIGINT NOT NULL, converted BOOLEAN NOT NULL, revenue_cents BIGINT NOT NULL,
        seconds_since_exposure DOUBLE, PRIMARY KEY (experiment_id, outcome_event_id))""",
    """CREATE TABLE dead_letters (
        source_topic VARCHAR NOT NULL, kafka_partition BIGINT NOT NULL, kafka_offset BIGINT NOT NULL,
        raw VARCHAR, raw_encoding VARCHAR, error VARCHAR,
        PRIMARY KEY (source_topic, kafka_partition, kafka_offset))""",
    """CREATE TABLE first_exposures (
        experiment_id VARCHAR NOT NULL, customer_id VARCHAR NOT NULL, event_ts BIGINT NOT NULL,
        event_id VARCHAR NOT NULL, variant VARCHAR NOT NULL, pre_period_purchases BIGINT NOT NULL,
        PRIMARY KEY (experiment_id, customer_id))""",
)


@pytest.mark.parametrize("with_first_exposures", [True, False])
def test_a_store_written_before_segments_opens_and_is_upgraded_on_its_first_writable_open(
    tmp_path: Path, with_first_exposures: bool
) -> None:
    import duckdb

    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    for statement in _OLD_SCHEMA if with_first_exposures else _OLD_SCHEMA[:-1]:
        con.execute(statement)
    con.execute("INSERT INTO experiments VALUES (?, 1, 0, ?)", [EXP, json.dumps(definition_dict(EXP))])
    con.execute(
        "INSERT INTO assignments VALUES (?, 'old-1', 1, 'u1', 'control', NULL, 'hide', NULL, true, ?, ?, 2)",
        [EXP, START_MS, START_MS],
    )
    if with_first_exposures:
        con.execute("INSERT INTO first_exposures VALUES (?, 'u1', ?, 'old-1', 'control', 2)", [EXP, START_MS])
    con.close()

    with ResultsStore(path, read_only=True) as store:  # read-only: no column, everyone "unknown"
        assert store.segment_dimensions(EXP) == []
        expected = store.variant_stats(EXP)
        assert expected["control"].users == 1
        assert store.segment_stats(EXP, "gender") == {"unknown": expected}
    with ResultsStore(path) as store:  # writable: the columns are added, old rows null, new records carry segments
        columns = store.con.execute(
            "SELECT table_name FROM duckdb_columns() WHERE column_name = 'segments' ORDER BY table_name"
        ).fetchall()
        assert columns == [("assignments",), ("first_exposures",)]
        store.record_batch(assignments=[_assignment("new-1", customer_id="u2")])
    with ResultsStore(path, read_only=True) as store:
        assert store.segment_dimensions(EXP) == ["age_band", "gender", "customer_type", "history_tier", "cat3"]
        by_gender = store.segment_stats(EXP, "gender")
        assert {s: {v: x.users for v, x in d.items()} for s, d in by_gender.items()} == {
            "woman": {"control": 0, "treatment": 1},
            "unknown": {"control": 1, "treatment": 0},
        }
    with ResultsStore(path) as store:  # a second writable open changes nothing
        assert store.segment_stats(EXP, "gender") == by_gender


def test_segments_come_in_the_dimensions_order_numbers_numerically_and_missing_unknown_last() -> None:
    from experiment.results.store import _segment_order

    assert _segment_order("age_band", dict.fromkeys(["65+", "unknown", "18-24", "35-44"])) == [
        "18-24",
        "35-44",
        "65+",
        "unknown",
    ]
    assert _segment_order("history_tier", dict.fromkeys(["10+", "0", "3-9", "1-2"])) == ["0", "1-2", "3-9", "10+"]
    values = ["unknown", "10", "missing", "2", "0.5", "inf", "b", "a", "nan"]
    assert _segment_order("cat3", dict.fromkeys(values)) == [
        "0.5",
        "2",
        "10",
        "a",
        "b",
        "inf",
        "nan",
        "missing",
        "unknown",
    ]
