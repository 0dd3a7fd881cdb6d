"""Significance reports: the typed report rendered as md, html, json or csv, and the terminal summary.

The model and its builder live in `experiment.results.report_model` (re-exported here). Every renderer reads the
same `Report`, built once by `build_report`, so the formats, the terminal and the dashboard cannot disagree. The
JSON is `Report.to_dict()` with sorted keys: the same store and the same `as_of` give byte-identical JSON.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from experiment.core.definition import DEFAULT_CONTROL
from experiment.core.errors import ExperimentError
from experiment.results.report_model import (
    ArmsSection,
    MetricRow,
    ModelNotice,
    Report,
    SegmentDimension,
    SegmentsSection,
    build_report,
    short_versions,
)

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "FORMATS",
    "REPORTS_DIR",
    "Format",
    "Report",
    "build_report",
    "print_summary",
    "render",
    "render_csv",
    "render_html",
    "render_json",
    "render_md",
    "write_report",
]

logger = logging.getLogger(__name__)

Format = Literal["md", "html", "json", "csv"]
FORMATS: tuple[str, ...] = ("md", "html", "json", "csv")
#: Where reports go unless told otherwise (git-ignored): `abflow report` and the demo write here.
REPORTS_DIR = Path("reports")
_CSV_COLUMNS = [f.name for f in dataclasses.fields(MetricRow)]
#: Columns appended when a report has an arms or a segments section (a two-arm report keeps the columns above):
#: `section` tells the row's kind (`metrics`, `arm`, `arm_comparison`, `segment`, `heterogeneity`).
_CSV_EXTRA_COLUMNS = [
    "section",
    "baseline",
    "comparison",
    "dimension",
    "segment",
    "control_users",
    "treatment_users",
    "users",
    "weight",
    "conversion_rate",
    "model_version",
    "threshold",
    "prob_best",
    "q_statistic",
    "q_df",
    "i_squared",
    "summary",
]
_LABELS = {"fixed_horizon": "fixed-horizon", "sequential": "sequential (always valid)", "cuped": "CUPED"}


def render_json(report: Report) -> str:
    """Canonical JSON: sorted keys, 2-space indent, no NaN, trailing newline."""
    return json.dumps(report.to_dict(), sort_keys=True, indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def _num(value: float | Sequence[float | None] | None, kind: str = "g") -> str:
    if value is None:
        return "null"
    if isinstance(value, Sequence):
        return "[" + ", ".join(_num(v, kind) for v in value) + "]"
    if kind == "pct":
        return f"{value * 100:.2f} %"
    if kind == "p":
        return f"{value:.3g}"
    return f"{value:.4g}"


def _pct(value: float | None) -> str:
    """A fraction as a terminal percentage, e.g. `9.72%`."""
    return "null" if value is None else f"{value:.2%}"


def _decision(report: Report) -> str:
    """The verdict's decision as a heading reads it, e.g. `DONT SHIP`."""
    return report.verdict.decision.replace("_", " ").upper()


def _arms_csv_rows(arms: ArmsSection) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for a in arms.arms:
        rows.append(
            {
                "section": "arm",
                "arm": a.name,
                "metric": "conversion",
                "comparison": a.role,
                "users": a.users,
                "weight": a.weight,
                "conversion_rate": a.conversion_rate,
                "model_version": a.model_version,
                "threshold": a.threshold,
                "prob_best": a.prob_best,
                "reasons": "" if a.prob_best is not None else arms.prob_best_reasons,
            }
        )
    for c in arms.comparisons:
        rows.append(
            {
                "section": "arm_comparison",
                "arm": c.arm,
                "metric": c.metric,
                "role": "primary",
                "analysis": "fixed_horizon",
                "method": c.method,
                "control_value": c.baseline_value,
                "treatment_value": c.arm_value,
                "abs_diff": c.abs_diff,
                "abs_ci_lower": c.abs_ci_lower,
                "abs_ci_upper": c.abs_ci_upper,
                "rel_lift": c.rel_lift,
                "rel_ci_lower": c.rel_ci_lower,
                "rel_ci_upper": c.rel_ci_upper,
                "p_value": c.p_value,
                "p_value_holm": c.p_value_holm,
                "reasons": c.reasons,
                "baseline": c.baseline,
                "comparison": c.kind,
            }
        )
    return rows


