"""Reports: byte-identical JSON, the verdict on known truths, every format written from one typed report."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import html
import io
import json
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from experiment.cli.main import app
from experiment.core import events
from experiment.core.definition import ExperimentDefinition
from experiment.results.report import Report, build_report, print_summary, render, render_csv, render_json
from experiment.results.store import ResultsStore
from experiment.stats.analysis import AnalysisConfig, analyse
from experiment.stats.proportions import compare_proportions
from experiment.stats.sequential import DEFAULT_TUNING_USERS, compare_sequential
from experiment.stats.sufficient import VariantStats as V
from tests.helpers.fill_store import START_MS, definition_dict, fill_store, make_experiment


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "r.duckdb"
    exp = fill_store(path, n_customers=30_000, true_rel_lift=0.25, seed=21)
    return path, exp


def test_json_is_byte_identical_and_as_of_changes_it(filled, tmp_path) -> None:
    path, _ = filled
    runner = CliRunner()
    outs = []
    for i in range(2):
        out = tmp_path / f"r{i}.json"
        result = runner.invoke(
            app,
            [
                "report",
                "cat61-v1",
                "--format",
                "json",
                "--out",
                str(out),
                "--store",
                str(path),
                "--as-of",
                "2026-01-08",
            ],
        )
        assert result.exit_code == 0, result.output
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    with ResultsStore(path, read_only=True) as store:
        later = render_json(build_report(store, "cat61-v1"))
    assert later.encode() != outs[0]
    model = json.loads(outs[0])
    assert model["as_of_iso"] == "2026-01-08T23:59:59.999000Z"
    assert model["sample_size"]["total"] < 30_000


def test_verdict_ships_a_real_lift(filled) -> None:
    path, exp = filled
    with ResultsStore(path, read_only=True) as store:
        model = build_report(store, "cat61-v1")
    assert model.verdict.decision == "ship" and model.verdict.arm == "treatment"
    assert model.sample_size.users == {k: v.users for k, v in exp.expected_stats.items()}
    primary = model.analysis.result("treatment", "conversion")
    assert primary.fixed_horizon.rel_ci is not None and primary.fixed_horizon.rel_ci.contains(0.25)
    assert primary.cuped.variance_reduction is not None and primary.cuped.variance_reduction > 0.05
    assert primary.bayes is not None and primary.bayes.prob_treatment_beats_control is not None
    assert primary.bayes.prob_treatment_beats_control > 0.99
    assert model.lift_over_time[-1].rel_lift == pytest.approx(primary.fixed_horizon.rel_lift)


def _cfg(**kw):
    return AnalysisConfig.from_definition(ExperimentDefinition.from_dict(definition_dict(**kw)))


def test_verdict_keep_running_and_dont_ship() -> None:
    small = {"control": V.from_counts(1_000, 100), "treatment": V.from_counts(1_000, 104)}
    assert analyse(_cfg(planned_sample_size=20_000), small).verdict.decision == "keep_running"
    assert analyse(_cfg(planned_sample_size=None, mde=None), small).verdict.codes == ("no_plan",)
    flat = {"control": V.from_counts(15_000, 1_500), "treatment": V.from_counts(15_000, 1_510)}
    v = analyse(_cfg(planned_sample_size=20_000), flat).verdict
    assert v.decision == "dont_ship" and v.codes == ("no_significant_effect_at_planned_size",)
    worse = {"control": V.from_counts(15_000, 1_500), "treatment": V.from_counts(15_000, 1_200)}
    assert analyse(_cfg(), worse).verdict.codes == ("significant_regression",)
    srm = {"control": V.from_counts(15_000, 1_500), "treatment": V.from_counts(13_000, 1_800)}
    assert analyse(_cfg(), srm).verdict.codes == ("sample_ratio_mismatch",)


def test_multi_arm_analysis_compares_each_arm_with_control() -> None:
    cfg = _cfg(variants=(("control", 0.4), ("a", 0.3), ("b", 0.3)))
    stats = {
        "control": V.from_counts(8_000, 800),
        "a": V.from_counts(6_000, 600),
        "b": V.from_counts(6_000, 780),
    }
    result = analyse(cfg, stats)
    assert {r.arm for r in result.results} == {"a", "b"}
    assert result.verdict.decision == "ship" and result.verdict.arm == "b"
    holm = result.result("b", "conversion").p_value_holm
    assert holm >= result.result("b", "conversion").fixed_horizon.p_value


def test_every_format_is_written(filled, tmp_path) -> None:
    path, _ = filled
    runner = CliRunner()
    for fmt in ("md", "html", "json", "csv"):
        out = tmp_path / f"report.{fmt}"
        result = runner.invoke(app, ["report", "cat61-v1", "--format", fmt, "--out", str(out), "--store", str(path)])
        assert result.exit_code == 0, result.output
        assert "ship treatment" in result.output
        text = out.read_text()
        if fmt == "html":
            assert "lift-over-time" in text and "Plotly.newPlot" in text and "<script src=" not in text
        if fmt == "csv":
            rows = list(csv.DictReader(io.StringIO(text)))
            assert {r["analysis"] for r in rows} == {"fixed_horizon", "sequential", "cuped"}
        if fmt == "md":
            assert "Verdict: SHIP" in text and "sequential (always valid)" in text


def test_report_errors_are_one_line(filled, tmp_path) -> None:
    path, _ = filled
    result = CliRunner().invoke(app, ["report", "nope", "--store", str(path), "--out", str(tmp_path / "x.md")])
    assert result.exit_code == 2 and "experiment 'nope' is not in the results store" in result.output
    result = CliRunner().invoke(app, ["report", "cat61-v1", "--store", str(path), "--format", "pdf"])
    assert result.exit_code == 2 and "--format must be one of" in result.output
    with pytest.raises(Exception, match="format"):
        render({}, "pdf")


def test_report_with_no_data_yet(tmp_path) -> None:
    exp = make_experiment(n_customers=10)
    with ResultsStore(tmp_path / "r.duckdb") as store:
        store.record_experiment(exp.definition_json)
        model = build_report(store, "cat61-v1")
    assert model.verdict.decision == "keep_running"
    assert model.sample_size.total == 0 and model.days == ()
    render_json(model)  # no NaN anywhere


def test_report_writes_under_reports_and_prints_the_summary(filled, tmp_path, monkeypatch) -> None:
    path, exp = filled
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["report", "cat61-v1", "--store", str(path)])
    assert result.exit_code == 0, result.output
    assert [p.name for p in tmp_path.iterdir()] == ["reports"]  # nothing written into the current directory
    assert "Verdict: SHIP" in (tmp_path / "reports" / "cat61-v1.md").read_text()
    out = result.output
    summary = (
        "variant",
        "revenue / user",
        "treatment vs control, conversion (primary): abs diff",
        "sample ratio mismatch: p = ",
        "verdict: SHIP Ship 'treatment'",
    )
    for expected in summary:
        assert expected in out, expected
    assert f"{exp.expected_stats['control'].users:,}" in out
    assert out.strip().splitlines()[-1] == "reports/cat61-v1.md: ship treatment"


# -- one typed report, every format ------------------------------------------------------------------------------


def _iso(ms: int | None) -> str | None:
    return None if ms is None else dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat().replace("+00:00", "Z")


def _the_dict_the_report_always_was(store: ResultsStore, experiment_id: str, as_of: int | None) -> dict[str, Any]:
    """The JSON tree as the report built it when it was a plain dict, rebuilt here from the store independently."""
    definition = json.loads(store.definition_json(experiment_id) or "null")
    parsed = ExperimentDefinition.from_dict(definition)
    config = AnalysisConfig.from_definition(parsed)
    stats = store.variant_stats(experiment_id, as_of=as_of)
    daily = store.daily_stats(experiment_id, as_of=as_of)
    analysis = analyse(config, stats, [s for _, s in daily])
    lift = []
    for arm in config.treatments:
        pairs: list[tuple[V, V]] = []
        for day, snapshot in daily:
            pair = (snapshot.get(config.control, V()), snapshot.get(arm, V()))
            pairs.append(pair)
            fixed = compare_proportions(*pair)
            tuning = analysis.planned_sample_size or DEFAULT_TUNING_USERS
            seq = compare_sequential(pairs, tuning_users=tuning, metric="conversion")
            lift.append(
                {
                    "date": day.isoformat(),
                    "arm": arm,
                    "metric": "conversion",
                    "users_control": pair[0].users,
                    "users_treatment": pair[1].users,
                    "rel_lift": fixed.rel_lift,
                    "rel_ci": fixed.to_dict()["rel_ci"],
                    "rel_ci_sequential": seq.to_dict()["rel_ci"],
                    "p_value": fixed.p_value,
                    "p_value_sequential": seq.p_value,
                }
            )
    health = store.unusable_model(experiment_id, definition["model"]["model_version"])
    target = analysis.planned_sample_size
    return {
        "report_version": 1,
        # A definition stored before `control` existed gains the key its parser gave it (its first arm).
        "experiment": {**definition, "control": parsed.control},
        "model_unusable": None
        if health is None
        else {**dataclasses.asdict(health), "ts_iso": _iso(health.ts), "message": health.headline()},
        "as_of": as_of,
        "as_of_iso": _iso(as_of),
        "data_through": _iso(store.last_event_ts(experiment_id, as_of=as_of)),
        "sample_size": {
            "users": analysis.users,
            "total": analysis.total_users,
            "planned": target,
            "planned_source": analysis.target_source,
            "progress": None if not target else analysis.total_users / target,
        },
        "variants": {
            name: {
                "users": s.users,
                "conversions": s.conversions,
                "conversion_rate": s.conversion_rate,
                "revenue": s.revenue_sum,
                "revenue_per_user": s.revenue_per_user,
            }
            for name, s in stats.items()
        },
        "analysis": analysis.to_dict(),
        "verdict": analysis.to_dict()["verdict"],
        "lift_over_time": lift,
    }


@pytest.fixture(scope="module")
def unusable(tmp_path_factory):
    """A small store whose experiment's current model the job refuses, with a name that needs escaping."""
    path = tmp_path_factory.mktemp("unusable") / "r.duckdb"
    definition = {**definition_dict(), "name": "Cat <61> & friends", "control": "control"}
    fill_store(path, make_experiment(n_customers=2_000, seed=4, definition=definition))
    with ResultsStore(path) as store:
        store.record_health(
            events.experiment_health_record(
                experiment_id="cat61-v1",
                experiment_version=1,
                model_version="0" * 64,
                status="model_unusable",
                reason="sha256 differs",
                ts=START_MS,
            )
        )
    return path


