"""abflow's live dashboard: `abflow dashboard` runs `streamlit run dashboard/app.py`.

Two pages, chosen in the sidebar (or with `?experiment=<id>` in the URL): the experiment list and one
experiment's page. The page body is a Streamlit fragment that re-runs itself every `ABFLOW_DASHBOARD_REFRESH`
seconds while the shown experiment (or any, on the list) is running, or while the store is still empty. Each
re-run reads only `ResultsStore.version()`; everything else comes from `st.cache_data` keyed on that version,
so nothing is recomputed until the collector writes something new. Everything on an experiment's page is read
from its one typed report (`experiment.results.report.Report`), the value `abflow report` renders.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from pathlib import Path

# `streamlit run dashboard/app.py` puts dashboard/ (not the repository root) on sys.path.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from dashboard import charts, loader  # noqa: E402
from dashboard.formatting import NA, badge_markdown, ci, count, decision_badge, num, pct, pval  # noqa: E402
from experiment.core.errors import AbflowError  # noqa: E402
from experiment.results.report import Report  # noqa: E402
from experiment.results.report_model import ArmsSection, ModelNotice, SegmentDimension, short_versions  # noqa: E402
from experiment.stats.analysis import METHODS, ArmMetricResult  # noqa: E402
from experiment.stats.results import Interval, ProportionsResult  # noqa: E402

ALL = "All experiments"
_STATUS_ICONS = {"running": "▶️", "paused": "⏸️", "stopped": "⏹️", "draft": "📝", "archived": "🗄️"}


def _read_version(settings: loader.DashboardSettings) -> tuple[int | None, str | None]:
    """(version, problem). A store that cannot be opened right now falls back to the last version seen."""
    try:
        version = loader.read_version(settings.store_path)
    except AbflowError as error:
        last = st.session_state.get("_abflow_last_version")
        return last, f"The results store could not be read just now ({error}); showing the last data loaded."
    st.session_state["_abflow_last_version"] = version
    return version, None


def _empty_state(settings: loader.DashboardSettings, has_store: bool) -> None:
    st.title("abflow experiments")
    where = (
        f"The results store `{settings.store_path}` has no experiments yet."
        if has_store
        else f"There is no results store at `{settings.store_path}` yet."
    )
    st.info(
        f"**No experiments to show.** {where}\n\n"
        "To see results here:\n"
        "1. launch an experiment: `abflow experiment launch ...`;\n"
        "2. run the decision job and send traffic: `abflow pipeline run`, `abflow simulate ...`;\n"
        "3. collect the results into the store: `abflow collect` (or start the dashboard with `--store PATH`).\n\n"
        "This page refreshes itself and will show the experiments as soon as they arrive."
    )


def _experiment_list(overview: loader.Overview) -> None:
    st.title("Experiments")
    rows = overview.experiments
    running = sum(1 for r in rows if r.status in loader.LIVE_STATUSES)
    cols = st.columns(4)
    cols[0].metric("Experiments", len(rows))
    cols[1].metric("Running", running)
    cols[2].metric("Users in experiments", count(sum(r.users for r in rows)))
    cols[3].metric("Dead-lettered records", count(sum(overview.dead_letters.values())))
    table = pd.DataFrame(
        [
            {
                "experiment": r.id,
                "status": f"{_STATUS_ICONS.get(r.status, '')} {r.status}".strip(),
                "verdict": decision_badge(r.decision, r.verdict_arm)[1],
                "users": r.users,
                "planned": count(r.planned),
                "progress": min(r.progress, 1.0) if r.progress is not None else None,
                "days running": r.days_running,
                "SRM": "⚠️ mismatch" if r.srm_alarm else "ok",
                "traffic": pct(r.traffic, 0),
                "variants": r.variants,
                "name": r.name,
                "open": f"?experiment={r.id}",
            }
            for r in rows
        ]
    )
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            "progress": st.column_config.ProgressColumn(
                "sample size vs plan", min_value=0.0, max_value=1.0, format="percent"
            ),
            "open": st.column_config.LinkColumn("page", display_text="open"),
            "users": st.column_config.NumberColumn("users", format="localized"),
        },
    )
    st.subheader("Verdicts")
    for r in rows:
        st.markdown(f"{badge_markdown(r.decision, r.verdict_arm)} **{r.id}** — {r.verdict}")


def _variant_table(report: Report) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "variant": row.name,
                "users": row.users,
                "conversions": row.conversions,
                "conversion rate": pct(row.conversion_rate),
                "revenue": f"{row.revenue:,.2f}",
                "revenue / user": num(row.revenue_per_user),
            }
            for row in report.variants
        ]
    )


def _prob_beats(r: ArmMetricResult) -> float | None:
    return None if r.bayes is None else r.bayes.prob_treatment_beats_control


def _significance_table(results: tuple[ArmMetricResult, ...]) -> pd.DataFrame:
    rows = []
    for r in results:
        fixed, seq, cuped = r.fixed_horizon, r.sequential, r.cuped
        kind = "pct" if r.metric == "conversion" else "num"
        rows.append(
            {
                "arm": r.arm,
                "metric": r.metric,
                "role": r.role,
                "p fixed-horizon": pval(fixed.p_value),
                "p pooled z": pval(fixed.p_value_pooled if isinstance(fixed, ProportionsResult) else None),
                "p Holm": pval(r.p_value_holm),
                "p sequential": pval(seq.p_value),
                "P(beat control)": pval(_prob_beats(r)),
                "CUPED abs diff": pct(cuped.abs_diff) if kind == "pct" else num(cuped.abs_diff),
                "CUPED abs CI": ci(cuped.abs_ci, kind),
                "CUPED rel lift": pct(cuped.rel_lift),
                "CUPED p": pval(cuped.p_value),
                "variance reduction": pct(cuped.variance_reduction, 1),
            }
        )
    return pd.DataFrame(rows)


def _lift_table(results: tuple[ArmMetricResult, ...]) -> pd.DataFrame:
    rows = []
    for r in results:
        kind = "pct" if r.metric == "conversion" else "num"
        for method in METHODS:
            c = r.comparison(method)
            rows.append(
                {
                    "arm": r.arm,
                    "metric": r.metric,
                    "method": charts.METHOD_LABELS[method],
                    "abs diff": pct(c.abs_diff) if kind == "pct" else num(c.abs_diff),
                    "abs CI": ci(c.abs_ci, kind),
                    "rel lift": pct(c.rel_lift),
                    "rel CI": ci(c.rel_ci, "pct"),
                    "p": pval(c.p_value),
                    "undefined because": "; ".join(f"{k}: {v}" for k, v in sorted(c.reasons.items())),
                }
            )
    return pd.DataFrame(rows)


def _interval(lower: float | None, upper: float | None) -> Interval | None:
    return None if lower is None or upper is None else Interval(lower, upper)


def _arms_tables(arms: ArmsSection) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per arm: its model, threshold, users, rate and P(best); one row per comparison of the Holm family)."""
    short = short_versions([a.model_version for a in arms.arms])
    models = pd.DataFrame(
        [
            {
                "arm": a.name,
                "role": a.role,
                "model version": NA if a.model_version is None else short[a.model_version],
                "threshold": NA if a.threshold is None else f"{a.threshold:g}",
                "users": a.users,
                "rate": pct(a.conversion_rate),
                "P(best)": pval(a.prob_best),
            }
            for a in arms.arms
        ]
    )
    kind = "pct" if arms.metric == "conversion" else "num"
    comparisons = pd.DataFrame(
        [
            {
                "comparison": c.label,
                "abs diff": pct(c.abs_diff) if kind == "pct" else num(c.abs_diff),
                "CI": ci(_interval(c.abs_ci_lower, c.abs_ci_upper), kind),
                "rel lift": pct(c.rel_lift),
                "p": pval(c.p_value),
                "p Holm (all comparisons)": pval(c.p_value_holm),
                "significant": NA if c.significant_holm is None else ("yes" if c.significant_holm else "no"),
            }
            for c in arms.comparisons
        ]
    )
    return models, comparisons


