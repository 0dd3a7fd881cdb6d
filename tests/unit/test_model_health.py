"""An experiment whose model the job refuses is visible where users look: store, reports, dashboard, `experiment show`.

The job's side (one `experiment-health` record per task and model version, no arm assigned) is checked here on the
function itself without Flink, and end to end in tests/integration/test_model_health_job.py.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from experiment.cli.main import app as cli_app
from experiment.core import events
from experiment.core.definition import ExperimentDefinition
from experiment.core.errors import DataValidationError
from experiment.results.report import build_report, print_summary, render
from experiment.results.store import ModelHealth, ResultsStore
from tests.helpers.fill_store import START_MS, definition_dict, fill_store
from tests.helpers.null_metrics import NullMetricGroup

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
MODEL = "0" * 64  # the model_version of `definition_dict`
REASON = "PMML models/model.pmml has sha256 1234, but the experiment names model_version 0000: refusing to score"


def _health(status: events.HealthStatus = "model_unusable", ts: int = START_MS, **changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "experiment_id": "cat61-v1",
        "experiment_version": 1,
        "model_version": MODEL,
        "status": status,
        "reason": REASON if status == "model_unusable" else None,
        "ts": ts,
    }
    return events.experiment_health_record(**(fields | changes))


@pytest.fixture(scope="module")
def broken_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with a healthy experiment (cat61-v1, refused model) and one whose old model was refused (ok-v1)."""
    path = tmp_path_factory.mktemp("health") / "results.duckdb"
    fill_store(path, n_customers=2_000, seed=3)
    fill_store(path, n_customers=500, seed=4, definition=definition_dict("ok-v1"))
    with ResultsStore(path) as store:
        store.record_batch(
            health=[
                _health(),
                _health(experiment_id="ok-v1", model_version="f" * 64),  # a replaced model: history
                _health("model_ready", experiment_id="ok-v1"),
            ]
        )
    return path


def test_the_builder_writes_the_documented_record() -> None:
    record = _health()
    assert record == {
        "experiment_id": "cat61-v1",
        "experiment_version": 1,
        "model_version": MODEL,
        "status": "model_unusable",
        "reason": REASON,
        "ts": START_MS,
    }
    assert json.loads(events.to_json(record)) == record
    assert _health("model_ready")["reason"] is None
    assert set(events.HEALTH_STATUSES) == {"model_unusable", "model_ready"}


def test_store_keeps_the_newest_record_per_model_and_replays_change_nothing(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "r.duckdb") as store:
        assert store.model_health("cat61-v1") == []
        empty = store.version()
        batch = [_health(ts=START_MS + 5), _health(ts=START_MS + 1), _health("model_ready", model_version="1" * 64)]
        store.record_batch(health=batch)
        rows = store.model_health("cat61-v1")
        version = store.version()
        assert version > empty
        assert [(h.model_version, h.status, h.ts) for h in rows] == [
            (MODEL, "model_unusable", START_MS + 5),
            ("1" * 64, "model_ready", START_MS),
        ]
        for _ in range(2):  # the collector rereading the topic: same rows, same version
            store.record_batch(health=batch[::-1])
            store.record_health(batch[0])
        assert store.model_health("cat61-v1") == rows
        assert store.version() == version
        assert store.unusable_model("cat61-v1", MODEL) == rows[0]
        assert store.unusable_model("cat61-v1", "1" * 64) is None
        assert store.unusable_model("other", MODEL) is None

        store.record_health(_health("model_ready", ts=START_MS + 9))  # the model was repaired
        assert store.unusable_model("cat61-v1", MODEL) is None
        assert store.version() > version  # the dashboard's cache key moves with the status
        store.record_health(_health(ts=START_MS + 6))  # an older record arriving late changes nothing
        assert store.model_health("cat61-v1")[0].status == "model_ready"

        with pytest.raises(DataValidationError, match="status must be one of"):
            store.record_health(_health(status="exploded"))  # type: ignore[arg-type]
        with pytest.raises(DataValidationError, match="lacks required field"):
            store.record_health({**_health(), "model_version": None})


def test_a_store_written_before_model_health_reads_as_healthy(tmp_path: Path) -> None:
    import duckdb

    path = tmp_path / "old.duckdb"
    fill_store(path, n_customers=200, seed=1)
    con = duckdb.connect(str(path))
    con.execute("DROP TABLE experiment_health")
    con.close()
    with ResultsStore(path, read_only=True) as store:
        assert store.model_health("cat61-v1") == []
        assert store.version() > 0
        assert build_report(store, "cat61-v1").model_unusable is None