@pytest.mark.parametrize("as_of", [None, "2026-01-06"])
def test_json_is_the_dict_the_report_always_was(filled, unusable, as_of) -> None:
    for path in (filled[0], unusable):
        with ResultsStore(path, read_only=True) as store:
            report = build_report(store, "cat61-v1", as_of=as_of)
            expected = _the_dict_the_report_always_was(store, "cat61-v1", report.as_of)
        assert report.to_dict() == expected
        assert json.loads(render_json(report)) == json.loads(json.dumps(expected))
        assert (report.model_unusable is not None) == (path == unusable)


def test_a_report_is_a_frozen_value_built_from_typed_parts(unusable) -> None:
    with ResultsStore(unusable, read_only=True) as store:
        report = build_report(store, "cat61-v1")
        again = build_report(store, "cat61-v1")
    assert report == again and isinstance(report, Report)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(report, "as_of", 1)  # noqa: B010 - proving it cannot be changed
    assert isinstance(report.experiment, ExperimentDefinition) and report.experiment.id == "cat61-v1"
    assert report.verdict is report.analysis.verdict and report.srm is report.analysis.srm
    assert [v.name for v in report.variants] == ["control", "treatment"]
    assert report.model_unusable is not None and report.model_unusable.health.reason == "sha256 differs"
    assert report.days == tuple(dict.fromkeys(p.date for p in report.lift_over_time))
    assert len(report.lift_over_time) == len(report.days) * len(report.analysis.treatments)
    assert len(report.metric_rows) == 3 * len(report.results)


