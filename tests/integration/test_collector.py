"""The collector against the real broker: read_committed, idempotent, restartable, stops when caught up.

Records are produced here in the topics' schemas (built by `experiment.core.events`), the job's output side written
the way the job writes it: inside Kafka transactions, one of them aborted.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from experiment.cli.main import app
from experiment.core import events
from experiment.kafka.clients import make_producer
from experiment.results.collector import Collector, collect
from experiment.results.store import ResultsStore

pytestmark = [pytest.mark.kafka]

EXP = "cat61-it"
T0 = 1_760_000_000_000


def _definition(version: int) -> dict:
    return {
        "id": EXP,
        "name": "it",
        "hypothesis": "h",
        "owner": "o",
        "category": "cat61",
        "model": {"pmml_path": "m.pmml", "model_version": "0" * 64, "features": ["age"]},
        "threshold": 0.5,
        "salt": EXP,
        "traffic": 1.0,
        "variants": [{"name": "control", "weight": 0.5}, {"name": "treatment", "weight": 0.5}],
        "primary_metric": "conversion",
        "secondary_metrics": [],
        "guardrail_metrics": [],
        "attribution_window_s": 604800,
        "planned_sample_size": None,
        "mde": None,
        "status": "running",
        "version": version,
        "created_ts": T0,
        "updated_ts": T0 + version,
    }


def _assignment(i: int, variant: str) -> dict:
    return events.assignment_record(
        event_id=f"s-{i}",
        experiment_id=EXP,
        experiment_version=1,
        customer_id=f"c{i}",
        variant=variant,
        score=None if variant == "control" else 0.7,
        decision="hide" if variant == "control" else "show",
        model_version=None if variant == "control" else "0" * 64,
        first_exposure=True,
        event_ts=T0 + i,
        decided_ts=T0 + i + 5,
        pre_period_purchases=i % 4,
    )


def _outcome(i: int, variant: str) -> dict:
    outcome = events.Outcome(
        event_id=f"o-{i}", customer_id=f"c{i}", ts=T0 + i + 1000, type="purchase", category="cat2", revenue=12.5
    )
    return events.attributed_outcome_record(
        experiment_id=EXP, customer_id=f"c{i}", variant=variant, outcome=outcome, exposure_ts=T0 + i
    )


def _produce(kafka, *, customers: range, abort: range | None = None, dead: int = 0, versions=(1, 2)) -> None:
    """Committed transactions for `customers` (+ an aborted one for `abort`), dead letters and definitions."""
    producer = make_producer(kafka, transactional_id=f"{kafka.topic_prefix}tx", enable_idempotence=True)
    producer.init_transactions()
    a, o, d = kafka.topic("assignments"), kafka.topic("attributed-outcomes"), kafka.topic("dead-letter")
    producer.begin_transaction()
    for i in customers:
        variant = "control" if i % 2 else "treatment"
        producer.send(a, key=f"c{i}".encode(), value=events.to_json(_assignment(i, variant)).encode())
        if i % 3 == 0:
            producer.send(o, key=f"c{i}".encode(), value=events.to_json(_outcome(i, variant)).encode())
    for j in range(dead):
        record = events.dead_letter_record(
            source_topic=kafka.topic("sessions"),
            partition=0,
            offset=j,
            raw=b"\xff\xfe" if j % 2 else b"{oops",
            error=f"reason {j}",
        )
        producer.send(d, key=f"k{j}".encode(), value=events.to_json(record).encode())
    producer.commit_transaction()
    if abort is not None:
        producer.begin_transaction()
        for i in abort:
            producer.send(a, key=f"c{i}".encode(), value=events.to_json(_assignment(i, "control")).encode())
        producer.flush()
        producer.abort_transaction()
    producer.close()
    plain = make_producer(kafka)
    for version in versions:
        plain.send(kafka.topic("experiments"), key=EXP.encode(), value=json.dumps(_definition(version)).encode())
    plain.send(kafka.topic("experiments"), key=b"gone", value=None)  # a tombstone: skipped, never fatal
    plain.flush()
    plain.close()


def test_collects_committed_records_once_and_resumes_after_restart(abflow_settings, tmp_path) -> None:
    kafka = abflow_settings.kafka
    _produce(kafka, customers=range(0, 300), abort=range(1000, 1050), dead=7)
    store_path = tmp_path / "results.duckdb"

    stats = collect(abflow_settings, str(store_path))
    assert stats.caught_up
    assert (stats.assignments, stats.outcomes, stats.dead_letters, stats.experiments) == (300, 100, 7, 2)
    assert stats.skipped == 1  # the tombstone

    with ResultsStore(store_path, read_only=True) as store:
        assert store.con.execute("SELECT count(*) FROM assignments").fetchone()[0] == 300
        aborted = store.con.execute(
            "SELECT count(*) FROM assignments WHERE customer_id >= 'c1000' AND length(customer_id) = 5"
        ).fetchone()[0]
        assert aborted == 0, "records of an aborted transaction were stored"
        sizes = {v: s.users for v, s in store.variant_stats(EXP).items()}
        assert sizes == {"control": 150, "treatment": 150}
        conversions = sum(s.conversions for s in store.variant_stats(EXP).values())
        assert conversions == 100
        assert store.dead_letter_counts() == {kafka.topic("sessions"): 7}
        stored = store.experiment(EXP)
        assert stored is not None and stored.version == 2

    # Restart: committed offsets mean nothing is read again ...
    again = collect(abflow_settings, str(store_path))
    assert again.caught_up and again.records == 0
    # ... new records are picked up ...
    _produce(kafka, customers=range(300, 320), versions=(3,))
    more = collect(abflow_settings, str(store_path))
    assert (more.assignments, more.experiments) == (20, 1)
    # ... and rereading everything (a replay) changes nothing: idempotent by event id.
    replay = collect(abflow_settings, str(store_path), from_beginning=True)
    assert replay.assignments == 320
    with ResultsStore(store_path, read_only=True) as store:
        assert store.con.execute("SELECT count(*) FROM assignments").fetchone()[0] == 320
        assert store.con.execute("SELECT count(*) FROM outcomes").fetchone()[0] == 107
        assert store.con.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 7
        stored = store.experiment(EXP)
        assert stored is not None and stored.version == 3


def test_a_new_store_rereads_from_the_beginning(abflow_settings, tmp_path) -> None:
    _produce(abflow_settings.kafka, customers=range(0, 40))
    first = collect(abflow_settings, str(tmp_path / "a.duckdb"))
    assert first.assignments == 40
    # Same consumer group, but an empty store: committed offsets are ignored.
    second = collect(abflow_settings, str(tmp_path / "b.duckdb"))
    assert second.assignments == 40


def test_until_stops_when_the_condition_holds_and_leaves_the_store_free(abflow_settings, tmp_path) -> None:
    _produce(abflow_settings.kafka, customers=range(0, 100))
    store_path = tmp_path / "results.duckdb"

    def all_there(store: ResultsStore, _stats) -> bool:
        # Readers can open the store between batches: the collector never holds it while polling.
        return store.con.execute("SELECT count(*) FROM assignments").fetchone()[0] >= 100

    with Collector(abflow_settings, store_path, max_poll_records=10) as collector:
        stats = collector.run(until=all_there, timeout_s=60)
        with ResultsStore(store_path, read_only=True) as reader:  # not locked while the collector is idle
            assert reader.con.execute("SELECT count(*) FROM assignments").fetchone()[0] == 100
    assert stats.assignments == 100 and stats.batches >= 10


def test_cli_collect_reports_counts(abflow_settings, tmp_path, monkeypatch) -> None:
    kafka = abflow_settings.kafka
    _produce(kafka, customers=range(0, 30), dead=2)
    monkeypatch.setenv("ABFLOW_KAFKA_BOOTSTRAP", kafka.bootstrap_servers)
    monkeypatch.setenv("ABFLOW_KAFKA_TOPIC_PREFIX", kafka.topic_prefix)
    store_path = tmp_path / "cli.duckdb"
    result = CliRunner().invoke(app, ["collect", "--store", str(store_path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert (data["assignments"], data["outcomes"], data["dead_letters"], data["caught_up"]) == (30, 10, 2, True)


def test_experiment_health_is_collected_and_a_replay_keeps_the_newest_word(abflow_settings, tmp_path) -> None:
    kafka = abflow_settings.kafka
    _produce(kafka, customers=range(0, 10), versions=(1,))
    producer = make_producer(kafka, transactional_id=f"{kafka.topic_prefix}tx-health", enable_idempotence=True)
    producer.init_transactions()
    producer.begin_transaction()
    for ts, status, reason in ((T0 + 1, "model_unusable", "PMML m.pmml has sha256 1"), (T0, "model_ready", None)):
        record = events.experiment_health_record(
            experiment_id=EXP, experiment_version=1, model_version="0" * 64, status=status, reason=reason, ts=ts
        )  # the second one is older: it must not replace the first
        producer.send(kafka.topic("experiment-health"), key=EXP.encode(), value=events.to_json(record).encode())
    producer.commit_transaction()
    producer.close()
    store_path = tmp_path / "results.duckdb"

    stats = collect(abflow_settings, str(store_path))
    assert stats.health == 2
    replay = collect(abflow_settings, str(store_path), from_beginning=True)
    assert replay.health == 2
    with ResultsStore(store_path, read_only=True) as store:
        unusable = store.unusable_model(EXP, "0" * 64)
        assert unusable is not None and unusable.reason == "PMML m.pmml has sha256 1" and unusable.ts == T0 + 1
        assert len(store.model_health(EXP)) == 1
