"""The dashboard, run headless with Streamlit's AppTest against real DuckDB stores filled with known experiments.

Every assertion is on a value the page shows, checked against an oracle computed from the raw synthetic
records (not from the store): users, conversions, rates, p-values, P(beat), verdicts, the SRM banner, funnel
counts and dead-letter counts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from scipy import integrate, stats
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from dashboard import loader
from dashboard.formatting import count, pct, pval
from experiment.cli.dashboard_cmd import build_command
from experiment.cli.main import app as cli_app
from experiment.core.definition import ExperimentDefinition
from experiment.results import report_model
from experiment.results.store import ResultsStore
from experiment.stats.analysis import AnalysisConfig, ExperimentAnalysis, analyse
from experiment.stats.sufficient import VariantStats
from tests.helpers.fill_store import START_MS, SyntheticExperiment, definition_dict, fill_store, make_experiment

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
TIMEOUT = 60

DEAD_LETTERS = [
    {"source_topic": "sessions", "partition": 0, "offset": k, "raw": "{bad", "raw_encoding": "utf-8", "error": "e"}
    for k in range(3)
] + [
    {"source_topic": "outcomes", "partition": 1, "offset": k, "raw": "[]", "raw_encoding": "utf-8", "error": "e"}
    for k in range(2)
]


def _without_some_treatment(exp: SyntheticExperiment, every: int) -> SyntheticExperiment:
    """Drop every `every`-th treatment customer's records: a broken logger, hence a sample-ratio mismatch."""
    treated = sorted({a["customer_id"] for a in exp.assignments if a["variant"] != "control"})
    dropped = set(treated[::every])
    return replace(
        exp,
        assignments=[a for a in exp.assignments if a["customer_id"] not in dropped],
        outcomes=[o for o in exp.outcomes if o["customer_id"] not in dropped],
        expected_stats={},
    )


def _users(exp: SyntheticExperiment) -> dict[str, int]:
    out: dict[str, int] = {}
    for a in exp.assignments:
        if a["first_exposure"]:
            out[a["variant"]] = out.get(a["variant"], 0) + 1
    return out


