"""The store's SQL aggregates against a plain Python recomputation from the raw records, on a small random store.

Why: the statistics are computed in DuckDB (first exposure by a struct minimum, a customers view materialised per
read-only connection, daily increments); this checks them, read-only and writable, with exposure-time ties (the
event id breaks them), outcomes before the first exposure and after the as-of time, and repeated exposures that
switch arms.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from typing import Any

import pytest

from experiment.results.store import ResultsStore
from experiment.stats.sufficient import VariantStats, to_cents
from tests.helpers.fill_store import DAY_MS, START_MS, definition_dict

EXP = "agg-v1"
_FAR = 2**62


def _records(seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rng = random.Random(seed)
    assignments, outcomes = [], []
    for i in range(600):
        customer = f"c{rng.randrange(250):03d}"
        ts = START_MS + rng.randrange(6) * DAY_MS + rng.choice([0, 1_000, 2_000])  # coarse: ties happen
        variant = rng.choice(["control", "treatment"])
        score = rng.random() if variant == "treatment" else None
        assignments.append(
            {
                "event_id": f"e{rng.randrange(10**6):06d}-{i}",
                "experiment_id": EXP,
                "experiment_version": 1,
                "customer_id": customer,
                "variant": variant,
                "score": score,
                "decision": None if score is None else ("show" if score > 0.5 else "hide"),
                "model_version": "m",
                "first_exposure": False,
                "event_ts": ts,
                "decided_ts": ts,
                "pre_period_purchases": rng.randrange(5),
            }
        )
    for i in range(300):
        outcomes.append(
            {
                "experiment_id": EXP,
                "outcome_event_id": f"o{i}",
                "customer_id": f"c{rng.randrange(250):03d}",
                "variant": None,
                "ts": START_MS + rng.randrange(8 * DAY_MS),
                "converted": rng.random() < 0.8,
                "revenue": round(rng.uniform(0, 90), 2),
                "seconds_since_exposure": None,
            }
        )
    return assignments, outcomes


def _first_exposures(assignments: list[dict[str, Any]], as_of: int) -> dict[str, dict[str, Any]]:
    first: dict[str, dict[str, Any]] = {}
    for a in sorted(assignments, key=lambda a: (a["event_ts"], a["event_id"])):
        if a["event_ts"] <= as_of:
            first.setdefault(a["customer_id"], a)
    return first


def _reference_stats(assignments: list[dict[str, Any]], outcomes: list[dict[str, Any]], as_of: int) -> dict:
    sums: dict[str, list[int]] = {name: [0] * 8 for name in ("control", "treatment")}
    for customer, a in _first_exposures(assignments, as_of).items():
        mine = [o for o in outcomes if o["customer_id"] == customer and a["event_ts"] <= o["ts"] <= as_of]
        r = sum(to_cents(o["revenue"]) for o in mine)
        c = int(any(o["converted"] for o in mine))
        x = a["pre_period_purchases"]
        for k, v in enumerate((1, c, r, r * r, x, x * x, x * r, x * c)):
            sums[a["variant"]][k] += v
    return {name: VariantStats(*values) for name, values in sorted(sums.items())}


def _reference_daily(assignments: list[dict[str, Any]], outcomes: list[dict[str, Any]], as_of: int | None) -> list:
    cut = _FAR if as_of is None else as_of
    first = _first_exposures(assignments, cut)
    if not first:
        return []
    days = [a["event_ts"] // DAY_MS for a in first.values()]
    days += [
        o["ts"] // DAY_MS
        for o in outcomes
        if o["customer_id"] in first and first[o["customer_id"]]["event_ts"] <= o["ts"] <= cut
    ]
    last = max(days) if as_of is None else max(max(days), as_of // DAY_MS)
    epoch = dt.date(1970, 1, 1)
    return [
        (epoch + dt.timedelta(days=d), _reference_stats(assignments, outcomes, min(cut, (d + 1) * DAY_MS - 1)))
        for d in range(min(days), last + 1)
    ]


def _reference_funnel(assignments: list[dict[str, Any]], outcomes: list[dict[str, Any]]) -> dict:
    stats = _reference_stats(assignments, outcomes, _FAR)
    funnel = {}
    for name, s in stats.items():
        mine = [a for a in assignments if a["variant"] == name]
        funnel[name] = {
            "decisions": len(mine),
            "customers": s.users,
            "scored": len({a["customer_id"] for a in mine if a["score"] is not None}),
            "shown": len({a["customer_id"] for a in mine if a["decision"] == "show"}),
            "converted": s.conversions,
        }
    return funnel


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("read_only", [False, True])
@pytest.mark.parametrize("derive", [False, True])
def test_sql_aggregates_equal_a_plain_recomputation(tmp_path, seed: int, read_only: bool, derive: bool) -> None:
    """Batches in a shuffled order, then replayed: the maintained first exposures and the derived ones agree."""
    assignments, outcomes = _records(seed)
    path = tmp_path / "r.duckdb"
    shuffled = list(assignments)
    random.Random(seed).shuffle(shuffled)
    with ResultsStore(path) as store:
        store.record_experiment(json.dumps(definition_dict(EXP)))
        for start in range(0, len(shuffled), 97):
            store.record_batch(
                assignments=shuffled[start : start + 97], outcomes=outcomes[start // 2 : start // 2 + 49]
            )
        store.record_batch(assignments=assignments, outcomes=outcomes)  # a replay of everything changes nothing
    with ResultsStore(path, read_only=read_only, derive_first_exposures=derive) as store:
        for as_of in (None, START_MS + 3 * DAY_MS + 1_000, START_MS + 10 * DAY_MS):
            cut = _FAR if as_of is None else as_of
            assert store.variant_stats(EXP, as_of=as_of) == _reference_stats(assignments, outcomes, cut)
            assert store.daily_stats(EXP, as_of=as_of) == _reference_daily(assignments, outcomes, as_of)
        assert store.funnel(EXP) == _reference_funnel(assignments, outcomes)
        # Asked again on the same connection (the read-only store reuses its materialised view): the same numbers.
        assert store.variant_stats(EXP) == _reference_stats(assignments, outcomes, _FAR)


def test_first_exposures_of_a_store_written_before_the_table_existed_are_filled_on_open(tmp_path) -> None:
    """An older store has no `first_exposures`: read-only it is derived, the first writable open fills it."""
    assignments, outcomes = _records(3)
    path = tmp_path / "r.duckdb"
    with ResultsStore(path) as store:
        store.record_experiment(json.dumps(definition_dict(EXP)))
        store.record_batch(assignments=assignments, outcomes=outcomes)
        store.con.execute("DROP TABLE first_exposures")
    expected = _reference_stats(assignments, outcomes, _FAR)
    with ResultsStore(path, read_only=True) as store:
        assert store.variant_stats(EXP) == expected
    with ResultsStore(path) as store:
        assert store.con.execute("SELECT count(*) FROM first_exposures").fetchone()[0] == len(
            {a["customer_id"] for a in assignments}
        )
    with ResultsStore(path, read_only=True) as store:
        assert store.variant_stats(EXP) == expected