def test_every_report_format_and_the_summary_say_the_model_is_unusable(broken_store: Path) -> None:
    with ResultsStore(broken_store, read_only=True) as store:
        model = build_report(store, "cat61-v1")
        healthy = build_report(store, "ok-v1")
    health = ModelHealth(**_health())
    assert health.unusable and not replace(health, status="model_ready").unusable
    assert replace(health, reason=None).headline().startswith("MODEL UNUSABLE in the job: no reason given (model")
    headline = health.headline()
    assert headline == f"MODEL UNUSABLE in the job: {REASON} (model {MODEL}): the experiment assigns nobody"
    notice = model.model_unusable
    assert notice is not None and notice.message == headline
    assert notice.health.reason == REASON
    assert notice.ts_iso == "2026-01-01T00:00:00Z"
    assert healthy.model_unusable is None  # ready now; the refused model is not the current one

    md = render(model, "md")
    assert md.splitlines()[2] == f"> **{headline}** (reported by the job at 2026-01-01T00:00:00Z)"
    assert "MODEL UNUSABLE" not in render(healthy, "md")
    page = render(model, "html")
    assert "<div class='model-unusable'><p>MODEL UNUSABLE in the job: PMML models/model.pmml" in page
    assert page.index("model-unusable'>") < page.index("Verdict:")
    assert "class='model-unusable'" not in render(healthy, "html")
    assert json.loads(render(model, "json"))["model_unusable"]["status"] == "model_unusable"
    assert json.loads(render(healthy, "json"))["model_unusable"] is None

    console = Console(record=True, width=400)
    print_summary(console, model)
    assert console.export_text().splitlines()[0] == headline
    console = Console(record=True, width=400)
    print_summary(console, healthy)
    assert "MODEL UNUSABLE" not in console.export_text()


