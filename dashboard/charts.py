"""Plotly figures of the dashboard, built from the typed report, so they are pure and testable.

Every figure states its scale on its axis: absolute lift in the metric's unit (percentage points for
conversion, currency per user for revenue), relative lift as treatment / control − 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from experiment.results.forest_plot import ARM_COLOURS
from experiment.results.lift_chart import lift_over_time_figure as report_lift_figure
from experiment.results.report_model import LiftPoint, SegmentDimension
from experiment.stats.analysis import METHODS, ArmMetricResult
from experiment.stats.results import Comparison, Interval

__all__ = [
    "METHOD_LABELS",
    "forest_figure",
    "funnel_figure",
    "funnel_stages",
    "lift_over_time_figure",
    "score_histogram_figure",
    "segment_forest_figure",
]

METHOD_LABELS = {"fixed_horizon": "fixed-horizon", "sequential": "sequential (always valid)", "cuped": "CUPED"}
_METHOD_COLOURS = {"fixed_horizon": "#1f77b4", "sequential": "#ff7f0e", "cuped": "#2ca02c"}
_LAYOUT = {"template": "plotly_white", "margin": {"l": 10, "r": 10, "t": 50, "b": 10}}


def _errors(point: float, ci: Interval) -> tuple[float, float]:
    return ci.upper - point, point - ci.lower


def _absolute(c: Comparison) -> tuple[float | None, Interval | None]:
    return c.abs_diff, c.abs_ci


def _relative(c: Comparison) -> tuple[float | None, Interval | None]:
    return c.rel_lift, c.rel_ci


def forest_figure(results: Sequence[ArmMetricResult], metric: str) -> go.Figure:
    """Interval plot of one metric: a row per arm × method, absolute lift (left) and relative lift (right).

    `results` are the report's per arm × metric results; rows whose estimate is undefined are left out (the table
    beside the chart says why).
    """
    fig = make_subplots(
        rows=1,
        cols=2,
        shared_yaxes=True,
        horizontal_spacing=0.04,
        subplot_titles=(
            "absolute lift (treatment − control)",
            "relative lift (treatment / control − 1)",
        ),
    )
    for method in METHODS:
        label = METHOD_LABELS[method]
        for col, estimate in enumerate((_absolute, _relative), start=1):
            ys: list[str] = []
            xs: list[float] = []
            plus: list[float] = []
            minus: list[float] = []
            for r in results:
                if r.metric != metric:
                    continue
                point, ci = estimate(r.comparison(method))
                if point is None or ci is None:
                    continue
                up, down = _errors(point, ci)
                ys.append(f"{r.arm} · {label}")
                xs.append(point)
                plus.append(up)
                minus.append(down)
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="markers",
                    marker={"size": 10, "color": _METHOD_COLOURS[method]},
                    error_x={"type": "data", "symmetric": False, "array": plus, "arrayminus": minus},
                    name=label,
                    legendgroup=method,
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
        fig.add_vline(x=0, line_dash="dash", line_color="grey")
    fig.update_xaxes(tickformat=".2%" if metric == "conversion" else ".3g", row=1, col=1)
    fig.update_xaxes(tickformat=".1%", row=1, col=2)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(
        title=f"{metric}: lift with {METHOD_LABELS['fixed_horizon']}, sequential and CUPED confidence intervals",
        height=140 + 45 * max(1, len({r.arm for r in results if r.metric == metric}) * 3),
        legend={"orientation": "h", "y": -0.15},
        **_LAYOUT,
    )
    return fig


def lift_over_time_figure(points: Sequence[LiftPoint], treatments: Sequence[str]) -> go.Figure:
    """The report's lift-over-time figure (same traces and axes), sized for a dashboard column."""
    fig = report_lift_figure(points, treatments)
    fig.update_layout(height=380, **_LAYOUT)
    return fig