def _arms_section(arms: ArmsSection) -> None:
    st.header("Arms")
    models, comparisons = _arms_tables(arms)
    st.dataframe(models, hide_index=True)
    st.dataframe(comparisons, hide_index=True)
    srm = arms.srm
    st.caption(
        f"{arms.metric}, fixed-horizon: each model arm against {arms.control} and each pair of model arms "
        f"(later-declared − earlier-declared), Holm-adjusted across these {len(arms.comparisons)} comparisons. "
        "P(best): the probability that the arm has the highest conversion rate (Beta posteriors). "
        f"SRM across all {len(arms.arms)} arms: p = {pval(srm.p_value)}."
    )


def _segment_table(section: SegmentDimension) -> pd.DataFrame:
    kind = "pct" if section.metric == "conversion" else "num"
    fmt = pct if kind == "pct" else num
    return pd.DataFrame(
        [
            {
                "segment": r.segment,
                "arm": r.arm,
                "users control": r.control_users,
                "users arm": r.treatment_users,
                "control value": fmt(r.control_value),
                "arm value": fmt(r.treatment_value),
                "lift": fmt(r.abs_diff),
                "lift CI": ci(_interval(r.abs_ci_lower, r.abs_ci_upper), kind),
                "relative lift": pct(r.rel_lift),
                "p": pval(r.p_value),
                "p BH": pval(r.p_value_bh),
                "undefined because": r.note,
            }
            for r in section.rows
        ]
    )


