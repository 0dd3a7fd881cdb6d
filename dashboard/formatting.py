"""How numbers read on the dashboard: one place, so the tables, the banners and the tests agree.

Undefined values (`None` in the report model, always with a reason there) read as "n/a", never "nan".
"""

from __future__ import annotations

from experiment.stats.results import Interval

__all__ = ["NA", "badge_markdown", "ci", "count", "decision_badge", "num", "pct", "pval"]

NA = "n/a"

_BADGES = {
    "ship": ("green", "SHIP", "🟢", "check_circle"),
    "dont_ship": ("red", "DON'T SHIP", "🔴", "block"),
    "keep_running": ("orange", "KEEP RUNNING", "🟡", "hourglass_top"),
}


def pct(value: float | None, digits: int = 2) -> str:
    """A fraction as a percentage: 0.0981 → '9.81%'."""
    return NA if value is None else f"{value * 100:.{digits}f}%"


def pval(value: float | None) -> str:
    """A p-value or probability with three significant digits: 0.03740 → '0.0374'."""
    return NA if value is None else f"{value:.3g}"


def num(value: float | None, digits: int = 4) -> str:
    """A plain number with `digits` significant digits."""
    return NA if value is None else f"{value:.{digits}g}"


def count(value: int | None) -> str:
    """An integer with thousands separators."""
    return NA if value is None else f"{value:,}"


def ci(interval: Interval | None, kind: str = "num") -> str:
    """An interval '[lower, upper]' on the scale `kind` ('pct' or 'num')."""
    if interval is None:
        return NA
    fmt = pct if kind == "pct" else num
    return f"[{fmt(interval.lower)}, {fmt(interval.upper)}]"


def decision_badge(decision: str, arm: str | None = None) -> tuple[str, str]:
    """(colour, label) of a verdict badge, e.g. ('green', '🟢 SHIP treatment')."""
    colour, label, icon, _ = _BADGES.get(decision, ("gray", decision.upper(), "⚪", ""))
    return colour, f"{icon} {label}" + (f" {arm}" if arm else "")


def badge_markdown(decision: str, arm: str | None = None) -> str:
    """A Streamlit markdown badge with a Material icon, e.g. ':green-badge[:material/check_circle: SHIP treatment]'.

    Material icons ship with Streamlit, so the badge reads the same whatever emoji fonts the browser has.
    """
    colour, label, _, material = _BADGES.get(decision, ("gray", decision.upper(), "", ""))
    icon = f":material/{material}: " if material else ""
    return f":{colour}-badge[{icon}{label}" + (f" {arm}" if arm else "") + "]"
