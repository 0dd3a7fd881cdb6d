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
from experiment.results.report_model import MetricRow, ModelNotice, Report, build_report

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


def render_csv(report: Report) -> str:
    """One row per arm × metric × analysis (fixed_horizon, sequential, cuped)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in report.metric_rows:
        writer.writerow({k: "" if v is None else v for k, v in dataclasses.asdict(row).items()})
    return buffer.getvalue()


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
    out += ["", "## Methods", ""]
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
        "<h2>Lift over time</h2>",
        _figure_html(report),
        "<h2>Metrics</h2>",
        _html_table(_METRIC_HEADERS, [_metric_cells(r) for r in report.metric_rows]),
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
    srm = report.srm
    console.print(f"sample ratio mismatch: p = {_num(srm.p_value)} ({'ALARM' if srm.alarm else 'no alarm'})")
    for note in notes:
        console.print(note)
    console.print(f"[bold]verdict: {_decision(report)}[/bold] " + escape(report.verdict.explanation))


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
