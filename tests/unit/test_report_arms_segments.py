"""The report's arms section (several model arms) and segments section (`--segments`), in every format and the CLI.

The numbers are checked against oracles computed here from the same counts: statsmodels' Holm, the statistics'
own `compare_arms`/`segment_lift`, and hand counts; the two-arm report must stay what it was (no new key, section
or column, and no segment query).
"""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from statsmodels.stats.multitest import multipletests
from typer.testing import CliRunner

from experiment.cli.main import app
from experiment.core.definition import ExperimentDefinition
from experiment.core.errors import ExperimentError
from experiment.results.forest_plot import segment_forest_svg
from experiment.results.report import _CSV_COLUMNS, build_report, print_summary, render, render_csv
from experiment.results.report_model import SegmentRow, build_arms, short_versions
from experiment.results.store import ResultsStore
from experiment.stats.multiarm import compare_arms
from experiment.stats.segments import segment_lift
from experiment.stats.sufficient import VariantStats as V
from tests.helpers.arms_segments import (
    AGE,
    CHALLENGER,
    CHAMPION,
    GENDER,
    WEIGHTS,
    three_arm_definition,
    with_segments,
)
from tests.helpers.fill_store import definition_dict, fill_store, make_experiment


class FakeStore:
    """The store methods `build_report` reads, over fixed statistics; records every call."""

    path = Path("fake.duckdb")

    def __init__(
        self,
        definition: Mapping[str, Any],
        stats: Mapping[str, V],
        segments: Mapping[str, Mapping[str, Mapping[str, V]]] | None = None,
    ) -> None:
        self.definition = ExperimentDefinition.from_dict(dict(definition))
        self.stats = dict(stats)
        self.segments = {k: {s: dict(a) for s, a in v.items()} for k, v in (segments or {}).items()}
        self.calls: list[str] = []

    def experiment(self, experiment_id: str) -> ExperimentDefinition | None:
        return self.definition if experiment_id == self.definition.id else None

    def experiment_ids(self) -> list[str]:
        return [self.definition.id]

    def variant_stats(self, experiment_id: str, as_of: Any = None) -> dict[str, V]:
        self.calls.append("variant_stats")
        return dict(self.stats)

    def daily_stats(self, experiment_id: str, as_of: Any = None) -> list[Any]:
        self.calls.append("daily_stats")
        return []

    def unusable_model(self, experiment_id: str, model_version: str | None) -> None:
        return None

    def last_event_ts(self, experiment_id: str, as_of: Any = None) -> int | None:
        return None

    def segment_dimensions(self, experiment_id: str) -> list[str]:
        self.calls.append("segment_dimensions")
        return list(self.segments)

    def segment_stats(self, experiment_id: str, dimension: str, as_of: Any = None) -> dict[str, dict[str, V]]:
        self.calls.append(f"segment_stats:{dimension}")
        return self.segments[dimension]


def _report(store: FakeStore, **kwargs: Any) -> Any:
    return build_report(store, store.definition.id, **kwargs)  # type: ignore[arg-type]


# -- several model arms -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def three_arms(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A real store: control, champion and challenger (own model and threshold), both models +20 % on conversion."""
    path = tmp_path_factory.mktemp("three") / "r.duckdb"
    exp = fill_store(
        path, make_experiment(n_customers=20_000, seed=3, true_rel_lift=0.2, definition=three_arm_definition())
    )
    return path, exp