def _segments_csv_rows(segments: SegmentsSection) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for d in segments.dimensions:
        for r in d.rows:
            rows.append(
                {
                    "section": "segment",
                    "arm": r.arm,
                    "metric": r.metric,
                    "role": "primary",
                    "analysis": "fixed_horizon",
                    "method": r.method,
                    "control_value": r.control_value,
                    "treatment_value": r.treatment_value,
                    "abs_diff": r.abs_diff,
                    "abs_ci_lower": r.abs_ci_lower,
                    "abs_ci_upper": r.abs_ci_upper,
                    "rel_lift": r.rel_lift,
                    "rel_ci_lower": r.rel_ci_lower,
                    "rel_ci_upper": r.rel_ci_upper,
                    "p_value": r.p_value,
                    "p_value_bh": r.p_value_bh,
                    "reasons": r.reasons,
                    "dimension": r.dimension,
                    "segment": r.segment,
                    "control_users": r.control_users,
                    "treatment_users": r.treatment_users,
                }
            )
        for h in d.heterogeneity:
            rows.append(
                {
                    "section": "heterogeneity",
                    "arm": h.arm,
                    "metric": h.metric,
                    "role": "primary",
                    "method": h.method,
                    "abs_diff": h.pooled_abs_diff,
                    "abs_ci_lower": h.pooled_abs_ci_lower,
                    "abs_ci_upper": h.pooled_abs_ci_upper,
                    "p_value": h.p_value,
                    "reasons": h.reasons,
                    "dimension": h.dimension,
                    "q_statistic": h.statistic,
                    "q_df": h.df,
                    "i_squared": h.i_squared,
                    "summary": h.summary,
                }
            )
    return rows


def render_csv(report: Report) -> str:
    """One row per arm × metric × analysis (fixed_horizon, sequential, cuped).

    A report with an arms or a segments section appends their rows, marked by an added `section` column (and the
    columns only they fill); the metric rows keep their values in the same columns.
    """
    extended = report.arms is not None or report.segments is not None
    buffer = io.StringIO()
    columns = _CSV_COLUMNS + (_CSV_EXTRA_COLUMNS if extended else [])
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", restval="")
    writer.writeheader()
    for row in report.metric_rows:
        values = {k: "" if v is None else v for k, v in dataclasses.asdict(row).items()}
        writer.writerow({**values, "section": "metrics"} if extended else values)
    extra: list[dict[str, object]] = []
    if report.arms is not None:
        extra += _arms_csv_rows(report.arms)
    if report.segments is not None:
        extra += _segments_csv_rows(report.segments)
    for line in extra:
        writer.writerow({k: "" if v is None else v for k, v in line.items()})
    return buffer.getvalue()


def _kind(metric: str) -> str:
    return "pct" if metric == "conversion" else "g"


def _threshold(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def _arms_intro(arms: ArmsSection) -> str:
    srm = arms.srm
    return (
        f"Every model arm against {arms.control} and each pair of model arms on {arms.metric} (fixed-horizon; "
        f"a pair reads later-declared − earlier-declared), Holm-adjusted across these {len(arms.comparisons)} "
        "comparisons. P(best): probability that the arm has the highest conversion rate, from Beta(1 + "
        f"conversions, 1 + non-conversions) posteriors. Sample-ratio mismatch across all {len(arms.arms)} arms: "
        f"p = {_num(srm.p_value, 'p')} ({'ALARM' if srm.alarm else 'ok'})."
    )


def _arm_table_rows(arms: ArmsSection) -> list[list[str]]:
    short = short_versions([a.model_version for a in arms.arms])
    return [
        [
            a.name,
            a.role,
            "—" if a.model_version is None else short[a.model_version],
            _threshold(a.threshold),
            str(a.users),
            _num(a.conversion_rate, "pct"),
            _num(a.prob_best, "p"),
        ]
        for a in arms.arms
    ]


_ARM_HEADERS = ["arm", "role", "model version", "threshold", "users", "conversion rate", "P(best)"]
_ARM_COMPARISON_HEADERS = ["comparison", "baseline", "arm", "abs diff [CI]", "rel lift [CI]", "p", "p Holm"]


def _arm_comparison_rows(arms: ArmsSection) -> list[list[str]]:
    kind = _kind(arms.metric)
    return [
        [
            c.label,
            _num(c.baseline_value, kind),
            _num(c.arm_value, kind),
            f"{_num(c.abs_diff, kind)} [{_num(c.abs_ci_lower, kind)}, {_num(c.abs_ci_upper, kind)}]",
            f"{_num(c.rel_lift, 'pct')} [{_num(c.rel_ci_lower, 'pct')}, {_num(c.rel_ci_upper, 'pct')}]",
            _num(c.p_value, "p"),
            _num(c.p_value_holm, "p"),
        ]
        for c in arms.comparisons
    ]


def _md_table(headers: list[str], aligns: str, rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in aligns) + "|"]
    out += ["| " + " | ".join(cells) + " |" for cells in rows]
    return out