def _days(exp: SyntheticExperiment) -> int:
    firsts = [a["event_ts"] for a in exp.assignments if a["first_exposure"]]
    last = max([*firsts, *(o["ts"] for o in exp.outcomes)])
    return last // 86_400_000 - min(firsts) // 86_400_000 + 1


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One store, three experiments: a winner, a sample-ratio mismatch and a paused null test; 5 dead letters."""
    path = tmp_path_factory.mktemp("dash") / "results.duckdb"
    winner = fill_store(path, n_customers=20_000, seed=7)
    srm = _without_some_treatment(
        make_experiment(n_customers=4_000, seed=11, definition=definition_dict("srm-v1", planned_sample_size=4_000)),
        every=4,
    )
    fill_store(path, srm)
    paused = fill_store(
        path,
        n_customers=3_000,
        seed=5,
        true_rel_lift=0.0,
        definition=definition_dict(
            "paused-v1",
            status="paused",
            planned_sample_size=20_000,
            variants=(("control", 0.5), ("treatment", 0.25), ("treatment_b", 0.25)),
        ),
    )
    with ResultsStore(path) as store:
        store.record_batch(dead_letters=DEAD_LETTERS)
    return {"path": path, "winner": winner, "srm": srm, "paused": paused}


def _app(monkeypatch: pytest.MonkeyPatch, store: Path, export_dir: Path | None = None) -> AppTest:
    monkeypatch.setenv("ABFLOW_STORE", str(store))
    monkeypatch.setenv("ABFLOW_DASHBOARD_REFRESH", "5")
    monkeypatch.setenv("ABFLOW_DASHBOARD_EXPORT_DIR", str(export_dir or store.parent / "exports"))
    monkeypatch.delenv("ABFLOW_CONFIG", raising=False)
    return AppTest.from_file(str(APP), default_timeout=TIMEOUT)


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


_TABLE_COLUMN = {  # a column only that table has
    "experiment_table": "days running",
    "variant_table": "conversion rate",
    "lift_table": "rel CI",
    "significance_table": "p Holm",
    "funnel_table": "scored",
    "dead_letters": "topic",
}


def _frame(at: AppTest, table: str):
    return next(df.value for df in at.dataframe if _TABLE_COLUMN[table] in df.value.columns)


# -- empty state ------------------------------------------------------------------------------------------------


def test_empty_state_without_a_store_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here.duckdb"
    at = _app(monkeypatch, missing).run()
    assert not at.exception
    assert len(at.info) == 1
    text = at.info[0].value
    assert "No experiments to show" in text
    assert f"There is no results store at `{missing}` yet" in text
    assert "abflow collect" in text
    assert not at.dataframe and not at.error
    assert not missing.exists(), "the dashboard must never create the store"
    assert at.sidebar.selectbox[0].options == ["All experiments"]


def test_empty_state_with_an_empty_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "empty.duckdb"
    ResultsStore(path).open().close()
    at = _app(monkeypatch, path).run()
    assert not at.exception
    assert "has no experiments yet" in at.info[0].value
    assert not at.dataframe


# -- experiment list --------------------------------------------------------------------------------------------


def test_experiment_list_shows_every_experiment(monkeypatch: pytest.MonkeyPatch, many: dict) -> None:
    at = _app(monkeypatch, many["path"]).run()
    assert not at.exception
    winner, srm, paused = many["winner"], many["srm"], many["paused"]
    total = sum(sum(_users(e).values()) for e in (winner, srm, paused))
    assert _metrics(at) == {
        "Experiments": "3",
        "Running": "2",
        "Users in experiments": count(total),
        "Dead-lettered records": "5",
    }
    table = _frame(at, "experiment_table").set_index("experiment")
    assert list(table.index) == ["cat61-v1", "paused-v1", "srm-v1"]
    for exp_id, exp in (("cat61-v1", winner), ("paused-v1", paused), ("srm-v1", srm)):
        row = table.loc[exp_id]
        assert row["users"] == sum(_users(exp).values())
        assert row["planned"] == count(exp.definition["planned_sample_size"])
        assert row["progress"] == pytest.approx(min(1.0, row["users"] / exp.definition["planned_sample_size"]))
        assert row["days running"] == _days(exp)
        assert row["traffic"] == "100%"
        assert row["open"] == f"?experiment={exp_id}"
    assert table.loc["cat61-v1", "status"].endswith("running")
    assert table.loc["paused-v1", "status"].endswith("paused")
    assert table.loc["cat61-v1", "verdict"] == "🟢 SHIP treatment"
    assert table.loc["srm-v1", "verdict"] == "🔴 DON'T SHIP"
    assert table.loc["paused-v1", "verdict"] == "🟡 KEEP RUNNING"
    assert table.loc["srm-v1", "SRM"] == "⚠️ mismatch"
    assert table.loc["cat61-v1", "SRM"] == "ok"
    badges = [m.value for m in at.markdown if "-badge[" in m.value]
    assert len(badges) == 3
    assert any("**srm-v1**" in b and "users are not split as configured" in b for b in badges)
    assert at.sidebar.selectbox[0].options == ["All experiments", "cat61-v1", "paused-v1", "srm-v1"]


# -- experiment page --------------------------------------------------------------------------------------------


def _prob_beats(c_users: int, c_conv: int, t_users: int, t_conv: int) -> float:
    """Oracle: P(p_T > p_C) under Beta(1 + conv, 1 + users − conv) posteriors, by numerical integration."""
    post_c = stats.beta(1 + c_conv, 1 + c_users - c_conv)
    post_t = stats.beta(1 + t_conv, 1 + t_users - t_conv)
    lo, hi = post_t.ppf(1e-12), post_t.ppf(1 - 1e-12)
    value, _ = integrate.quad(lambda x: post_t.pdf(x) * post_c.cdf(x), lo, hi, limit=200)
    return value


def test_experiment_page_shows_the_numbers(monkeypatch: pytest.MonkeyPatch, many: dict) -> None:
    exp: SyntheticExperiment = many["winner"]
    at = _app(monkeypatch, many["path"]).run()
    at.sidebar.selectbox[0].set_value("cat61-v1").run()
    assert not at.exception
    assert at.title[0].value == "Show category 61 (cat61-v1)"
    assert at.query_params["experiment"] == "cat61-v1"

    # Per variant: users, conversions and rates from the raw records.
    expected = exp.expected_stats
    variants = _frame(at, "variant_table").set_index("variant")
    for name, s in expected.items():
        assert variants.loc[name, "users"] == s.users
        assert variants.loc[name, "conversions"] == s.conversions
        assert variants.loc[name, "conversion rate"] == pct(s.conversions / s.users)
    c, t = expected["control"], expected["treatment"]

    # Fixed-horizon unpooled z-test, by hand.
    pc, pt = c.conversions / c.users, t.conversions / t.users
    se = math.sqrt(pc * (1 - pc) / c.users + pt * (1 - pt) / t.users)
    p_fixed = 2 * stats.norm.sf(abs(pt - pc) / se)
    metrics = _metrics(at)
    assert float(metrics["treatment: p fixed-horizon"]) == pytest.approx(p_fixed, rel=2e-3)
    assert metrics["treatment: relative lift"] == pct(pt / pc - 1)
    assert float(metrics["treatment: P(beat control)"]) == pytest.approx(
        _prob_beats(c.users, c.conversions, t.users, t.conversions), abs=1e-3
    )
    assert metrics["Dead-lettered records"] == "5"

    significance = _frame(at, "significance_table").set_index("metric")
    assert significance.loc["conversion", "p fixed-horizon"] == metrics["treatment: p fixed-horizon"]
    assert significance.loc["conversion", "p sequential"] == metrics["treatment: p sequential"]
    assert float(metrics["treatment: p sequential"]) > float(metrics["treatment: p fixed-horizon"]), (
        "always-valid p must be more conservative"
    )
    assert significance.loc["revenue_per_user", "P(beat control)"] == "n/a"
    lift = _frame(at, "lift_table")
    fixed = lift[(lift["metric"] == "conversion") & (lift["method"] == "fixed-horizon")].iloc[0]
    z = stats.norm.ppf(0.975)
    assert fixed["abs CI"] == f"[{pct(pt - pc - z * se)}, {pct(pt - pc + z * se)}]"
    cuped = lift[(lift["metric"] == "conversion") & (lift["method"] == "CUPED")].iloc[0]
    assert cuped["abs diff"] != "n/a" and cuped["p"] != "n/a"

    # Verdict: the analysis of the raw statistics (planned size reached, so no history is needed).
    verdict = analyse(AnalysisConfig.from_definition(ExperimentDefinition.from_dict(exp.definition)), expected).verdict
    assert verdict.decision == "ship"
    assert [s.value for s in at.success] == [verdict.explanation]
    assert not at.error, "no SRM banner on a well-split experiment"
    assert at.progress[0].value == 100
    assert "20,000 of 20,000 planned users" in at.progress[0].text

    # Funnel and bad input.
    funnel = _frame(at, "funnel_table").set_index("variant")
    shown = len({a["customer_id"] for a in exp.assignments if a["decision"] == "show"})
    for name in ("control", "treatment"):
        assert funnel.loc[name, "decisions"] == sum(1 for a in exp.assignments if a["variant"] == name)
        assert funnel.loc[name, "customers"] == expected[name].users
    assert funnel.loc["control", "scored"] == 0 and funnel.loc["control", "shown"] == 0
    assert funnel.loc["treatment", "scored"] == t.users
    assert funnel.loc["treatment", "shown"] == shown
    dead = _frame(at, "dead_letters").set_index("topic")["records"].to_dict()
    assert dead == {"outcomes": 2, "sessions": 3}

    # The charts carry the same numbers.
    charts = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    forest = charts[0]
    fixed_trace = next(tr for tr in forest["data"] if tr["name"] == "fixed-horizon" and tr.get("xaxis", "x") == "x")
    assert fixed_trace["x"][0] == pytest.approx(pt - pc, rel=1e-9)
    assert fixed_trace["error_x"]["array"][0] == pytest.approx(z * se, rel=1e-6)
    histogram = next(spec for spec in charts if spec["data"][0]["type"] == "bar")
    assert sum(histogram["data"][0]["y"]) == sum(1 for a in exp.assignments if a["score"] is not None)
    funnel_chart = next(spec for spec in charts if spec["data"][0]["type"] == "funnel")
    assert funnel_chart["data"][0]["x"] == [len(exp.assignments), c.users + t.users, t.users, shown]


def test_srm_banner_when_the_split_is_broken(monkeypatch: pytest.MonkeyPatch, many: dict) -> None:
    users = _users(many["srm"])
    chi2 = stats.chisquare([users["control"], users["treatment"]])
    assert chi2.pvalue < 1e-3
    at = _app(monkeypatch, many["path"])
    at.query_params["experiment"] = "srm-v1"
    at.run()
    assert not at.exception
    assert at.title[0].value == "Show category 61 (srm-v1)"
    banners = [e.value for e in at.error]
    assert len(banners) == 2  # the SRM banner and the don't-ship verdict
    assert banners[0].startswith(f"**Sample-ratio mismatch (SRM): p = {pval(chi2.pvalue)} < 0.001.**")
    assert f"control {users['control']:,}, treatment {users['treatment']:,}" in banners[0]
    assert "users are not split as configured" in banners[1]
    assert "DON'T SHIP" in next(m.value for m in at.markdown if "Verdict" in m.value)


def test_paused_experiment_keeps_running_and_does_not_refresh(monkeypatch: pytest.MonkeyPatch, many: dict) -> None:
    at = _app(monkeypatch, many["path"])
    at.query_params["experiment"] = "paused-v1"
    at.run()
    assert not at.exception
    assert "Keep running" in at.warning[0].value
    assert at.progress[0].value == round(100 * sum(_users(many["paused"]).values()) / 20_000)
    assert "Auto-refresh paused" in at.sidebar.caption[0].value
    # Three arms: every treatment arm gets its own headline row, the table one row per variant.
    users = _users(many["paused"])
    variants = _frame(at, "variant_table").set_index("variant")["users"].to_dict()
    assert variants == {name: users[name] for name in ("control", "treatment", "treatment_b")}
    labels = set(_metrics(at))
    assert {"treatment: p sequential", "treatment_b: p sequential", "treatment_b: P(beat control)"} <= labels
    significance = _frame(at, "significance_table")
    assert sorted(significance["arm"].unique()) == ["treatment", "treatment_b"]
    assert (significance["p Holm"] != "n/a").all()


# -- caching, refresh and export --------------------------------------------------------------------------------


def test_nothing_is_recomputed_until_the_store_changes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "one.duckdb"
    exp = fill_store(path, n_customers=2_000, seed=3)
    at = _app(monkeypatch, path)
    before = dict(loader.LOAD_COUNTS)
    at.run()
    assert not at.exception
    assert "Auto-refresh every 5 s" in at.sidebar.caption[0].value
    assert loader.LOAD_COUNTS["overview"] == before.get("overview", 0) + 1
    users = _frame(at, "experiment_table")["users"].tolist()
    assert users == [sum(_users(exp).values())]
    for _ in range(2):  # what the auto-refresh does: re-run, same version
        at.run()
    assert loader.LOAD_COUNTS["overview"] == before.get("overview", 0) + 1

    with ResultsStore(path) as store:  # the collector writes one more exposure
        store.record_assignment(
            {
                **exp.assignments[0],
                "event_id": "late-1",
                "customer_id": "late-customer",
                "first_exposure": True,
                "event_ts": START_MS + 1,
            }
        )
    at.run()
    assert loader.LOAD_COUNTS["overview"] == before.get("overview", 0) + 2
    assert _frame(at, "experiment_table")["users"].tolist() == [users[0] + 1]


def test_each_page_runs_the_analysis_once_per_experiment_it_shows(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The page, its list row, its charts and its export all read one report: one analysis per page render."""
    path = tmp_path / "two.duckdb"
    fill_store(path, n_customers=1_000, seed=3)
    fill_store(path, n_customers=500, seed=4, definition=definition_dict("other-v1"))
    calls: list[str] = []
    real = report_model.analyse

    def counting(
        config: AnalysisConfig, stats: Mapping[str, VariantStats], history: Sequence[Mapping[str, VariantStats]] = ()
    ) -> ExperimentAnalysis:
        calls.append(config.experiment_id)
        return real(config, stats, history)

    monkeypatch.setattr(report_model, "analyse", counting)
    assert not hasattr(loader, "analyse"), "the dashboard analyses only through the report"

    at = _app(monkeypatch, path, tmp_path / "exports")
    at.query_params["experiment"] = "cat61-v1"
    at.run()
    assert not at.exception
    assert at.title[0].value == "Show category 61 (cat61-v1)"
    assert calls == ["cat61-v1"]  # not the other experiment, and not twice
    at.button(key="export").click().run()  # the export writes the report on screen
    assert not at.exception and any("report-cat61-v1.json" in s.value for s in at.success)
    at.run()  # an auto-refresh with the same data
    assert calls == ["cat61-v1"]

    at.sidebar.selectbox[0].set_value("All experiments").run()  # the list: one analysis per experiment
    assert not at.exception
    assert sorted(calls[1:]) == ["cat61-v1", "other-v1"]