def test_three_arm_report_holm_prob_best_and_model_versions(three_arms: tuple[Path, Any]) -> None:
    path, exp = three_arms
    with ResultsStore(path, read_only=True) as store:
        report = build_report(store, "champ-v1")
    arms = report.arms
    assert arms is not None and arms.model_arms == ("champion", "challenger")
    stats = exp.expected_stats
    # The family: each model arm vs control, then challenger − champion; Holm as statsmodels computes it.
    assert [(c.arm, c.baseline, c.kind) for c in arms.comparisons] == [
        ("champion", "control", "vs_control"),
        ("challenger", "control", "vs_control"),
        ("challenger", "champion", "between_arms"),
    ]
    raw = [c.p_value for c in arms.comparisons]
    assert raw == [
        compare_arms(stats, control="control", weights=dict(WEIGHTS)).comparisons[i].comparison.p_value
        for i in range(3)
    ]
    holm = multipletests(raw, method="holm")[1]
    assert [c.p_value_holm for c in arms.comparisons] == pytest.approx([float(h) for h in holm], rel=1e-12)
    between = arms.comparison("challenger", "champion")
    rate = {name: s.conversions / s.users for name, s in stats.items()}
    assert between.abs_diff == pytest.approx(rate["challenger"] - rate["champion"], abs=1e-12)
    # P(best) per arm sums to one, and the arm table reads the definition's models and thresholds.
    probabilities = [a.prob_best for a in arms.arms]
    assert all(p is not None for p in probabilities)
    assert sum(p for p in probabilities if p is not None) == pytest.approx(1.0, abs=1e-9)
    info = {a.name: a for a in arms.arms}
    assert info["control"].model_version is None and info["control"].threshold is None
    assert info["champion"].model_version == CHAMPION and info["champion"].threshold == 0.5
    assert info["challenger"].model_version == CHALLENGER and info["challenger"].threshold == 0.42
    assert {name: a.users for name, a in info.items()} == {name: s.users for name, s in stats.items()}
    # SRM across all three arms.
    assert arms.srm.df == 2 and arms.srm.p_value == report.srm.p_value

    # Every format shows the arms, with the model versions kept apart.
    md, page, tree = render(report, "md"), html.unescape(render(report, "html")), json.loads(render(report, "json"))
    short = short_versions([CHAMPION, CHALLENGER])
    for text in (md, page):
        assert "Arms" in text and "challenger − champion" in text
        assert short[CHAMPION] in text and short[CHALLENGER] in text and "0.42" in text
    assert f"| challenger | model | {short[CHALLENGER]} | 0.42 |" in md
    assert f"| {between.p_value_holm:.3g} |" in md
    assert [a["model_version"] for a in tree["arms"]["arms"]] == [None, CHAMPION, CHALLENGER]
    assert [c["p_value_holm"] for c in tree["arms"]["comparisons"]] == [c.p_value_holm for c in arms.comparisons]
    assert sum(a["prob_best"] for a in tree["arms"]["arms"]) == pytest.approx(1.0, abs=1e-9)
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert {r["section"] for r in rows} == {"metrics", "arm", "arm_comparison"}
    arm_rows = {r["arm"]: r for r in rows if r["section"] == "arm"}
    assert arm_rows["challenger"]["model_version"] == CHALLENGER and arm_rows["challenger"]["threshold"] == "0.42"
    pair = next(r for r in rows if r["section"] == "arm_comparison" and r["baseline"] == "champion")
    assert float(pair["p_value_holm"]) == between.p_value_holm
    console = Console(record=True, width=400)
    print_summary(console, report)
    summary = console.export_text()
    assert f"arm challenger (model {short[CHALLENGER]}, threshold 0.42): P(best) = " in summary
    assert "challenger − champion, conversion: abs diff" in summary


def test_short_versions_keep_versions_apart() -> None:
    assert short_versions([CHAMPION, None, CHALLENGER]) == {CHAMPION: "a" * 12, CHALLENGER: "ab" * 6}
    twins = ["0" * 20 + "1" * 44, "0" * 20 + "2" * 44]
    assert short_versions(twins) == {twins[0]: "0" * 20 + "1", twins[1]: "0" * 20 + "2"}


