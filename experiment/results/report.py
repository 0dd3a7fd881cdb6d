"""Significance reports: one report model built from the store and the definition.

The model is rendered as md, html, json or csv.

Reproducibility is a feature: the model contains no "now" (only the requested `as_of` and the data's own
times),
every mapping is emitted with sorted keys and the statistics are exact integer sums, so the same store and the
same
`as_of` give byte-identical JSON.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from experiment.core.definition import DEFAULT_CONTROL
from experiment.core.errors import ExperimentError
from experiment.results.store import ResultsStore, to_epoch_ms
from experiment.stats.analysis import AnalysisConfig, analyse
from experiment.stats.proportions import compare_proportions
from experiment.stats.sequential import DEFAULT_TUNING_USERS, compare_sequential
from experiment.stats.sufficient import VariantStats

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "FORMATS",
    "REPORTS_DIR",
    "Format",
    "build_report",
    "print_summary",
    "render",
    "render_csv",
    "render_html",
    "render_json",
    "render_md",
    "write_report",
]

log = logging.getLogger(__name__)

Format = Literal["md", "html", "json", "csv"]
FORMATS: tuple[str, ...] = ("md", "html", "json", "csv")
REPORT_VERSION = 1
#: Where reports go unless told otherwise (git-ignored): `abflow report` and the demo write here.
REPORTS_DIR = Path("reports")


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat().replace("+00:00", "Z")


def _stats_dict(stats: VariantStats) -> dict[str, Any]:
    return {
        "users": stats.users,
        "conversions": stats.conversions,
        "conversion_rate": stats.conversion_rate,
        "revenue": stats.revenue_sum,
        "revenue_per_user": stats.revenue_per_user,
    }


def build_report(store: ResultsStore, experiment_id: str, *, as_of: Any = None, alpha: float = 0.05) -> dict[str, Any]:
    """The report model (plain JSON-ready dict) of one experiment as of a time (None = all data)."""
    definition = store.experiment(experiment_id)
    if definition is None:
        known = [d.get("id") for d in store.experiments()]
        raise ExperimentError(
            f"experiment '{experiment_id}' is not in the results store {store.path}; known experiments: {known}"
        )
    as_of_ms = to_epoch_ms(as_of)
    config = AnalysisConfig.from_definition(definition, alpha=alpha)
    stats = store.variant_stats(experiment_id, as_of=as_of_ms)
    daily = store.daily_stats(experiment_id, as_of=as_of_ms)
    history = [snapshot for _, snapshot in daily]
    analysis = analyse(config, stats, history)

    lift: list[dict[str, Any]] = []
    tuning = config.tuning_users or analysis.planned_sample_size or DEFAULT_TUNING_USERS
    for arm in config.treatments:
        snapshots: list[tuple[VariantStats, VariantStats]] = []
        for day, snapshot in daily:
            pair = (snapshot.get(config.control, VariantStats()), snapshot.get(arm, VariantStats()))
            snapshots.append(pair)
            if config.primary_metric == "conversion":
                fixed = compare_proportions(*pair, alpha=alpha)
            else:
                from experiment.stats.means import compare_revenue

                fixed = compare_revenue(*pair, alpha=alpha)
            seq = compare_sequential(snapshots, alpha=alpha, tuning_users=tuning, metric=config.primary_metric)
            lift.append(
                {
                    "date": day.isoformat(),
                    "arm": arm,
                    "metric": config.primary_metric,
                    "users_control": pair[0].users,
                    "users_treatment": pair[1].users,
                    "rel_lift": fixed.rel_lift,
                    "rel_ci": fixed.to_dict()["rel_ci"],
                    "rel_ci_sequential": seq.to_dict()["rel_ci"],
                    "p_value": fixed.p_value,
                    "p_value_sequential": seq.p_value,
                }
            )
    target = analysis.planned_sample_size
    return {
        "report_version": REPORT_VERSION,
        "experiment": definition,
        "model_unusable": _model_unusable(store, definition),
        "as_of": as_of_ms,
        "as_of_iso": _iso(as_of_ms),
        "data_through": _iso(store.last_event_ts(experiment_id, as_of=as_of_ms)),
        "sample_size": {
            "users": analysis.users,
            "total": analysis.total_users,
            "planned": target,
            "planned_source": analysis.target_source,
            "progress": None if not target else analysis.total_users / target,
        },
        "variants": {name: _stats_dict(s) for name, s in stats.items()},
        "analysis": analysis.to_dict(),
        "verdict": analysis.to_dict()["verdict"],
        "lift_over_time": lift,
    }


def _model_unusable(store: ResultsStore, definition: dict[str, Any]) -> dict[str, Any] | None:
    """The job's refusal of the experiment's current model, or None: it explains an experiment with no users.

    Only the current model version counts (an older, replaced model's problem is history), and only the newest
    record of it (a repaired model reported `model_ready` later clears it).
    """
    model = definition.get("model")
    version = model.get("model_version") if isinstance(model, dict) else None
    health = store.unusable_model(str(definition["id"]), version)
    if health is None:
        return None
    return {**health.to_dict(), "ts_iso": _iso(health.ts), "message": health.headline()}


# -- renderers
# --------------------------------------------------------------------------------------------------


def render_json(model: dict[str, Any]) -> str:
    """Canonical JSON: sorted keys, 2-space indent, no NaN, trailing newline."""
    return json.dumps(model, sort_keys=True, indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def _num(value: Any, kind: str = "g") -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ", ".join(_num(v, kind) for v in value) + "]"
    if kind == "pct":
        return f"{value * 100:.2f} %"
    if kind == "p":
        return f"{value:.3g}"
    return f"{value:.4g}"


def _pct(value: float | None) -> str:
    """A fraction as a terminal percentage, e.g. `9.72%`."""
    return "null" if value is None else f"{value:.2%}"


def _rows(model: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat rows: one per arm × metric × method (the CSV and the tables)."""
    rows = []
    for r in model["analysis"]["results"]:
        for method_key in ("fixed_horizon", "sequential", "cuped"):
            c = r[method_key]
            abs_ci = c.get("abs_ci") or [None, None]
            rel_ci = c.get("rel_ci") or [None, None]
            rows.append(
                {
                    "arm": r["arm"],
                    "metric": r["metric"],
                    "role": r["role"],
                    "analysis": method_key,
                    "method": c["method"],
                    "control_value": c["control_value"],
                    "treatment_value": c["treatment_value"],
                    "abs_diff": c["abs_diff"],
                    "abs_ci_lower": abs_ci[0],
                    "abs_ci_upper": abs_ci[1],
                    "rel_lift": c["rel_lift"],
                    "rel_ci_lower": rel_ci[0],
                    "rel_ci_upper": rel_ci[1],
                    "p_value": c["p_value"],
                    "p_value_holm": r["p_value_holm"] if method_key == "fixed_horizon" else None,
                    "p_value_bh": r["p_value_bh"] if method_key == "fixed_horizon" else None,
                    "variance_reduction": c.get("variance_reduction"),
                    "prob_treatment_beats_control": (r["bayes"] or {}).get("prob_treatment_beats_control")
                    if method_key == "fixed_horizon"
                    else None,
                    "reasons": ";".join(f"{k}={v}" for k, v in sorted(c["reasons"].items())),
                }
            )
    return rows


def render_csv(model: dict[str, Any]) -> str:
    """One row per arm × metric × analysis (fixed_horizon, sequential, cuped)."""
    rows = _rows(model)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["arm"], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()


_LABELS = {"fixed_horizon": "fixed-horizon", "sequential": "sequential (always valid)", "cuped": "CUPED"}


def render_md(model: dict[str, Any]) -> str:
    """A Markdown report for humans (and for pasting into a ticket)."""
    d, a, s = model["experiment"], model["analysis"], model["sample_size"]
    v = model["verdict"]
    out = [f"# Experiment report: {d.get('name', d['id'])} (`{d['id']}` v{d.get('version')})", ""]
    unusable = model.get("model_unusable")
    if unusable:
        out += [f"> **{unusable['message']}** (reported by the job at {unusable['ts_iso']})", ""]
    out += [
        f"**Verdict: {v['decision'].replace('_', ' ').upper()}**" + (f" — arm `{v['arm']}`" if v["arm"] else ""),
        "",
        v["explanation"],
        "",
    ]
    out += [
        "## Definition",
        "",
        f"- Hypothesis: {d.get('hypothesis', '')}",
        f"- Owner: {d.get('owner', '')}; status: {d.get('status')}",
        "- Variants: "
        + ", ".join(
            f"{x['name']} ({x['weight']:g}{', control' if x['name'] == a['control'] else ''})" for x in d["variants"]
        ),
        f"- Primary metric: {d.get('primary_metric')}; secondary: {d.get('secondary_metrics') or []}; "
        f"guardrails: {d.get('guardrail_metrics') or []}",
        f"- As of: {model['as_of_iso'] or 'all data'}; data through: {model['data_through']}",
        "",
    ]
    out += [
        "## Sample size",
        "",
        "| variant | users | conversions | conversion rate | revenue / user |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, st in model["variants"].items():
        out.append(
            f"| {name} | {st['users']} | {st['conversions']} | {_num(st['conversion_rate'], 'pct')} | "
            f"{_num(st['revenue_per_user'])} |"
        )
    progress = "n/a" if s["progress"] is None else f"{s['progress']:.0%}"
    out += [
        "",
        f"Total {s['total']} of planned {s['planned'] or 'n/a'} ({progress}; source: {s['planned_source']}).",
        "",
    ]
    srm = a["srm"]
    out += [
        "## Sample-ratio mismatch",
        "",
        f"Chi-square p = {_num(srm['p_value'], 'p')} (alarm below {srm['threshold']}): "
        f"**{'ALARM' if srm['alarm'] else 'ok'}**",
        "",
    ]
    out += [
        "## Metrics",
        "",
        "| arm | metric | role | analysis | control | treatment | abs diff [CI] | rel lift [CI] | p | p Holm | p BH |",
        "|---|---|---|---|---:|---:|---|---|---:|---:|---:|",
    ]
    for r in _rows(model):
        kind = "pct" if r["metric"] == "conversion" else "g"
        out.append(
            f"| {r['arm']} | {r['metric']} | {r['role']} | {_LABELS[r['analysis']]} | "
            f"{_num(r['control_value'], kind)} | {_num(r['treatment_value'], kind)} | "
            f"{_num(r['abs_diff'], kind)} "
            f"[{_num(r['abs_ci_lower'], kind)}, {_num(r['abs_ci_upper'], kind)}] | "
            f"{_num(r['rel_lift'], 'pct')} "
            f"[{_num(r['rel_ci_lower'], 'pct')}, {_num(r['rel_ci_upper'], 'pct')}] | "
            f"{_num(r['p_value'], 'p')} | {_num(r['p_value_holm'], 'p')} | {_num(r['p_value_bh'], 'p')} |"
        )
    out += ["", "## Bayesian and CUPED", ""]
    for r in a["results"]:
        if r["bayes"]:
            b = r["bayes"]
            out.append(
                f"- `{r['arm']}` {r['metric']}: P(treatment beats control) = "
                f"{_num(b['prob_treatment_beats_control'], 'p')}; expected loss if shipped = "
                f"{_num(b['expected_loss_treatment'])}"
            )
        out.append(
            f"- `{r['arm']}` {r['metric']}: CUPED variance reduction = "
            f"{_num(r['cuped']['variance_reduction'], 'pct')}, theta = {_num(r['cuped']['theta'])}"
        )
    power = a.get("achievable_mde")
    if power and power.get("mde_rel") is not None:
        out.append(f"- Minimum detectable relative lift now (80 % power): {_num(power['mde_rel'], 'pct')}")
    out += ["", "## Methods", ""]
    out += [f"- **{k}**: {text}" for k, text in sorted(a["methods"].items())]
    return "\n".join(out) + "\n"


def _figure_html(model: dict[str, Any]) -> str:
    from experiment.results.lift_chart import lift_over_time_figure

    fig = lift_over_time_figure(model["lift_over_time"], model["analysis"]["treatments"])
    return fig.to_html(include_plotlyjs=True, full_html=False, div_id="lift-over-time")


def _html_table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _unusable_html(unusable: dict[str, Any] | None) -> str:
    if not unusable:
        return ""
    return (
        f"<div class='model-unusable'><p>{html.escape(unusable['message'])}</p>"
        f"<p>Reported by the job at {html.escape(str(unusable['ts_iso']))}.</p></div>"
    )


def render_html(model: dict[str, Any]) -> str:
    """A self-contained HTML page (plotly.js inlined) with the lift-over-time chart and the tables."""
    d, a, s, v = model["experiment"], model["analysis"], model["sample_size"], model["verdict"]
    e = html.escape
    colour = {"ship": "#1a7f37", "dont_ship": "#cf222e", "keep_running": "#9a6700"}[v["decision"]]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>abflow report {e(d['id'])}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}"
        f".verdict{{border-left:6px solid {colour};padding:0.5em 1em;background:#f6f8fa}}"
        ".model-unusable{border-left:6px solid #cf222e;padding:0.5em 1em;background:#ffebe9;font-weight:bold}",
        "</style></head><body>",
        f"<h1>Experiment report: {e(str(d.get('name', d['id'])))} <code>{e(d['id'])}</code> v{d.get('version')}</h1>",
        _unusable_html(model.get("model_unusable")),
        f"<div class='verdict'><h2>Verdict: {e(v['decision'].replace('_', ' ').upper())}"
        f"{' — ' + e(v['arm']) if v['arm'] else ''}</h2><p>{e(v['explanation'])}</p></div>",
        "<h2>Definition</h2>",
        _html_table(
            ["field", "value"],
            [
                ["hypothesis", str(d.get("hypothesis", ""))],
                ["owner", str(d.get("owner", ""))],
                ["status", str(d.get("status"))],
                ["variants", ", ".join(f"{x['name']} ({x['weight']:g})" for x in d["variants"])],
                ["primary metric", str(d.get("primary_metric"))],
                ["secondary metrics", ", ".join(d.get("secondary_metrics") or [])],
                ["guardrail metrics", ", ".join(d.get("guardrail_metrics") or [])],
                ["as of", model["as_of_iso"] or "all data"],
                ["data through", str(model["data_through"])],
            ],
        ),
        "<h2>Sample size</h2>",
        _html_table(
            ["variant", "users", "conversions", "conversion rate", "revenue / user"],
            [
                [
                    n,
                    str(st["users"]),
                    str(st["conversions"]),
                    _num(st["conversion_rate"], "pct"),
                    _num(st["revenue_per_user"]),
                ]
                for n, st in model["variants"].items()
            ],
        ),
        f"<p>Total {s['total']} of planned {s['planned'] or 'n/a'} "
        f"({'n/a' if s['progress'] is None else format(s['progress'], '.0%')}).</p>",
        "<h2>Sample-ratio mismatch</h2>",
        f"<p>Chi-square p = {_num(a['srm']['p_value'], 'p')} (alarm below {a['srm']['threshold']}): "
        f"<b>{'ALARM' if a['srm']['alarm'] else 'ok'}</b></p>",
        "<h2>Lift over time</h2>",
        _figure_html(model),
        "<h2>Metrics</h2>",
        _html_table(
            [
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
            ],
            [
                [
                    r["arm"],
                    r["metric"],
                    r["role"],
                    _LABELS[r["analysis"]],
                    _num(r["control_value"]),
                    _num(r["treatment_value"]),
                    _num(r["abs_diff"]),
                    _num([r["abs_ci_lower"], r["abs_ci_upper"]]),
                    _num(r["rel_lift"], "pct"),
                    _num([r["rel_ci_lower"], r["rel_ci_upper"]], "pct"),
                    _num(r["p_value"], "p"),
                    _num(r["p_value_holm"], "p"),
                    _num(r["p_value_bh"], "p"),
                    _num(r["prob_treatment_beats_control"], "p"),
                ]
                for r in _rows(model)
            ],
        ),
        "<h2>Methods</h2><ul>",
        "".join(f"<li><b>{e(k)}</b>: {e(t)}</li>" for k, t in sorted(a["methods"].items())),
        "</ul></body></html>",
    ]
    return "\n".join(parts) + "\n"