def _md_arms(arms: ArmsSection) -> list[str]:
    return [
        "## Arms",
        "",
        _arms_intro(arms),
        "",
        *_md_table(_ARM_HEADERS, "lllrrrr", _arm_table_rows(arms)),
        "",
        *_md_table(_ARM_COMPARISON_HEADERS, "lrrllrr", _arm_comparison_rows(arms)),
        "",
    ]


def _segments_intro(segments: SegmentsSection) -> str:
    return (
        f"Lift of {segments.metric} by segment: each treatment arm against {segments.control} among the segment's "
        "users (fixed-horizon), by the segment of each customer's first exposure (`unknown`: not recorded). "
        "p BH: Benjamini–Hochberg across one arm's segments of a dimension. Whether the lift differs between "
        "segments: Cochran's Q (inverse-variance weights; I² = share of the variation beyond chance)."
    )


_SEGMENT_HEADERS = [
    "segment",
    "arm",
    "users control",
    "users arm",
    "control",
    "arm value",
    "abs diff [CI]",
    "rel lift [CI]",
    "p",
    "p BH",
    "note",
]


def _segment_rows(d: SegmentDimension) -> list[list[str]]:
    kind = _kind(d.metric)
    return [
        [
            r.segment,
            r.arm,
            str(r.control_users),
            str(r.treatment_users),
            _num(r.control_value, kind),
            _num(r.treatment_value, kind),
            f"{_num(r.abs_diff, kind)} [{_num(r.abs_ci_lower, kind)}, {_num(r.abs_ci_upper, kind)}]",
            f"{_num(r.rel_lift, 'pct')} [{_num(r.rel_ci_lower, 'pct')}, {_num(r.rel_ci_upper, 'pct')}]",
            _num(r.p_value, "p"),
            _num(r.p_value_bh, "p"),
            r.note,
        ]
        for r in d.rows
    ]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def _md_segments(segments: SegmentsSection) -> list[str]:
    out = ["## Segments", "", _segments_intro(segments), ""]
    if not segments.dimensions:
        out += ["No segment dimension is recorded for this experiment yet.", ""]
    for d in segments.dimensions:
        out += [f"### {d.dimension}", ""]
        if d.note:
            out += [d.note[0].upper() + d.note[1:] + ".", ""]
            continue
        out += [f"- {h.summary}" for h in d.heterogeneity]
        cells = [[_md_cell(c) for c in row] for row in _segment_rows(d)]
        out += ["", *_md_table(_SEGMENT_HEADERS, "llrrrrllrrl", cells)]
        out.append("")
    return out