def test_verdict_names_no_model_arm_the_holm_comparison_does_not_separate() -> None:
    """Both models beat control clearly; the challenger looks a little better, not significantly: no winner."""
    stats = {
        "control": V.from_counts(40_000, 4_000),
        "champion": V.from_counts(30_000, 3_600),
        "challenger": V.from_counts(30_000, 3_660),
    }
    report = _report(FakeStore(three_arm_definition(planned_sample_size=100_000), stats))
    arms = report.arms
    assert arms is not None
    assert all(c.significant_holm for c in arms.comparisons if c.kind == "vs_control")
    between = arms.comparison("challenger", "champion")
    assert between.p_value_holm is not None and between.p_value_holm >= 0.05
    verdict = report.verdict
    assert verdict.decision == "keep_running" and verdict.arm is None
    assert verdict.codes == ("no_winner_among_model_arms",)
    assert "not significantly better than 'champion'" in verdict.explanation
    assert f"Holm p = {between.p_value_holm:.2g}" in verdict.explanation
    assert report.to_dict()["verdict"]["codes"] == ["no_winner_among_model_arms"]

    # With a clear gap between the models the verdict names the challenger, and says why.
    clear = {**stats, "challenger": V.from_counts(30_000, 4_200)}
    report = _report(FakeStore(three_arm_definition(planned_sample_size=100_000), clear))
    assert report.verdict.decision == "ship" and report.verdict.arm == "challenger"
    assert report.verdict.codes == ("significant_improvement", "best_model_arm")
    assert "significantly better than every other model arm" in report.verdict.explanation
    assert report.arms is not None and report.arms.comparison("challenger", "champion").significant_holm


def test_a_verdict_without_a_winner_is_left_alone() -> None:
    flat = {name: V.from_counts(round(30_000 * w), round(3_000 * w)) for name, w in WEIGHTS}
    report = _report(FakeStore(three_arm_definition(planned_sample_size=100_000), flat))
    assert report.arms is not None
    assert report.verdict.decision == "keep_running" and report.verdict.codes == ("not_enough_power",)


def test_build_arms_needs_two_model_arms_and_runs_on_statistics_alone() -> None:
    two = ExperimentDefinition.from_dict(definition_dict())
    assert build_arms(two, {"control": V.from_counts(10, 1), "treatment": V.from_counts(10, 2)}) is None
    three = ExperimentDefinition.from_dict(three_arm_definition())
    arms = build_arms(three, {"control": V.from_counts(100, 10)})  # model arms not reached yet
    assert arms is not None and all(a.prob_best is None for a in arms.arms)
    assert arms.prob_best_reasons == "prob_best=no_users_in_variant"
    assert arms.comparison("challenger", "control").p_value_holm is None


# -- the two-arm report is unchanged --------------------------------------------------------------------------------


def test_two_arm_report_has_no_new_section_key_column_or_query() -> None:
    stats = {"control": V.from_counts(10_000, 1_000), "treatment": V.from_counts(10_000, 1_100)}
    store = FakeStore(definition_dict(), stats, segments={"age_band": {}})
    report = _report(store)
    assert report.arms is None and report.segments is None
    assert store.calls == ["variant_stats", "daily_stats"]  # no segment query without --segments
    assert "arms" not in report.to_dict() and "segments" not in report.to_dict()
    md, page = render(report, "md"), render(report, "html")
    for heading in ("Arms", "Segments"):
        assert f"## {heading}" not in md and f"<h2>{heading}</h2>" not in page
    assert 'class="forest-plot"' not in page
    assert render_csv(report).splitlines()[0].split(",") == _CSV_COLUMNS


# -- segments -------------------------------------------------------------------------------------------------------


def _segment_store() -> FakeStore:
    stats = {name: sum((cells.get(name, V()) for cells in AGE.values()), V()) for name, _ in WEIGHTS}
    return FakeStore(three_arm_definition(), stats, segments={"age_band": AGE, "gender": GENDER})