def test_a_locked_store_keeps_the_last_data_on_screen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "one.duckdb"
    exp = fill_store(path, n_customers=1_000, seed=4)
    monkeypatch.setattr(loader, "LOCK_WAIT_S", 0.3)
    at = _app(monkeypatch, path)
    at.query_params["experiment"] = "cat61-v1"
    at.run()
    users = _frame(at, "variant_table")["users"].sum()
    with ResultsStore(path):  # a writer holds the file: read-only opens fail until it lets go
        at.run()
    assert not at.exception
    assert any("could not be read just now" in w.value for w in at.warning)
    assert at.title[0].value == "Show category 61 (cat61-v1)"
    assert _frame(at, "variant_table")["users"].sum() == users == sum(_users(exp).values())
    at.run()  # the writer is gone
    assert not any("could not be read just now" in w.value for w in at.warning)


def test_export_writes_what_abflow_report_writes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "one.duckdb"
    fill_store(path, n_customers=2_000, seed=3)
    exports = tmp_path / "exports"
    at = _app(monkeypatch, path, exports)
    at.query_params["experiment"] = "cat61-v1"
    at.run()
    at.button(key="export").click().run()
    assert not at.exception
    assert any("report-cat61-v1.json" in s.value for s in at.success)
    written = sorted(p.name for p in exports.iterdir())
    assert written == [f"report-cat61-v1.{fmt}" for fmt in ("csv", "html", "json", "md")]
    for fmt in ("json", "md", "csv"):
        out = tmp_path / f"cli.{fmt}"
        result = CliRunner().invoke(
            cli_app, ["report", "cat61-v1", "--format", fmt, "--store", str(path), "--out", str(out)]
        )
        assert result.exit_code == 0, result.output
        assert (exports / f"report-cat61-v1.{fmt}").read_text() == out.read_text()


