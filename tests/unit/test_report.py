"""Reports: byte-identical JSON, the verdict on known truths, every format written."""

from __future__ import annotations

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from experiment.cli.main import app
from experiment.results.report import build_report, render, render_json
from experiment.results.store import ResultsStore
from experiment.stats.analysis import AnalysisConfig, analyse
from experiment.stats.sufficient import VariantStats as V
from tests.helpers.fill_store import definition_dict, fill_store, make_experiment


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
    assert model["verdict"]["decision"] == "ship" and model["verdict"]["arm"] == "treatment"
    assert model["sample_size"]["users"] == {k: v.users for k, v in exp.expected_stats.items()}
    primary = next(r for r in model["analysis"]["results"] if r["metric"] == "conversion")
    assert primary["fixed_horizon"]["rel_ci"][0] < 0.25 < primary["fixed_horizon"]["rel_ci"][1]
    assert primary["cuped"]["variance_reduction"] > 0.05
    assert primary["bayes"]["prob_treatment_beats_control"] > 0.99
    assert model["lift_over_time"][-1]["rel_lift"] == pytest.approx(primary["fixed_horizon"]["rel_lift"])


def _cfg(**kw):
    return AnalysisConfig.from_definition(definition_dict(**kw))


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
    assert model["verdict"]["decision"] == "keep_running"
    assert model["sample_size"]["total"] == 0
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