def render(model: dict[str, Any], fmt: str) -> str:
    """Render the model in one of `FORMATS`."""
    renderers = {"md": render_md, "html": render_html, "json": render_json, "csv": render_csv}
    if fmt not in renderers:
        raise ExperimentError(f"report format must be one of {list(FORMATS)}; got {fmt!r}")
    return renderers[fmt](model)


def print_summary(console: Console, model: dict[str, Any], *, notes: Sequence[str] = ()) -> None:
    """Print the terminal summary of a report model: an unusable model first, then arms, comparisons, SRM, verdict.

    Shared by `abflow report` and the demo so both show the same numbers the same way. `notes` (rich markup) are
    printed just before the verdict; the demo adds the ground-truth lift there.
    """
    from rich.markup import escape
    from rich.table import Table

    analysis = model["analysis"]
    control = analysis["control"]
    unusable = model.get("model_unusable")
    if unusable:
        console.print(f"[bold red]{escape(unusable['message'])}[/bold red]")
    table = Table(title=f"{model['experiment']['id']}: {model['experiment'].get('primary_metric')} (primary metric)")
    for column in ("variant", "users", "conversions", "rate", "revenue / user"):
        table.add_column(column, justify="right" if column != "variant" else "left")
    for name, stats in model["variants"].items():
        table.add_row(
            f"{name} (control)" if name == control and name != DEFAULT_CONTROL else name,
            f"{stats['users']:,}",
            f"{stats['conversions']:,}",
            _pct(stats["conversion_rate"]),
            _num(stats["revenue_per_user"]),
        )
    console.print(table)
    for row in analysis["results"]:
        fixed = row["fixed_horizon"]
        ci = fixed.get("abs_ci") or [None, None]
        console.print(
            escape(
                f"{row['arm']} vs {control}, {row['metric']} ({row['role']}): abs diff "
                f"{_num(fixed['abs_diff'])} 95% CI [{_num(ci[0])}, {_num(ci[1])}], relative "
                f"{_pct(fixed['rel_lift'])}, p = {_num(fixed['p_value'])} ({fixed['method']})"
            )
        )
    srm = analysis["srm"]
    console.print(
        f"sample ratio mismatch: p = {_num(srm.get('p_value'))} ({'ALARM' if srm.get('alarm') else 'no alarm'})"
    )
    for note in notes:
        console.print(note)
    verdict = model["verdict"]
    console.print(
        f"[bold]verdict: {verdict['decision'].replace('_', ' ').upper()}[/bold] " + escape(verdict["explanation"])
    )


def write_report(model: dict[str, Any], fmt: str, out: str | Path) -> Path:
    """Render and write; creates the parent directory. Returns the path written."""
    text = render(model, fmt)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    log.info(
        "report written experiment_id=%s format=%s path=%s bytes=%d",
        model["experiment"]["id"],
        fmt,
        path,
        len(text),
    )
    return path