def _segments(page: loader.ExperimentPage, settings: loader.DashboardSettings) -> None:
    """The Segments expander: nothing is read from the store until it is opened and a dimension is picked."""
    experiment_id = page.report.experiment.id
    store = str(settings.store_path)
    box = st.expander("Segments: lift by customer segment", key=f"segments_open_{experiment_id}", on_change="rerun")
    if not box.open:
        return
    with box:
        try:
            dimensions = loader.cached_segment_dimensions(store, experiment_id, page.version)
        except AbflowError as error:
            st.info(f"No lift by segment: {error}.")
            return
        if not dimensions:
            st.info("No segment dimension is recorded for this experiment yet.")
            return
        dimension = st.selectbox(
            "Dimension",
            dimensions,
            index=None,
            placeholder="choose a dimension",
            key=f"segment_dimension_{experiment_id}",
        )
        if dimension is None:
            st.caption("Pick a dimension to compute the lift by its segments.")
            return
        try:
            section = loader.cached_segments(store, experiment_id, dimension, page.version, settings.alpha)
        except AbflowError as error:
            st.info(f"No lift by segment: {error}.")
            return
        if section.note:
            st.info(section.note[0].upper() + section.note[1:] + ".")
            return
        for h in section.heterogeneity:
            st.markdown(f"- {_plain(h.summary)}")
        st.plotly_chart(charts.segment_forest_figure(section, settings.alpha), key=f"segments_forest_{dimension}")
        st.dataframe(_segment_table(section), hide_index=True)
        st.caption(
            "Each treatment arm against control among the segment's users (fixed-horizon), by the segment of each "
            "customer's first exposure; p BH: Benjamini–Hochberg across the arm's segments; whether the lift "
            "differs between segments: Cochran's Q (I² = share of the variation beyond chance)."
        )


def _minute(iso: str | None) -> str:
    """'2026-01-13T19:49:17.833Z' → '2026-01-13 19:49 UTC'."""
    return NA if not iso else f"{iso[:10]} {iso[11:16]} UTC"


def _plain(text: str) -> str:
    """`text` shown literally in Streamlit markdown: a path like `model_v2/x.pmml` must not turn italic."""
    return re.sub(r"([\\`*_{}\[\]<>()#+\-.!|~$:])", r"\\\1", text)


def _model_unusable_banner(unusable: ModelNotice | None) -> None:
    """Red banner when the job refuses the experiment's model: it explains an experiment with no new users."""
    if unusable is None:
        return
    st.error(
        f"**{_plain(unusable.message)}.** Reported by the job at {_minute(unusable.ts_iso)}. Until a usable "
        "model version is launched, no customer is assigned to any arm, so the numbers on this page stop growing."
    )