def test_segment_section_equals_segment_lift_on_the_same_counts() -> None:
    store = _segment_store()
    report = _report(store, segments=["age_band", "gender"])
    assert store.calls.count("segment_stats:age_band") == 1 and store.calls.count("segment_stats:gender") == 1
    section = report.segments
    assert section is not None and [d.dimension for d in section.dimensions] == ["age_band", "gender"]
    age = section.dimension("age_band")
    assert age.segments == ("18-24", "25-34", "65+", "unknown")
    filled = {s: {name: AGE[s].get(name, V()) for name, _ in WEIGHTS} for s in age.segments}
    oracle = segment_lift(filled, control="control")
    assert age.rows == tuple(SegmentRow.of("age_band", lift) for lift in oracle.lifts)
    for lift in oracle.lifts:
        row = age.row(lift.segment, lift.arm)
        c = lift.comparison
        assert (row.control_users, row.treatment_users) == (lift.control_users, lift.treatment_users)
        assert (row.control_value, row.treatment_value, row.abs_diff) == (
            c.control_value,
            c.treatment_value,
            c.abs_diff,
        )
        assert row.p_value == c.p_value and row.p_value_bh == lift.p_value_bh
        assert (row.abs_ci_lower, row.abs_ci_upper) == ((c.abs_ci.lower, c.abs_ci.upper) if c.abs_ci else (None, None))
    # Degenerate: 65+ has no challenger customers, and says so.
    empty = age.row("65+", "challenger")
    assert empty.treatment_users == 0 and empty.abs_diff is None and empty.note == "no_users_in_variant"
    # Heterogeneity: Cochran's Q per arm, the oracle's numbers and a plain sentence.
    for h in age.heterogeneity:
        q = oracle.heterogeneity[h.arm]
        assert (h.statistic, h.df, h.p_value, h.i_squared) == (q.statistic, q.df, q.p_value, q.i_squared)
    challenger = next(h for h in age.heterogeneity if h.arm == "challenger")
    assert challenger.excluded == {"65+": "no_users_in_variant"} and challenger.df == 2
    assert challenger.heterogeneous and challenger.summary.startswith(
        f"The lift of 'challenger' differs across age_band (Q={challenger.statistic:.3g}, df=2, "
        f"p={challenger.p_value:.2g}, I²="
    )
    assert "Left out: 65+ (no_users_in_variant)." in challenger.summary
    gender = section.dimension("gender")
    assert all(h.heterogeneous is False for h in gender.heterogeneity)
    assert all(h.summary.startswith("No evidence that the lift of '") for h in gender.heterogeneity)

    # md, json, csv carry the table; html the table and one forest plot per dimension.
    md, page = render(report, "md"), render(report, "html")
    tree = json.loads(render(report, "json"))
    assert "## Segments" in md and "### age_band" in md and "### gender" in md
    assert "| 65+ | challenger | 500 | 0 |" in md and "no_users_in_variant" in md
    assert challenger.summary in md and html.escape(challenger.summary) in page
    assert [r["segment"] for r in tree["segments"]["dimensions"][0]["rows"]][::2] == list(age.segments)
    assert tree["segments"]["dimensions"][0]["rows"][0] == dataclasses.asdict(age.rows[0])
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    segment_rows = [r for r in rows if r["section"] == "segment" and r["dimension"] == "age_band"]
    assert len(segment_rows) == len(age.rows)
    assert [float(r["p_value_bh"]) if r["p_value_bh"] else None for r in segment_rows] == [
        r.p_value_bh for r in age.rows
    ]
    het = [r for r in rows if r["section"] == "heterogeneity"]
    assert [(r["dimension"], r["arm"]) for r in het] == [
        (d.dimension, h.arm) for d in section.dimensions for h in d.heterogeneity
    ]
    assert page.count('<svg xmlns="http://www.w3.org/2000/svg" class="forest-plot"') == 2
    console = Console(record=True, width=400)
    print_summary(console, report)
    assert f"segments by age_band: {challenger.summary}" in console.export_text()