def render_md(report: Report) -> str:
    """A Markdown report for humans (and for pasting into a ticket)."""
    d, a, s, v = report.experiment, report.analysis, report.sample_size, report.verdict
    out = [f"# Experiment report: {d.name} (`{d.id}` v{d.version})", ""]
    unusable = report.model_unusable
    if unusable is not None:
        out += [f"> **{unusable.message}** (reported by the job at {unusable.ts_iso})", ""]
    out += [
        f"**Verdict: {_decision(report)}**" + (f" — arm `{v.arm}`" if v.arm else ""),
        "",
        v.explanation,
        "",
    ]
    out += [
        "## Definition",
        "",
        f"- Hypothesis: {d.hypothesis}",
        f"- Owner: {d.owner}; status: {d.status}",
        "- Variants: "
        + ", ".join(f"{x.name} ({x.weight:g}{', control' if x.name == a.control else ''})" for x in d.variants),
        f"- Primary metric: {d.primary_metric}; secondary: {list(d.secondary_metrics)}; "
        f"guardrails: {list(d.guardrail_metrics)}",
        f"- As of: {report.as_of_iso or 'all data'}; data through: {report.data_through}",
        "",
    ]
    out += [
        "## Sample size",
        "",
        "| variant | users | conversions | conversion rate | revenue / user |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in report.variants:
        out.append(
            f"| {row.name} | {row.users} | {row.conversions} | {_num(row.conversion_rate, 'pct')} | "
            f"{_num(row.revenue_per_user)} |"
        )
    progress = "n/a" if s.progress is None else f"{s.progress:.0%}"
    out += [
        "",
        f"Total {s.total} of planned {s.planned or 'n/a'} ({progress}; source: {s.planned_source}).",
        "",
    ]
    srm = report.srm
    out += [
        "## Sample-ratio mismatch",
        "",
        f"Chi-square p = {_num(srm.p_value, 'p')} (alarm below {srm.threshold}): **{'ALARM' if srm.alarm else 'ok'}**",
        "",
    ]
    if report.arms is not None:
        out += _md_arms(report.arms)
    out += [
        "## Metrics",
        "",
        "| arm | metric | role | analysis | control | treatment | abs diff [CI] | rel lift [CI] | p | p Holm | p BH |",
        "|---|---|---|---|---:|---:|---|---|---:|---:|---:|",
    ]
    for r in report.metric_rows:
        kind = "pct" if r.metric == "conversion" else "g"
        out.append(
            f"| {r.arm} | {r.metric} | {r.role} | {_LABELS[r.analysis]} | "
            f"{_num(r.control_value, kind)} | {_num(r.treatment_value, kind)} | "
            f"{_num(r.abs_diff, kind)} [{_num(r.abs_ci_lower, kind)}, {_num(r.abs_ci_upper, kind)}] | "
            f"{_num(r.rel_lift, 'pct')} [{_num(r.rel_ci_lower, 'pct')}, {_num(r.rel_ci_upper, 'pct')}] | "
            f"{_num(r.p_value, 'p')} | {_num(r.p_value_holm, 'p')} | {_num(r.p_value_bh, 'p')} |"
        )
    out += ["", "## Bayesian and CUPED", ""]
    for result in report.results:
        if result.bayes is not None:
            b = result.bayes
            out.append(
                f"- `{result.arm}` {result.metric}: P(treatment beats control) = "
                f"{_num(b.prob_treatment_beats_control, 'p')}; expected loss if shipped = "
                f"{_num(b.expected_loss_treatment)}"
            )
        out.append(
            f"- `{result.arm}` {result.metric}: CUPED variance reduction = "
            f"{_num(result.cuped.variance_reduction, 'pct')}, theta = {_num(result.cuped.theta)}"
        )
    power = a.achievable_mde
    if power is not None and power.mde_rel is not None:
        out.append(f"- Minimum detectable relative lift now (80 % power): {_num(power.mde_rel, 'pct')}")
    out.append("")
    if report.segments is not None:
        out += _md_segments(report.segments)
    out += ["## Methods", ""]
    out += [f"- **{k}**: {text}" for k, text in sorted(a.methods.items())]
    return "\n".join(out) + "\n"


def _figure_html(report: Report) -> str:
    from experiment.results.lift_chart import lift_over_time_figure

    fig = lift_over_time_figure(report.lift_over_time, report.analysis.treatments)
    return str(fig.to_html(include_plotlyjs=True, full_html=False, div_id="lift-over-time"))


def _html_table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _unusable_html(unusable: ModelNotice | None) -> str:
    if unusable is None:
        return ""
    return (
        f"<div class='model-unusable'><p>{html.escape(unusable.message)}</p>"
        f"<p>Reported by the job at {html.escape(unusable.ts_iso)}.</p></div>"
    )


_METRIC_HEADERS = [
    "arm",
    "metric",
    "role",
    "analysis",
    "control",
    "treatment",
    "abs diff",
    "abs CI",
    "rel lift",
    "rel CI",
    "p",
    "p Holm",
    "p BH",
    "P(beat)",
]


def _metric_cells(r: MetricRow) -> list[str]:
    return [
        r.arm,
        r.metric,
        r.role,
        _LABELS[r.analysis],
        _num(r.control_value),
        _num(r.treatment_value),
        _num(r.abs_diff),
        _num([r.abs_ci_lower, r.abs_ci_upper]),
        _num(r.rel_lift, "pct"),
        _num([r.rel_ci_lower, r.rel_ci_upper], "pct"),
        _num(r.p_value, "p"),
        _num(r.p_value_holm, "p"),
        _num(r.p_value_bh, "p"),
        _num(r.prob_treatment_beats_control, "p"),
    ]


def _html_arms(arms: ArmsSection) -> str:
    e = html.escape
    return "\n".join(
        [
            "<h2>Arms</h2>",
            f"<p>{e(_arms_intro(arms))}</p>",
            _html_table(_ARM_HEADERS, _arm_table_rows(arms)),
            _html_table(_ARM_COMPARISON_HEADERS, _arm_comparison_rows(arms)),
        ]
    )


def _html_segments(segments: SegmentsSection) -> str:
    from experiment.results.forest_plot import segment_forest_svg

    e = html.escape
    parts = ["<h2>Segments</h2>", f"<p>{e(_segments_intro(segments))}</p>"]
    if not segments.dimensions:
        parts.append("<p>No segment dimension is recorded for this experiment yet.</p>")
    for d in segments.dimensions:
        parts.append(f"<h3>{e(d.dimension)}</h3>")
        if d.note:
            parts.append(f"<p>{e(d.note[0].upper() + d.note[1:])}.</p>")
            continue
        parts.append("<ul>" + "".join(f"<li>{e(h.summary)}</li>" for h in d.heterogeneity) + "</ul>")
        parts.append(f"<div class='forest'>{segment_forest_svg(d, alpha=segments.alpha)}</div>")
        parts.append(_html_table(_SEGMENT_HEADERS, _segment_rows(d)))
    return "\n".join(parts)


def render_html(report: Report) -> str:
    """A self-contained HTML page (plotly.js inlined) with the lift-over-time chart and the tables."""
    d, a, s, v = report.experiment, report.analysis, report.sample_size, report.verdict
    e = html.escape
    colour = {"ship": "#1a7f37", "dont_ship": "#cf222e", "keep_running": "#9a6700"}[v.decision]
    srm = report.srm
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>abflow report {e(d.id)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}"
        f".verdict{{border-left:6px solid {colour};padding:0.5em 1em;background:#f6f8fa}}"
        ".model-unusable{border-left:6px solid #cf222e;padding:0.5em 1em;background:#ffebe9;font-weight:bold}",
        "</style></head><body>",
        f"<h1>Experiment report: {e(d.name)} <code>{e(d.id)}</code> v{d.version}</h1>",
        _unusable_html(report.model_unusable),
        f"<div class='verdict'><h2>Verdict: {e(_decision(report))}"
        f"{' — ' + e(v.arm) if v.arm else ''}</h2><p>{e(v.explanation)}</p></div>",
        "<h2>Definition</h2>",
        _html_table(
            ["field", "value"],
            [
                ["hypothesis", d.hypothesis],
                ["owner", d.owner],
                ["status", d.status],
                ["variants", ", ".join(f"{x.name} ({x.weight:g})" for x in d.variants)],
                ["primary metric", d.primary_metric],
                ["secondary metrics", ", ".join(d.secondary_metrics)],
                ["guardrail metrics", ", ".join(d.guardrail_metrics)],
                ["as of", report.as_of_iso or "all data"],
                ["data through", str(report.data_through)],
            ],
        ),
        "<h2>Sample size</h2>",
        _html_table(
            ["variant", "users", "conversions", "conversion rate", "revenue / user"],
            [
                [
                    row.name,
                    str(row.users),
                    str(row.conversions),
                    _num(row.conversion_rate, "pct"),
                    _num(row.revenue_per_user),
                ]
                for row in report.variants
            ],
        ),
        f"<p>Total {s.total} of planned {s.planned or 'n/a'} "
        f"({'n/a' if s.progress is None else format(s.progress, '.0%')}).</p>",
        "<h2>Sample-ratio mismatch</h2>",
        f"<p>Chi-square p = {_num(srm.p_value, 'p')} (alarm below {srm.threshold}): "
        f"<b>{'ALARM' if srm.alarm else 'ok'}</b></p>",
        *([] if report.arms is None else [_html_arms(report.arms)]),
        "<h2>Lift over time</h2>",
        _figure_html(report),
        "<h2>Metrics</h2>",
        _html_table(_METRIC_HEADERS, [_metric_cells(r) for r in report.metric_rows]),
        *([] if report.segments is None else [_html_segments(report.segments)]),
        "<h2>Methods</h2><ul>",
        "".join(f"<li><b>{e(k)}</b>: {e(t)}</li>" for k, t in sorted(a.methods.items())),
        "</ul></body></html>",
    ]
    return "\n".join(parts) + "\n"