def _verdict_banner(row: loader.ExperimentRow) -> None:
    st.markdown(f"### Verdict {badge_markdown(row.decision, row.verdict_arm)}")
    {"ship": st.success, "dont_ship": st.error}.get(row.decision, st.warning)(row.verdict)


def _experiment_page(page: loader.ExperimentPage, settings: loader.DashboardSettings) -> None:
    report, row = page.report, page.row
    definition, sample, results = report.experiment, report.sample_size, report.results
    st.title(row.name)
    st.caption(
        f"`{row.id}` v{definition.version} · {_STATUS_ICONS.get(row.status, '')} {row.status} · "
        f"traffic {pct(row.traffic, 0)} · {row.variants} · owner {definition.owner} · "
        f"data {row.first_day or NA} → {_minute(report.data_through)} · {row.days_running} days"
    )
    if definition.hypothesis:
        st.markdown(f"*{definition.hypothesis}*")
    _model_unusable_banner(report.model_unusable)

    srm = report.srm
    if srm.alarm:
        observed = ", ".join(f"{k} {v:,}" for k, v in srm.observed.items())
        expected = ", ".join(f"{k} {v:,.0f}" for k, v in srm.expected.items())
        st.error(
            f"**Sample-ratio mismatch (SRM): p = {pval(srm.p_value)} < {srm.threshold}.** Users are not split "
            f"as configured: observed {observed}; expected {expected}. Assignment or logging is broken, so no "
            "result on this page can be trusted until it is fixed."
        )
    _verdict_banner(row)

    planned, total = sample.planned, sample.total
    if planned:
        progress = sample.progress or 0.0
        st.progress(
            min(progress, 1.0),
            text=f"Sample size: {total:,} of {planned:,} planned users ({progress:.0%}; {sample.planned_source})",
        )
    else:
        st.info(f"Sample size: {total:,} users; no planned sample size or MDE is set, so progress is unknown.")

    st.header("Per variant")
    st.dataframe(_variant_table(report), hide_index=True)
    metrics = list(dict.fromkeys(r.metric for r in results))
    for r in (r for r in results if r.metric == definition.primary_metric):
        cols = st.columns(4)  # one row per treatment arm, on the primary metric
        cols[0].metric(f"{r.arm}: relative lift", pct(r.fixed_horizon.rel_lift))
        cols[1].metric(f"{r.arm}: p fixed-horizon", pval(r.fixed_horizon.p_value))
        cols[2].metric(f"{r.arm}: p sequential", pval(r.sequential.p_value))
        cols[3].metric(f"{r.arm}: P(beat control)", pval(_prob_beats(r)))
    if report.arms is not None:
        _arms_section(report.arms)

    st.header("Lift")
    tabs = st.tabs(metrics) if metrics else []
    for tab, metric in zip(tabs, metrics, strict=True):
        with tab:
            st.plotly_chart(charts.forest_figure(results, metric), key=f"forest_{metric}")
    st.dataframe(_lift_table(results), hide_index=True)

    st.header("Significance")
    st.dataframe(_significance_table(results), hide_index=True)
    st.caption(
        f"Verdict basis: {report.verdict.basis.replace('_', '-')}. Fixed-horizon p-values are valid once, at "
        "the planned size; sequential p-values stay valid however often you look."
    )

    st.header("Over time")
    st.plotly_chart(
        charts.lift_over_time_figure(report.lift_over_time, report.analysis.treatments), key="lift_over_time"
    )

    _segments(page, settings)

    st.header("Decisions and model")
    left, right = st.columns(2)
    with left:
        st.plotly_chart(charts.funnel_figure(page.funnel), key="funnel")
        st.dataframe(
            pd.DataFrame([{"variant": name, **stages} for name, stages in page.funnel.items()]),
            hide_index=True,
        )
    with right:
        st.plotly_chart(charts.score_histogram_figure(page.score_histogram, definition.threshold), key="scores")

    _dead_letters(page.dead_letters)

    st.header("Export")
    if st.button("Export report files (md, html, json, csv)", key="export"):
        try:
            paths = loader.export_reports(report, settings.export_dir)
        except (AbflowError, OSError) as error:
            st.error(f"Export failed: {error}")
        else:
            st.success("Wrote " + ", ".join(f"`{p}`" for p in paths))

    with st.expander("Methods"):
        for key, text in sorted(report.analysis.methods.items()):
            st.markdown(f"- **{key}**: {text}")


