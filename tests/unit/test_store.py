"""Results store: idempotent replays, first exposure wins, as_of, daily statistics, definitions, batch speed."""

from __future__ import annotations

import json
import time

import pytest

from experiment.core.definition import ExperimentDefinition
from experiment.core.errors import DataValidationError, ExperimentError
from experiment.results.store import ResultsStore, to_epoch_ms
from experiment.stats.sufficient import VariantStats
from tests.helpers.fill_store import DAY_MS, START_MS, definition_dict, fill_store, make_experiment


def _assignment(event_id, customer, variant, ts, pre=0, exp="e1"):
    return {
        "event_id": event_id,
        "experiment_id": exp,
        "experiment_version": 1,
        "customer_id": customer,
        "variant": variant,
        "score": None,
        "decision": "hide",
        "model_version": "m",
        "first_exposure": True,
        "event_ts": ts,
        "decided_ts": ts,
        "pre_period_purchases": pre,
    }


def _outcome(event_id, customer, ts, revenue, exp="e1", variant="control"):
    return {
        "experiment_id": exp,
        "customer_id": customer,
        "variant": variant,
        "outcome_event_id": event_id,
        "ts": ts,
        "converted": True,
        "revenue": revenue,
        "seconds_since_exposure": 1.0,
    }


@pytest.fixture
def store(tmp_path):
    with ResultsStore(tmp_path / "r.duckdb") as s:
        yield s


def test_store_matches_batch_recomputation_and_replay_never_double_counts(tmp_path) -> None:
    exp = make_experiment(n_customers=3_000, seed=3)
    path = tmp_path / "r.duckdb"
    fill_store(path, exp)
    with ResultsStore(path) as store:
        first = store.variant_stats("cat61-v1")
        version = store.version()
        assert first == exp.expected_stats
        # Replay everything, in reverse order: nothing changes.
        store.record_batch(assignments=exp.assignments[::-1], outcomes=exp.outcomes[::-1])
        for rec in exp.outcomes[:50]:
            store.record_outcome(rec)
        assert store.variant_stats("cat61-v1") == first
        assert store.version() == version


def test_first_exposure_wins_whatever_the_arrival_order(store) -> None:
    store.record_assignment(_assignment("a2", "c1", "treatment", START_MS + 500, pre=9))
    store.record_assignment(_assignment("a1", "c1", "control", START_MS + 100, pre=2))
    store.record_outcome(_outcome("o1", "c1", START_MS + 600, 12.34))
    store.record_outcome(_outcome("o0", "c1", START_MS + 50, 99.0))  # before first exposure: ignored
    customers = store.customers("e1")
    assert customers == [
        {
            "experiment_id": "e1",
            "customer_id": "c1",
            "variant": "control",
            "first_exposure_ts": START_MS + 100,
            "converted": True,
            "revenue": 12.34,
            "pre_period_purchases": 2,
        }
    ]
    assert store.variant_stats("e1") == {"control": VariantStats.of_user(True, 12.34, 2)}


def test_as_of_filters_exposures_and_outcomes(store) -> None:
    store.record_batch(
        assignments=[
            _assignment("a1", "c1", "control", START_MS),
            _assignment("a2", "c2", "control", START_MS + DAY_MS),
        ],
        outcomes=[
            _outcome("o1", "c1", START_MS + 10, 5.0),
            _outcome("o2", "c1", START_MS + DAY_MS + 10, 7.0),
        ],
    )
    day1 = store.variant_stats("e1", as_of=START_MS + DAY_MS - 1)["control"]
    assert (day1.users, day1.conversions, day1.revenue_cents_sum) == (1, 1, 500)
    full = store.variant_stats("e1")["control"]
    assert (full.users, full.conversions, full.revenue_cents_sum, full.revenue_cents_sum_sq) == (
        2,
        1,
        1200,
        1200**2,
    )
    assert to_epoch_ms("2026-01-01") == START_MS + DAY_MS - 1
    assert to_epoch_ms("2026-01-01T00:00:00Z") == START_MS


def test_daily_stats_are_cumulative_and_end_at_the_snapshot(tmp_path) -> None:
    exp = make_experiment(n_customers=2_000, seed=5, days=7)
    fill_store(tmp_path / "r.duckdb", exp)
    with ResultsStore(tmp_path / "r.duckdb") as store:
        series = store.daily_stats("cat61-v1")
        assert series[-1][1] == store.variant_stats("cat61-v1")
        for day, snapshot in series:
            assert snapshot == store.variant_stats("cat61-v1", as_of=day)
        users = [s["control"].users for _, s in series]
        assert users == sorted(users) and users[0] > 0


def test_experiment_keeps_highest_version_and_funnel(store) -> None:
    store.record_experiment(json.dumps(definition_dict("e1", version=2)))
    store.record_experiment(json.dumps(definition_dict("e1", version=1, status="draft")))
    stored = store.experiment("e1")
    assert stored is not None and (stored.version, stored.status) == (2, "running")
    store.record_batch(assignments=[_assignment("a1", "c1", "control", START_MS)])
    assert store.variant_stats("e1") == {
        "control": VariantStats.of_user(False, 0, 0),
        "treatment": VariantStats(),
    }
    assert store.funnel("e1")["control"] == {
        "decisions": 1,
        "customers": 1,
        "scored": 0,
        "shown": 0,
        "converted": 0,
    }