def test_forest_plot_svg_has_one_marker_per_segment_row() -> None:
    report = _report(_segment_store(), segments=["all"])
    assert report.segments is not None
    for d in report.segments.dimensions:
        svg = segment_forest_svg(d)
        markers = re.findall(r'<circle class="marker" data-segment="([^"]*)" data-arm="([^"]*)"', svg)
        defined = [(html.escape(r.segment), r.arm) for r in d.rows if r.abs_diff is not None]
        assert markers == sorted(defined, key=lambda m: d.arms.index(m[1]))  # grouped by arm, segments in order
        assert svg.count('class="undefined"') == sum(1 for r in d.rows if r.abs_diff is None)
        assert svg.count('class="pooled"') == len(d.heterogeneity)
        assert (
            "<script" not in svg
            and "href" not in svg
            and "http" not in svg.replace('xmlns="http://www.w3.org/2000/svg"', "")
        )
        # Each marker sits at its lift on the plot's scale: larger lifts further right.
        xs = {
            (seg, arm): float(x)
            for seg, arm, x in re.findall(r'data-segment="([^"]*)" data-arm="([^"]*)" cx="([^"]*)"', svg)
        }
        by_lift = sorted((r.abs_diff, xs[html.escape(r.segment), r.arm]) for r in d.rows if r.abs_diff is not None)
        assert [x for _, x in by_lift] == sorted(x for _, x in by_lift)
    age = report.segments.dimension("age_band")
    assert 'class="undefined"' in segment_forest_svg(age) and "n/a: no_users_in_variant" in segment_forest_svg(age)
    assert segment_forest_svg(age) == segment_forest_svg(age)  # pure: the same bytes


def test_segments_all_and_unknown_dimensions() -> None:
    store = _segment_store()
    report = _report(store, segments=["all"])
    assert report.segments is not None
    assert [d.dimension for d in report.segments.dimensions] == ["age_band", "gender"]
    report = _report(store, segments=["gender", "gender", " "])
    assert report.segments is not None and [d.dimension for d in report.segments.dimensions] == ["gender"]
    before = list(store.calls)
    with pytest.raises(
        ExperimentError,
        match=r"^unknown segment dimension 'shoe_size' for experiment 'champ-v1'; its "
        r"dimensions are: age_band, gender \(or 'all'\)$",
    ):
        _report(store, segments=["age_band", "shoe_size"])
    assert store.calls[len(before) :] == ["segment_dimensions"]  # refused before any statistic is read
    with pytest.raises(ExperimentError, match="no segment dimension given"):
        _report(store, segments=[])


def test_a_dimension_without_data_says_so() -> None:
    store = _segment_store()
    store.segments["customer_type"] = {}
    report = _report(store, segments=["customer_type"])
    assert report.segments is not None
    d = report.segments.dimension("customer_type")
    assert d.rows == () and d.note == "no first exposure with a customer_type recorded yet"
    assert "No first exposure with a customer_type recorded yet." in render(report, "md")
    render(report, "json")  # no NaN anywhere


# -- the command ------------------------------------------------------------------------------------------------------