def _dead_letters(dead: dict[str, int]) -> None:
    st.header("Bad input")
    total = sum(dead.values())
    st.metric("Dead-lettered records", count(total))
    if dead:
        st.dataframe(pd.DataFrame([{"topic": t, "records": n} for t, n in dead.items()]), hide_index=True)
    else:
        st.caption("No record has been dead-lettered.")


def _body(settings: loader.DashboardSettings, choice: str, ids: tuple[str, ...], live: bool) -> None:
    """The refreshing part of the page: re-reads the version, then serves everything from the cache."""
    version, problem = _read_version(settings)
    if problem:
        st.warning(problem)
    if version is None:
        _empty_state(settings, has_store=problem is not None)
        return
    store = str(settings.store_path)
    try:
        index = loader.cached_index(store, version)
        overview = loader.cached_overview(store, version, settings.alpha) if choice == ALL and index.ids else None
    except AbflowError as error:
        st.warning(f"The results store could not be read just now ({error}); retrying at the next refresh.")
        return
    if index.ids != ids or _is_live(index, choice) != live:
        st.rerun(scope="app")  # the sidebar or the refresh schedule must change
    if not index.ids:
        _empty_state(settings, has_store=True)
    elif overview is not None:
        _experiment_list(overview)
    else:
        try:
            page = loader.cached_experiment(store, choice, version, settings.alpha)
        except AbflowError as error:
            st.error(str(error))
            return
        _experiment_page(page, settings)
    st.caption(
        f"Store `{settings.store_path}` · data version {version} · "
        f"checked {dt.datetime.now(dt.UTC).strftime('%H:%M:%S')} UTC"
    )


def _is_live(index: loader.ExperimentIndex | None, choice: str) -> bool:
    if index is None:
        return True  # waiting for the first data
    return index.is_live(None if choice == ALL else choice)


def main() -> None:
    """Render the page."""
    st.set_page_config(page_title="abflow dashboard", page_icon="🧪", layout="wide")
    try:
        settings = loader.settings_from_env()
    except AbflowError as error:
        st.error(f"Dashboard settings are invalid: {error}")
        return
    version, _ = _read_version(settings)
    try:
        # Only the definitions: the sidebar and the refresh schedule need no statistics.
        index = None if version is None else loader.cached_index(str(settings.store_path), version)
    except AbflowError:
        index = None  # the page body says why
    if index is not None:
        ids = index.ids
        st.session_state["_abflow_ids"] = ids
    else:  # keep the sidebar (and the reader's place) while the store is momentarily unreadable
        ids = st.session_state.get("_abflow_ids", ())

    options = [ALL, *ids]
    if st.session_state.get("experiment") not in options:
        requested = st.query_params.get("experiment")
        st.session_state["experiment"] = requested if requested in options else ALL
    choice = st.sidebar.selectbox("Experiment", options, key="experiment")
    if choice == ALL:
        st.query_params.pop("experiment", None)
    else:
        st.query_params["experiment"] = choice
    live = _is_live(index, choice)
    every = settings.refresh_s if live and settings.refresh_s > 0 else None
    if every:
        refresh_note = f"Auto-refresh every {settings.refresh_s:g} s (the data is live)."
    elif settings.refresh_s <= 0:
        refresh_note = "Auto-refresh off (--refresh 0)."
    else:
        refresh_note = "Auto-refresh paused: nothing shown here is running."
    st.sidebar.caption(refresh_note)
    st.fragment(run_every=every)(_body)(settings, choice, ids, live)


main()
