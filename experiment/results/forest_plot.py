"""The forest plot of the lift by segment, as inline SVG: the HTML report draws one per dimension.

Why SVG written here and not a plotly figure: the HTML report must open without a network, and a forest plot is a
handful of lines and circles; as static SVG it needs no script (it prints, and survives being pasted into a ticket or
an e-mail), costs a few kilobytes per dimension instead of a second plotly payload, and its markers can be counted
by a test. It draws like the lift-over-time chart (`lift_chart.py`): the same colours (an arm's CI in the blue, then
orange, of the chart's bands), a grey dashed line at zero, the scale named on its axis.

What it shows: one row per segment × treatment arm (grouped by arm), the absolute lift (treatment − control; in
percentage points for conversion) as a marker with its confidence interval as a line, filled when the
Benjamini–Hochberg adjusted p-value is below alpha, open otherwise; then the arm's pooled (fixed-effect) lift as a
diamond. A segment whose lift is undefined keeps its row with the reason instead of a marker. Pure: a
`SegmentDimension` in, a string out, the same bytes for the same section.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from experiment.results.report_model import HeterogeneityRow, SegmentDimension, SegmentRow

__all__ = ["ARM_COLOURS", "segment_forest_svg"]

#: One colour per treatment arm, in declared order: the lift-over-time chart's band colours, then D3's next ones.
ARM_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")

_WIDTH = 760
_LABEL_X = 8
_PLOT_X0 = 250
_PLOT_X1 = _WIDTH - 24
_TOP = 46
_ROW_H = 24
_FONT = "font-family:system-ui,sans-serif;font-size:12px"


def _attr(value: object) -> str:
    return html.escape(str(value), quote=True)


def _nice_step(span: float) -> float:
    """A round tick step (1, 2 or 5 × 10^k) giving about five ticks over `span`."""
    raw = span / 5
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power


def _scale(values: Iterable[float], metric: str) -> tuple[float, float]:
    """The x range: every interval end, every estimate and zero, padded by 5 % each side."""
    xs = [0.0, *values]
    lo, hi = min(xs), max(xs)
    if hi - lo <= 0.0:
        half = 0.01 if metric == "conversion" else 1.0
        lo, hi = lo - half, hi + half
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


def _tick_label(value: float, step: float, metric: str) -> str:
    factor = 100.0 if metric == "conversion" else 1.0
    digits = max(0, min(6, -math.floor(math.log10(step * factor) + 1e-9)))
    number = value * factor
    if abs(number) < 0.5 * step * factor:
        return "0"
    text = f"{number:+.{digits}f}"
    return f"{text} pp" if metric == "conversion" else text


def _value_text(value: float | None, metric: str) -> str:
    if value is None:
        return "n/a"
    return f"{value * 100:+.2f} pp" if metric == "conversion" else f"{value:+.4g}"


def _row_title(row: SegmentRow) -> str:
    ci = (
        "n/a"
        if row.abs_ci_lower is None or row.abs_ci_upper is None
        else f"[{_value_text(row.abs_ci_lower, row.metric)}, {_value_text(row.abs_ci_upper, row.metric)}]"
    )
    bh = "n/a" if row.p_value_bh is None else f"{row.p_value_bh:.3g}"
    return (
        f"{row.dimension} = {row.segment}, {row.arm}: lift {_value_text(row.abs_diff, row.metric)} {ci}, "
        f"p BH = {bh}, users {row.control_users:,} control / {row.treatment_users:,} {row.arm}"
    )


def segment_forest_svg(section: SegmentDimension, *, alpha: float = 0.05) -> str:
    """The forest plot of one dimension as an `<svg>` element (no script, no external reference)."""
    metric = section.metric
    several = len(section.arms) > 1
    pooled: dict[str, HeterogeneityRow] = {h.arm: h for h in section.heterogeneity}
    # (kind, arm, payload) per drawn row, in order: an arm header (several arms only), its segments, its pooled lift.
    lines: list[tuple[str, SegmentRow | None, HeterogeneityRow | None]] = []
    for arm in section.arms:
        if several:
            lines.append((arm, None, None))
        lines += [(arm, r, None) for r in section.rows if r.arm == arm]
        h = pooled.get(arm)
        if h is not None and h.pooled_abs_diff is not None:
            lines.append((arm, None, h))
    values: list[float] = []
    for r in section.rows:
        values += [v for v in (r.abs_diff, r.abs_ci_lower, r.abs_ci_upper) if v is not None]
    for h in section.heterogeneity:
        values += [v for v in (h.pooled_abs_diff, h.pooled_abs_ci_lower, h.pooled_abs_ci_upper) if v is not None]
    lo, hi = _scale(values, metric)

    def x(value: float) -> float:
        return _PLOT_X0 + (value - lo) / (hi - lo) * (_PLOT_X1 - _PLOT_X0)

    bottom = _TOP + max(1, len(lines)) * _ROW_H
    height = bottom + 58
    level = f"{1 - alpha:.0%}"
    unit = "percentage points" if metric == "conversion" else "currency per user"
    title = f"{section.dimension}: lift of {metric} by segment, {level} CI"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="forest-plot" data-dimension="{_attr(section.dimension)}" '
        f'width="{_WIDTH}" height="{height}" viewBox="0 0 {_WIDTH} {height}" role="img" '
        f'aria-label="{_attr(title)}" style="{_FONT}">',
        f"<title>{_attr(title)}</title>",
        f'<text x="{_LABEL_X}" y="20" style="font-size:14px;font-weight:600">{_attr(title)}</text>',
    ]
    step = _nice_step(hi - lo)
    for k in range(math.ceil(lo / step), math.floor(hi / step) + 1):
        tick = k * step  # from an integer, so ticks never drift
        tx = x(tick)
        out.append(
            f'<line class="grid" x1="{tx:.1f}" x2="{tx:.1f}" y1="{_TOP - 6}" y2="{bottom}" stroke="#eee"/>'
            f'<text x="{tx:.1f}" y="{bottom + 16}" text-anchor="middle" fill="#555">'
            f"{_attr(_tick_label(tick, step, metric))}</text>"
        )
    zero = x(0.0)
    out.append(
        f'<line class="zero" x1="{zero:.1f}" x2="{zero:.1f}" y1="{_TOP - 6}" y2="{bottom}" stroke="grey" '
        'stroke-dasharray="4 3"/>'
    )
    for i, (arm, row, h) in enumerate(lines):
        colour = ARM_COLOURS[section.arms.index(arm) % len(ARM_COLOURS)]
        y = _TOP + i * _ROW_H + _ROW_H / 2
        if h is not None and h.pooled_abs_diff is not None:
            cx = x(h.pooled_abs_diff)
            left = x(h.pooled_abs_ci_lower) if h.pooled_abs_ci_lower is not None else cx
            right = x(h.pooled_abs_ci_upper) if h.pooled_abs_ci_upper is not None else cx
            out.append(
                f'<text x="{_LABEL_X + 12}" y="{y + 4:.1f}" fill="#555">pooled (fixed effect)</text>'
                f'<polygon class="pooled" data-arm="{_attr(arm)}" points="{left:.1f},{y:.1f} {cx:.1f},{y - 6:.1f} '
                f'{right:.1f},{y:.1f} {cx:.1f},{y + 6:.1f}" fill="{colour}" fill-opacity="0.35" stroke="{colour}">'
                f"<title>{_attr(h.summary)}</title></polygon>"
            )
            continue
        if row is None:  # an arm's header, with several arms
            out.append(
                f'<text x="{_LABEL_X}" y="{y + 4:.1f}" style="font-weight:600" fill="{colour}">'
                f"{_attr(arm)} − {_attr(section.control)}</text>"
            )
            continue
        users = row.control_users + row.treatment_users
        out.append(
            f'<text x="{_LABEL_X + 12}" y="{y + 4:.1f}">{_attr(row.segment)} '
            f'<tspan fill="#777">(n={users:,})</tspan></text>'
        )
        if row.abs_diff is None:
            out.append(
                f'<text class="undefined" x="{_PLOT_X0}" y="{y + 4:.1f}" fill="#9a6700">'
                f"n/a: {_attr(row.note or 'undefined')}</text>"
            )
            continue
        cx = x(row.abs_diff)
        if row.abs_ci_lower is not None and row.abs_ci_upper is not None:
            out.append(
                f'<line class="ci" x1="{x(row.abs_ci_lower):.1f}" x2="{x(row.abs_ci_upper):.1f}" y1="{y:.1f}" '
                f'y2="{y:.1f}" stroke="{colour}" stroke-width="2"/>'
            )
        fill = colour if row.significant_bh else "white"
        out.append(
            f'<circle class="marker" data-segment="{_attr(row.segment)}" data-arm="{_attr(arm)}" '
            f'cx="{cx:.1f}" cy="{y:.1f}" r="4.5" fill="{fill}" stroke="{colour}" stroke-width="2">'
            f"<title>{_attr(_row_title(row))}</title></circle>"
        )
    out.append(
        f'<text x="{(_PLOT_X0 + _PLOT_X1) / 2:.1f}" y="{bottom + 34}" text-anchor="middle" fill="#333">'
        f"absolute lift, treatment − control ({unit})</text>"
        f'<text x="{_LABEL_X}" y="{bottom + 52}" fill="#777">filled: significant after Benjamini–Hochberg '
        f"across segments (p BH &lt; {alpha:g}); open: not; diamond: pooled lift and its CI</text>"
    )
    out.append("</svg>")
    return "\n".join(out)
