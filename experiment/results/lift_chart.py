"""The lift-over-time chart, shared by the HTML report and the dashboard so both show the same figure.

It lives in `experiment/` (not `dashboard/`) because the report must not import the dashboard; imports point
inward. Import it inside functions where plotly's import time matters (the CLI).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import plotly.graph_objects as go

from experiment.stats.results import Interval

if TYPE_CHECKING:
    from experiment.results.report_model import LiftPoint

__all__ = ["lift_over_time_figure"]


def _sequential(point: LiftPoint) -> Interval | None:
    return point.rel_ci_sequential


def _fixed(point: LiftPoint) -> Interval | None:
    return point.rel_ci


# (the CI of a report point, legend name, fill colour); the wider always-valid band is drawn first.
_BANDS: tuple[tuple[Callable[[LiftPoint], Interval | None], str, str], ...] = (
    (_sequential, "always-valid CI", "rgba(255,127,14,0.15)"),
    (_fixed, "95% CI (fixed-horizon)", "rgba(31,119,180,0.25)"),
)


def lift_over_time_figure(points: Sequence[LiftPoint], treatments: Sequence[str]) -> go.Figure:
    """Cumulative relative lift (treatment / control − 1) of the primary metric per UTC day, with CI bands.

    `points` are the report model's `lift_over_time` entries; days whose lift is undefined are left out, and a
    band only covers the days where its CI is defined.
    """
    fig = go.Figure()
    for arm in treatments:
        series = [p for p in points if p.arm == arm and p.rel_lift is not None]
        for interval_of, name, colour in _BANDS:
            band = [(p.date, ci) for p in series if (ci := interval_of(p)) is not None]
            if not band:
                continue
            dates = [d for d, _ in band]
            fig.add_trace(
                go.Scatter(
                    x=dates + dates[::-1],
                    y=[ci.upper for _, ci in band] + [ci.lower for _, ci in band][::-1],
                    fill="toself",
                    fillcolor=colour,
                    line={"width": 0},
                    name=f"{arm}: {name}",
                    hoverinfo="skip",
                )
            )
        fig.add_trace(
            go.Scatter(
                x=[p.date for p in series],
                y=[p.rel_lift for p in series],
                mode="lines+markers",
                name=f"{arm}: relative lift",
            )
        )
    fig.add_hline(y=0, line_dash="dash", line_color="grey")
    fig.update_layout(
        title="Cumulative relative lift of the primary metric over time",
        yaxis_tickformat=".1%",
        xaxis_title="day (UTC)",
        yaxis_title="treatment / control − 1",
        template="plotly_white",
    )
    return fig