def test_dead_letters_idempotent_and_bad_records_raise(store) -> None:
    dl = {
        "source_topic": "sessions",
        "partition": 0,
        "offset": 7,
        "raw": "{",
        "raw_encoding": "utf-8",
        "error": "invalid JSON",
    }
    store.record_dead_letter(dl)
    store.record_dead_letter(dl)
    assert store.dead_letter_counts() == {"sessions": 1}
    with pytest.raises(DataValidationError, match="lacks required field"):
        store.record_assignment({"event_id": "x"})
    with pytest.raises(DataValidationError, match="pre_period_purchases"):
        store.record_assignment(_assignment("a9", "c9", "control", START_MS, pre=-1))


def test_batch_writes_thousands_per_second(store) -> None:
    records = [_assignment(f"a{i}", f"c{i}", "control" if i % 2 else "treatment", START_MS + i) for i in range(20_000)]
    started = time.perf_counter()
    for k in range(0, len(records), 2_000):
        store.record_batch(assignments=records[k : k + 2_000])
    rate = len(records) / (time.perf_counter() - started)
    assert rate > 5_000, rate
    assert sum(s.users for s in store.variant_stats("e1").values()) == 20_000


def test_definitions_come_back_typed_whether_written_before_or_after_the_control_field(store) -> None:
    legacy = definition_dict("old-v1", variants=(("baseline", 0.5), ("new", 0.5)))  # no "control": the first arm
    assert "control" not in legacy
    modern = ExperimentDefinition.from_dict({**definition_dict("new-v1"), "control": "control"})
    store.record_batch(experiments=[json.dumps(legacy), modern.to_json()])

    old = store.experiment("old-v1")
    assert isinstance(old, ExperimentDefinition)
    assert old == ExperimentDefinition.from_dict(legacy)  # the definition's own parser decides, nothing else
    assert (old.control, old.treatments, old.planned_sample_size) == ("baseline", ("new",), 20_000)
    assert store.experiment("new-v1") == modern
    assert store.experiments() == [modern, old]  # sorted by id
    assert store.experiment("nope") is None
    assert list(store.variant_stats("old-v1")) == ["baseline", "new"]  # declared arms, zero-filled


def test_regression_a_definition_the_parser_refuses_is_refused_by_the_store_with_its_reason(store) -> None:
    """Regression: the store kept any JSON with an id and an int version, so a definition the parser (and the job)
    refuses replaced the experiment's valid one and hid it from every report. Now it is refused like any bad record
    and the stored definition stays."""
    good = definition_dict("exp-v1")
    store.record_experiment(json.dumps(good))
    broken = {**definition_dict("exp-v1", version=2), "traffic": 7}
    with pytest.raises(DataValidationError, match=r"'exp-v1'.*version 2.*definition parser refuses it.*traffic"):
        store.record_experiment(json.dumps(broken))
    with pytest.raises(DataValidationError, match=r"definition parser refuses it"):
        store.record_batch(experiments=[json.dumps({"id": "x", "version": 1})])
    assert store.experiment_ids() == ["exp-v1"]
    assert store.experiment("exp-v1") == ExperimentDefinition.from_dict(good)
    assert store.definition_json("exp-v1") == json.dumps(good)


def test_a_stored_definition_the_parser_refuses_is_named_not_fatal(store) -> None:
    """A store written before definitions were checked may hold one the parser refuses; readers must survive it."""
    broken = {**definition_dict("bad-v1"), "traffic": 7}
    store.record_batch(
        experiments=[json.dumps(definition_dict("good-v1"))],
        assignments=[_assignment("a1", "c1", "control", START_MS, exp="bad-v1")],
    )
    store.con.execute("INSERT INTO experiments VALUES ('bad-v1', 1, NULL, ?)", [json.dumps(broken)])  # as of old
    assert store.experiment_ids() == ["bad-v1", "good-v1"]
    assert [d.id for d in store.experiments()] == ["good-v1"]
    with pytest.raises(ExperimentError, match=r"definition of experiment 'bad-v1' .* is not valid.*traffic"):
        store.experiment("bad-v1")
    assert store.definition_json("bad-v1") == json.dumps(broken)
    assert list(store.variant_stats("bad-v1")) == ["control"]  # the data stays readable


@pytest.mark.parametrize("derive", [False, True])
def test_regression_pre_period_purchases_above_3e9_square_exactly(tmp_path, derive: bool) -> None:
    """Regression: Σx² and Σx·r were summed as BIGINT, which overflows once x exceeds ~3.04e9 (x² > 2**63).
    They are HUGEINT sums now and equal the exact Python-int sufficient statistics, up to the largest count the
    store accepts (2**53); a larger one is refused with its reason rather than overflowing."""
    big = [3_037_000_500, 4_000_000_000, 2**40, 2**53]
    path = tmp_path / "r.duckdb"
    with ResultsStore(path) as store:
        store.record_experiment(json.dumps(definition_dict("e1")))
        store.record_batch(
            assignments=[_assignment(f"a{i}", f"c{i}", "control", START_MS + i, pre=x) for i, x in enumerate(big)],
            outcomes=[_outcome("o1", "c3", START_MS + DAY_MS, 12.34), _outcome("o2", "c1", START_MS + 5, 0.01)],
        )
        with pytest.raises(
            DataValidationError, match=r"pre_period_purchases must be an int in \[0, 9007199254740992\]"
        ):
            store.record_assignment(_assignment("too-big", "c9", "control", START_MS, pre=2**53 + 1))
    expected = VariantStats.of_users([False, True, False, True], [0.0, 0.01, 0.0, 12.34], big)
    with ResultsStore(path, read_only=True, derive_first_exposures=derive) as store:
        assert store.variant_stats("e1")["control"] == expected
        assert store.daily_stats("e1")[-1][1]["control"] == expected
        assert [c["pre_period_purchases"] for c in store.customers("e1")] == big