# -- the command ------------------------------------------------------------------------------------------------


def test_dashboard_command_binds_locally_and_passes_settings(tmp_path: Path) -> None:
    argv, env = build_command(
        port=8765,
        host="127.0.0.1",
        store=tmp_path / "s.duckdb",
        refresh=3,
        export_dir=tmp_path,
        alpha=0.1,
        base_env={},
    )
    assert argv[1:4] == ["-m", "streamlit", "run"] and argv[4].endswith("dashboard/app.py")
    assert argv[argv.index("--server.address") + 1] == "127.0.0.1"
    assert argv[argv.index("--server.port") + 1] == "8765"
    assert env["ABFLOW_STORE"] == str((tmp_path / "s.duckdb").resolve())
    assert env["ABFLOW_DASHBOARD_REFRESH"] == "3" and env["ABFLOW_DASHBOARD_ALPHA"] == "0.1"
    assert loader.settings_from_env(env) == loader.DashboardSettings(
        store_path=(tmp_path / "s.duckdb").resolve(), refresh_s=3.0, export_dir=tmp_path.resolve(), alpha=0.1
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "0"], "--port must lie in 1..65535; got 0"),
        (["--refresh", "-1"], "--refresh must be >= 0 seconds"),
        (["--alpha", "1.5"], "--alpha must lie strictly between 0 and 1; got 1.5"),
    ],
)
def test_dashboard_command_rejects_bad_options(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli_app, ["dashboard", *args])
    assert result.exit_code == 2
    assert f"error: {message}" in result.output