@pytest.fixture
def segment_methods(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Give `ResultsStore` fixed segment statistics (whatever the store implements), counting the calls."""
    calls: dict[str, list[str]] = {"dimensions": [], "stats": []}

    def dimensions(self: ResultsStore, experiment_id: str) -> list[str]:
        calls["dimensions"].append(experiment_id)
        return ["age_band", "gender"]

    def stats(self: ResultsStore, experiment_id: str, dimension: str, as_of: Any = None) -> dict[str, dict[str, V]]:
        calls["stats"].append(dimension)
        return {"age_band": AGE, "gender": GENDER}[dimension]

    monkeypatch.setattr(ResultsStore, "segment_dimensions", dimensions, raising=False)
    monkeypatch.setattr(ResultsStore, "segment_stats", stats, raising=False)
    return calls


@pytest.mark.parametrize("fmt", ["md", "html", "json", "csv"])
def test_cli_segments_writes_the_section(
    three_arms: tuple[Path, Any], segment_methods: dict[str, list[str]], tmp_path: Path, fmt: str
) -> None:
    path, _ = three_arms
    out = tmp_path / f"r.{fmt}"
    args = ["report", "champ-v1", "--store", str(path), "--format", fmt, "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--segments", "age_band,gender"])
    assert result.exit_code == 0, result.output
    assert segment_methods["stats"] == ["age_band", "gender"]
    assert "segments by age_band: The lift of 'challenger' differs across age_band" in result.stdout
    text = out.read_text()
    assert "age_band" in text and "gender" in text and "champion" in text
    if fmt in ("md", "html"):
        assert "challenger − champion" in text
    if fmt == "html":
        assert text.count('class="forest-plot"') == 2
    if fmt == "csv":
        assert {r["section"] for r in csv.DictReader(io.StringIO(text))} >= {"segment", "heterogeneity"}


def test_cli_segments_all_and_none(
    three_arms: tuple[Path, Any], segment_methods: dict[str, list[str]], tmp_path: Path
) -> None:
    path, _ = three_arms
    base = ["report", "champ-v1", "--store", str(path), "--format", "json", "--out", str(tmp_path / "r.json")]
    result = CliRunner().invoke(app, base)
    assert result.exit_code == 0, result.output
    assert segment_methods == {"dimensions": [], "stats": []}  # no segment query without --segments
    assert "segments" not in json.loads((tmp_path / "r.json").read_text())
    result = CliRunner().invoke(app, [*base, "--segments", "all"])
    assert result.exit_code == 0, result.output
    tree = json.loads((tmp_path / "r.json").read_text())
    assert [d["dimension"] for d in tree["segments"]["dimensions"]] == ["age_band", "gender"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "age_band,shoe_size",
            "error: unknown segment dimension 'shoe_size' for experiment 'champ-v1'; its dimensions are: "
            "age_band, gender (or 'all')",
        ),
        (" , ", "error: --segments needs one or more dimensions, comma-separated (e.g. age_band,gender), or 'all'"),
    ],
)
def test_cli_segments_errors_are_one_line_on_stderr_and_exit_2(
    three_arms: tuple[Path, Any], segment_methods: dict[str, list[str]], tmp_path: Path, value: str, message: str
) -> None:
    path, _ = three_arms
    out = tmp_path / "r.md"
    result = CliRunner().invoke(
        app, ["report", "champ-v1", "--store", str(path), "--out", str(out), "--segments", value]
    )
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message)
    assert not out.exists() and segment_methods["stats"] == []


# -- a real store, filled through its public API ----------------------------------------------------------------------


def test_segments_from_a_real_store_equal_segment_lift_on_the_raw_counts(tmp_path: Path) -> None:
    path = tmp_path / "segments.duckdb"
    exp, truth = with_segments(
        make_experiment(n_customers=9_000, seed=12, true_rel_lift=0.2, definition=three_arm_definition())
    )
    fill_store(path, exp)  # record_experiment + record_batch, as the collector writes
    with ResultsStore(path, read_only=True) as store:
        assert store.segment_dimensions("champ-v1") == ["age_band", "gender"]
        report = build_report(store, "champ-v1", segments=["all"])
        with pytest.raises(ExperimentError, match="unknown segment dimension 'customer_type'"):
            build_report(store, "champ-v1", segments=["customer_type"])
    assert report.segments is not None
    names = [name for name, _ in WEIGHTS]
    for d in report.segments.dimensions:
        cells = truth[d.dimension]
        assert set(d.segments) == set(cells) and d.segments[-1] == "unknown"
        filled = {s: {n: cells[s].get(n, V()) for n in names} for s in d.segments}
        oracle = segment_lift(filled, control="control")
        assert d.rows == tuple(SegmentRow.of(d.dimension, lift) for lift in oracle.lifts)
        for h in d.heterogeneity:
            q = oracle.heterogeneity[h.arm]
            assert (h.statistic, h.p_value, h.i_squared) == (q.statistic, q.p_value, q.i_squared)
        # Summed over the segments, the users are the report's users per arm.
        for arm in d.arms:
            assert sum(r.treatment_users for r in d.rows if r.arm == arm) == report.sample_size.users[arm]
    age = report.segments.dimension("age_band")
    assert age.segments == ("18-24", "25-34", "35-44", "unknown")  # the store's order, age bands upwards