def render(report: Report, fmt: str) -> str:
    """Render the report in one of `FORMATS`."""
    renderers = {"md": render_md, "html": render_html, "json": render_json, "csv": render_csv}
    if fmt not in renderers:
        raise ExperimentError(f"report format must be one of {list(FORMATS)}; got {fmt!r}")
    return renderers[fmt](report)


def print_summary(console: Console, report: Report, *, notes: Sequence[str] = ()) -> None:
    """Print the terminal summary of a report: an unusable model first, then arms, comparisons, SRM, verdict.

    Shared by `abflow report` and the demo so both show the same numbers the same way. `notes` (rich markup) are
    printed just before the verdict; the demo adds the ground-truth lift there.
    """
    from rich.markup import escape
    from rich.table import Table

    control = report.analysis.control
    if report.model_unusable is not None:
        console.print(f"[bold red]{escape(report.model_unusable.message)}[/bold red]")
    table = Table(title=f"{report.experiment.id}: {report.experiment.primary_metric} (primary metric)")
    for column in ("variant", "users", "conversions", "rate", "revenue / user"):
        table.add_column(column, justify="right" if column != "variant" else "left")
    for row in report.variants:
        table.add_row(
            f"{row.name} (control)" if row.name == control and row.name != DEFAULT_CONTROL else row.name,
            f"{row.users:,}",
            f"{row.conversions:,}",
            _pct(row.conversion_rate),
            _num(row.revenue_per_user),
        )
    console.print(table)
    for result in report.results:
        fixed = result.fixed_horizon
        ci = fixed.abs_ci
        console.print(
            escape(
                f"{result.arm} vs {control}, {result.metric} ({result.role}): abs diff "
                f"{_num(fixed.abs_diff)} 95% CI [{_num(None if ci is None else ci.lower)}, "
                f"{_num(None if ci is None else ci.upper)}], relative "
                f"{_pct(fixed.rel_lift)}, p = {_num(fixed.p_value)} ({fixed.method})"
            )
        )
    if report.arms is not None:
        _print_arms(console, report.arms)
    srm = report.srm
    console.print(f"sample ratio mismatch: p = {_num(srm.p_value)} ({'ALARM' if srm.alarm else 'no alarm'})")
    if report.segments is not None:
        for d in report.segments.dimensions:
            lines = [d.note or ""] if d.note else [h.summary for h in d.heterogeneity]
            for line in lines:
                console.print(escape(f"segments by {d.dimension}: {line}"))
    for note in notes:
        console.print(note)
    console.print(f"[bold]verdict: {_decision(report)}[/bold] " + escape(report.verdict.explanation))