# -- several model arms and the segments expander ----------------------------------------------------------------


def test_model_arms_table_and_segments_loaded_only_when_asked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Three arms (two models): the arms table with P(best) and the models; segments only once opened and picked."""
    from experiment.results.report_model import SegmentRow, short_versions
    from experiment.stats.segments import segment_lift
    from tests.helpers.arms_segments import CHALLENGER, CHAMPION, three_arm_definition, with_segments

    path = tmp_path / "arms.duckdb"
    exp, truth = with_segments(make_experiment(n_customers=6_000, seed=8, definition=three_arm_definition()))
    fill_store(path, exp)
    calls: list[str] = []
    real_dimensions, real_stats = ResultsStore.segment_dimensions, ResultsStore.segment_stats

    def dimensions(self: ResultsStore, experiment_id: str) -> list[str]:
        calls.append("dimensions")
        return real_dimensions(self, experiment_id)

    def segment_stats(self: ResultsStore, experiment_id: str, dimension: str, as_of: object = None) -> dict:
        calls.append(dimension)
        return real_stats(self, experiment_id, dimension, as_of)

    monkeypatch.setattr(ResultsStore, "segment_dimensions", dimensions)
    monkeypatch.setattr(ResultsStore, "segment_stats", segment_stats)
    at = _app(monkeypatch, path)
    at.query_params["experiment"] = "champ-v1"
    at.run()
    assert not at.exception

    arms = next(df.value for df in at.dataframe if "P(best)" in df.value.columns).set_index("arm")
    assert list(arms.index) == ["control", "champion", "challenger"]
    short = short_versions([CHAMPION, CHALLENGER])
    assert arms.loc["champion", "model version"] == short[CHAMPION]
    assert arms.loc["challenger", "model version"] == short[CHALLENGER]
    assert arms.loc["challenger", "threshold"] == "0.42" and arms.loc["control", "threshold"] == "n/a"
    assert arms["users"].to_dict() == {name: s.users for name, s in exp.expected_stats.items()}
    assert sum(float(p) for p in arms["P(best)"]) == pytest.approx(1.0, abs=2e-3)  # shown to 3 significant digits
    pairs = next(df.value for df in at.dataframe if "p Holm (all comparisons)" in df.value.columns)
    assert pairs["comparison"].tolist() == ["champion − control", "challenger − control", "challenger − champion"]
    assert calls == [], "the page must not query segments until the reader asks"

    at.session_state["segments_open_champ-v1"] = True  # the reader opens the Segments expander
    at.run()
    assert not at.exception
    assert calls == ["dimensions"]
    picker = next(s for s in at.selectbox if s.label == "Dimension")
    assert picker.options == ["age_band", "gender"] and picker.value is None
    picker.set_value("age_band").run()
    assert not at.exception
    assert calls == ["dimensions", "age_band"]

    table = next(df.value for df in at.dataframe if "p BH" in df.value.columns)
    names = ("control", "champion", "challenger")
    cells = truth["age_band"]
    filled = {s: {n: cells[s].get(n, VariantStats()) for n in names} for s in ("18-24", "25-34", "35-44", "unknown")}
    oracle = [SegmentRow.of("age_band", lift) for lift in segment_lift(filled, control="control").lifts]
    assert list(zip(table["segment"], table["arm"], strict=True)) == [(r.segment, r.arm) for r in oracle]
    assert table["users arm"].tolist() == [r.treatment_users for r in oracle]
    assert table["p BH"].tolist() == [pval(r.p_value_bh) for r in oracle]
    assert table["lift"].tolist() == [pct(r.abs_diff) for r in oracle]
    forest = json.loads(next(c for c in at.get("plotly_chart") if "segments_forest" in c.proto.id).proto.spec)
    assert sum(len(trace["x"]) for trace in forest["data"]) == len(oracle)  # one point per segment row
    assert [x for trace in forest["data"] for x in trace["x"]] == pytest.approx(
        [100 * r.abs_diff for arm in ("champion", "challenger") for r in oracle if r.arm == arm and r.abs_diff]
    )
    sentences = [m.value.replace("\\", "") for m in at.markdown if "across age" in m.value]  # markdown-escaped
    assert len(sentences) == 2 and all("across age_band (Q=" in s for s in sentences)

    at.run()  # a refresh with the same data: served from the cache
    assert calls == ["dimensions", "age_band"]