def score_histogram_figure(histogram: Sequence[Sequence[float]], threshold: float | None) -> go.Figure:
    """Model scores of treatment decisions in equal bins over [0, 1], with the show threshold marked."""
    centres = [(lo + hi) / 2 for lo, hi, _ in histogram]
    counts = [int(n) for _, _, n in histogram]
    width = (histogram[0][1] - histogram[0][0]) if histogram else 0.05
    fig = go.Figure(go.Bar(x=centres, y=counts, width=width * 0.95, marker_color="#6f42c1", name="decisions"))
    if threshold is not None:
        fig.add_vline(
            x=threshold,
            line_dash="dash",
            line_color="#cf222e",
            annotation_text=f"show ≥ {threshold:g}",
            annotation_position="bottom right",
        )
    fig.update_layout(
        title="Treatment scores (model P(show))",
        xaxis_title="score",
        yaxis_title="decisions",
        xaxis_range=[0, 1],
        height=320,
        **_LAYOUT,
    )
    return fig


def funnel_stages(funnel: Mapping[str, Mapping[str, int]]) -> list[tuple[str, int]]:
    """Totals over all variants: sessions decided → customers assigned → customers scored → customers shown."""
    return [
        ("sessions", sum(v["decisions"] for v in funnel.values())),
        ("assigned", sum(v["customers"] for v in funnel.values())),
        ("scored", sum(v.get("scored", 0) for v in funnel.values())),
        ("shown", sum(v["shown"] for v in funnel.values())),
    ]


def funnel_figure(funnel: Mapping[str, Mapping[str, int]]) -> go.Figure:
    """The decision funnel (totals over all variants; control customers are never scored)."""
    stages = funnel_stages(funnel)
    fig = go.Figure(
        go.Funnel(
            y=[name for name, _ in stages],
            x=[n for _, n in stages],
            texttemplate="%{value:,}<br>%{percentInitial:.0%}",
            marker={"color": ["#0969da", "#1f77b4", "#6f42c1", "#2ca02c"]},
        )
    )
    fig.update_layout(title="Decision funnel", height=320, **_LAYOUT)
    return fig


def segment_forest_figure(section: SegmentDimension, alpha: float = 0.05) -> go.Figure:
    """Forest plot of one segment dimension: per arm a trace with one point per segment (absolute lift and its CI).

    The same rows as the report's SVG forest plot (`experiment.results.forest_plot`), drawn with plotly: segments
    whose lift is undefined are left out (the table beside it says why); the dashed line is no effect.
    """
    fig = go.Figure()
    several = len(section.arms) > 1
    scale = 100.0 if section.metric == "conversion" else 1.0
    for index, arm in enumerate(section.arms):
        rows = [r for r in section.rows if r.arm == arm and r.abs_diff is not None]
        points = [r.abs_diff for r in rows if r.abs_diff is not None]
        fig.add_trace(
            go.Scatter(
                x=[v * scale for v in points],
                y=[f"{r.segment} · {arm}" if several else r.segment for r in rows],
                mode="markers",
                marker={"size": 10, "color": ARM_COLOURS[index % len(ARM_COLOURS)]},
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": [((r.abs_ci_upper or 0.0) - (r.abs_diff or 0.0)) * scale for r in rows],
                    "arrayminus": [((r.abs_diff or 0.0) - (r.abs_ci_lower or 0.0)) * scale for r in rows],
                },
                name=f"{arm} − {section.control}",
                customdata=[[r.control_users + r.treatment_users, r.p_value_bh] for r in rows],
                hovertemplate="%{y}: %{x:.3g} (n=%{customdata[0]:,}, p BH=%{customdata[1]:.3g})<extra></extra>",
            )
        )
    fig.add_vline(x=0, line_dash="dash", line_color="grey")
    unit = "percentage points" if section.metric == "conversion" else "currency per user"
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(
        title=f"{section.dimension}: lift of {section.metric} by segment, {1 - alpha:.0%} CI",
        xaxis_title=f"absolute lift, treatment − control ({unit})",
        height=140 + 32 * max(1, len(section.rows)),
        legend={"orientation": "h", "y": -0.2},
        **_LAYOUT,
    )
    return fig