def _print_arms(console: Console, arms: ArmsSection) -> None:
    """The arms' models and P(best), then the between-arm comparisons (each arm vs control is printed above)."""
    from rich.markup import escape

    short = short_versions([a.model_version for a in arms.arms])
    for a in arms.arms:
        what = (
            "control, not scored"
            if a.model_version is None
            else (f"model {short[a.model_version]}, threshold {_threshold(a.threshold)}")
        )
        console.print(escape(f"arm {a.name} ({what}): P(best) = {_num(a.prob_best)}"))
    for c in arms.comparisons:
        if c.kind != "between_arms":
            continue
        console.print(
            escape(
                f"{c.label}, {c.metric}: abs diff {_num(c.abs_diff)} {1 - arms.alpha:.0%} CI [{_num(c.abs_ci_lower)}, "
                f"{_num(c.abs_ci_upper)}], p = {_num(c.p_value)}, Holm p = {_num(c.p_value_holm)} "
                f"(across all {len(arms.comparisons)} arm comparisons)"
            )
        )


def write_report(report: Report, fmt: str, out: str | Path) -> Path:
    """Render and write; creates the parent directory. Returns the path written."""
    text = render(report, fmt)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    logger.info(
        "report written experiment_id=%s format=%s path=%s bytes=%d", report.experiment.id, fmt, path, len(text)
    )
    return path