def test_every_format_and_the_summary_render_the_same_report(unusable) -> None:
    with ResultsStore(unusable, read_only=True) as store:
        report = build_report(store, "cat61-v1")
    md, page, text = render(report, "md"), render(report, "html"), render(report, "json")
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    console = Console(record=True, width=400)
    print_summary(console, report)
    summary = console.export_text()

    # CSV: exactly the typed rows, value for value.
    assert [r["arm"] for r in rows] == [r.arm for r in report.metric_rows]
    for line, row in zip(rows, report.metric_rows, strict=True):
        for name, value in dataclasses.asdict(row).items():
            assert line[name] == ("" if value is None else str(value)), name
    # JSON: the same numbers under the documented keys.
    tree = json.loads(text)
    assert tree["verdict"]["decision"] == report.verdict.decision
    assert tree["variants"] == {
        v.name: {k: x for k, x in dataclasses.asdict(v).items() if k != "name"} for v in report.variants
    }
    assert tree["analysis"]["srm"]["p_value"] == report.srm.p_value
    # Markdown, HTML and the terminal: the verdict, the model notice, every arm's users and the primary p-value.
    decision = report.verdict.decision.replace("_", " ").upper()
    p_value = f"{report.analysis.result('treatment', 'conversion').fixed_horizon.p_value:.3g}"
    assert f"**Verdict: {decision}**" in md and f"Verdict: {decision}" in page and f"verdict: {decision}" in summary
    assert report.model_unusable is not None
    for out in (md, html.unescape(page), summary):
        assert report.model_unusable.message in out
    assert "Cat <61> & friends" in md and "Cat &lt;61&gt; &amp; friends" in page
    for v in report.variants:
        assert f"| {v.name} | {v.users} | {v.conversions} |" in md
        assert f"<td>{v.name}</td><td>{v.users}</td><td>{v.conversions}</td>" in page
        assert f"{v.users:,}" in summary
    assert f"| {p_value} |" in md and f"<td>{p_value}</td>" in page


def test_report_command_checks_the_formats_report_renders() -> None:
    """`abflow report` checks --format before the statistics load, from its own copy of the list: the same list."""
    from experiment.cli import report_cmd
    from experiment.results.report import FORMATS

    assert report_cmd._FORMATS == FORMATS