def test_abflow_report_prints_the_line(broken_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.md"
    result = CliRunner().invoke(cli_app, ["report", "cat61-v1", "--store", str(broken_store), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "MODEL UNUSABLE in the job: PMML models/model.pmml has sha256 1234" in result.output
    assert "MODEL UNUSABLE in the job" in out.read_text()


def _app(monkeypatch: pytest.MonkeyPatch, store: Path) -> AppTest:
    monkeypatch.setenv("ABFLOW_STORE", str(store))
    monkeypatch.setenv("ABFLOW_DASHBOARD_REFRESH", "0")
    monkeypatch.setenv("ABFLOW_DASHBOARD_EXPORT_DIR", str(store.parent / "exports"))
    monkeypatch.delenv("ABFLOW_CONFIG", raising=False)
    return AppTest.from_file(str(APP), default_timeout=60)


def test_dashboard_shows_a_red_banner_only_on_the_refused_experiment(
    monkeypatch: pytest.MonkeyPatch, broken_store: Path
) -> None:
    at = _app(monkeypatch, broken_store)
    at.query_params["experiment"] = "cat61-v1"
    at.run()
    assert not at.exception
    banners = [e.value for e in at.error]
    assert len(banners) == 1, banners
    assert banners[0].startswith(r"**MODEL UNUSABLE in the job\: PMML models/model\.pmml has sha256 1234")
    assert f"(model {MODEL})" in banners[0].replace("\\", "")
    assert "Reported by the job at 2026-01-01 00:00 UTC" in banners[0]

    at = _app(monkeypatch, broken_store)
    at.query_params["experiment"] = "ok-v1"
    at.run()
    assert not at.exception
    assert not at.error


class _Show:
    """`abflow experiment show` without Kafka: the definition comes from a stand-in for the control plane."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, definition: dict[str, Any]) -> None:
        from experiment.kafka import control_plane

        self.definition = ExperimentDefinition.from_json(json.dumps(definition))
        monkeypatch.setattr(control_plane, "get", lambda kafka, experiment_id: self.definition)

    def __call__(self, *args: str) -> Any:
        return CliRunner().invoke(cli_app, ["experiment", "show", self.definition.id, *args])


def test_experiment_show_names_the_refused_model_on_stderr(
    monkeypatch: pytest.MonkeyPatch, broken_store: Path, tmp_path: Path
) -> None:
    show = _Show(monkeypatch, definition_dict("cat61-v1"))
    result = show("--store", str(broken_store))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["id"] == "cat61-v1"  # stdout stays pipeable JSON
    assert result.stderr.strip() == (
        f"MODEL UNUSABLE in the job: {REASON} (model {MODEL}): the experiment assigns nobody"
    )

    newer_model = definition_dict("cat61-v1")
    newer_model["model"] = {**newer_model["model"], "model_version": "e" * 64}
    show = _Show(monkeypatch, newer_model)
    assert show("--store", str(broken_store)).stderr == ""  # the refusal was about another model version
    show = _Show(monkeypatch, definition_dict("ok-v1"))
    assert show("--store", str(broken_store)).stderr == ""
    missing = show("--store", str(tmp_path / "none.duckdb"))  # no collector run yet: nothing to say
    assert missing.exit_code == 0 and missing.stderr == ""


def test_the_job_writes_one_health_record_per_model_and_assigns_nobody_with_a_refused_model(tmp_path: Path) -> None:
    from experiment.core.decisions import CustomerState
    from experiment.core.view import parse_definition
    from flink_pipeline.functions import DecideFunction, Topics, _Metrics

    topics = Topics(*(f"p.{name}" for name in ("s", "o", "e", "a", "ao", "dl", "health")))
    features = ("age", "man", "woman")
    function = DecideFunction(
        topics,
        feature_names=features,
        max_bytes=4_096,
        hold_ms=1_000,
        state_ttl_ms=1_000,
        reference_rows=None,
        scorer_fallback=False,
    )
    function._metrics = _Metrics(NullMetricGroup())
    function._views_loaded = True
    broken = definition_dict("broken-v1")
    broken["model"] = {**broken["model"], "pmml_path": str(tmp_path / "missing.pmml")}
    healthy = definition_dict("healthy-v1")
    healthy["model"] = {**healthy["model"], "model_version": "a" * 64}
    for definition in (broken, healthy):
        view = parse_definition(json.dumps(definition))
        function._views[view.id] = view
    healthy_view = function._views["healthy-v1"]

    class _Scorer:
        def score_one(self, features: dict[str, float]) -> float:
            return 0.9

    function._scorers[(healthy_view.model_version, healthy_view.pmml_path)] = _Scorer()
    customers: dict[str, CustomerState] = {}
    function._load = lambda customer_id: customers.setdefault(customer_id, CustomerState())  # type: ignore[method-assign]
    function._save = lambda customer_id, customer: None  # type: ignore[method-assign]
    rows = []
    for i in range(20):
        session = events.Session(f"s{i}", f"c{i}", START_MS + i, dict.fromkeys(features, 0.0))
        rows += list(function._on_session(session))
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_topic.setdefault(row[0], []).append({"key": row[1], **json.loads(row[2])})
    assert not any(a["experiment_id"] == "broken-v1" for a in by_topic["p.a"])
    assert len(by_topic["p.a"]) == 20
    health = sorted(by_topic["p.health"], key=lambda r: r["experiment_id"])
    assert [(h["key"], h["experiment_id"], h["status"]) for h in health] == [
        ("broken-v1", "broken-v1", "model_unusable"),
        ("healthy-v1", "healthy-v1", "model_ready"),
    ]
    assert "does not exist" in health[0]["reason"] and health[0]["model_version"] == MODEL
    assert health[1]["reason"] is None
    assert set(health[0]) - {"key"} == set(_health())  # the builder's fields, nothing else

    function._health_reported = set()  # what open() does after a restart: report again, once
    session = events.Session("again", "c0", START_MS, dict.fromkeys(features, 0.0))
    again = [row for row in function._on_session(session) if row[0] == "p.health"]
    assert len(again) == 2


def test_a_refused_challenger_model_is_reported_like_a_refused_experiment_model(tmp_path: Path) -> None:
    """With a model per arm, any arm's refused model is the experiment's problem: the job then assigns nobody."""
    from tests.helpers.arms_segments import CHALLENGER, CHAMPION, three_arm_definition

    path = tmp_path / "results.duckdb"
    fill_store(path, n_customers=300, seed=5, definition=three_arm_definition("arms-v1"))
    with ResultsStore(path) as store:
        assert build_report(store, "arms-v1").model_unusable is None
        store.record_batch(
            health=[
                _health("model_ready", experiment_id="arms-v1", model_version=CHAMPION),
                _health(experiment_id="arms-v1", model_version=CHALLENGER),
            ]
        )
        notice = build_report(store, "arms-v1").model_unusable
        assert notice is not None and CHALLENGER in notice.message
        store.record_batch(
            health=[_health("model_ready", experiment_id="arms-v1", model_version=CHALLENGER, ts=START_MS + 1)]
        )
        assert build_report(store, "arms-v1").model_unusable is None  # repaired
