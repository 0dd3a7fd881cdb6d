"""`abflow stats`: significance of a two-arm conversion test from counts typed on the command line.

The output field names are a stable interface (scripts parse them): control_rate, treatment_rate, abs_diff, abs_ci,
rel_lift, rel_ci, p_value, p_value_pooled, srm_p_value, prob_treatment_beats_control, alpha, method; plus `reasons`
(why a field is null) and `methods` (the method behind each family of fields).
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any

import typer

from experiment.core.errors import AbflowError

__all__ = ["StatsInputError", "parse_counts", "parse_weights", "stats", "stats_payload"]

_PAIR = re.compile(r"^\s*(-?\d+)\s*/\s*(-?\d+)\s*$")


class StatsInputError(AbflowError):
    """A count pair, alpha or weight given to `abflow stats` is malformed."""


def parse_counts(option: str, text: str) -> tuple[int, int]:
    """Parse 'USERS/CONVERSIONS' into two ints with 0 <= conversions <= users; raise naming the option."""
    match = _PAIR.match(text)
    if not match:
        raise StatsInputError(
            f"{option} must be USERS/CONVERSIONS with non-negative integers, e.g. 10000/1200; got {text!r}"
        )
    users, conversions = int(match.group(1)), int(match.group(2))
    if users < 0 or conversions < 0:
        raise StatsInputError(f"{option} counts must be non-negative; got users={users} conversions={conversions}")
    if conversions > users:
        raise StatsInputError(f"{option} has more conversions ({conversions}) than users ({users})")
    return users, conversions


def parse_weights(text: str) -> tuple[float, float]:
    """Parse 'W_CONTROL,W_TREATMENT' (positive, summing to 1)."""
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values):
        raise StatsInputError(f"--weights must be two positive numbers like 0.5,0.5; got {text!r}")
    if abs(sum(values) - 1.0) > 1e-6:
        raise StatsInputError(f"--weights must sum to 1.0. Got {values[0]:g} + {values[1]:g} = {sum(values):g}")
    return values[0], values[1]


def stats_payload(
    control: tuple[int, int], treatment: tuple[int, int], *, alpha: float, weights: tuple[float, float]
) -> dict[str, Any]:
    """The JSON object `abflow stats --json` prints (see the module docstring) for two arms as (users, conversions)."""
    from experiment.stats.bayes import compare_bayes
    from experiment.stats.proportions import compare_proportions
    from experiment.stats.srm import srm_test
    from experiment.stats.sufficient import VariantStats

    c = VariantStats.from_counts(*control)
    t = VariantStats.from_counts(*treatment)
    prop = compare_proportions(c, t, alpha=alpha)
    srm = srm_test({"control": c.users, "treatment": t.users}, {"control": weights[0], "treatment": weights[1]})
    bayes = compare_bayes(c, t)

    reasons: dict[str, str] = {}
    rename = {"control_value": "control_rate", "treatment_value": "treatment_rate"}
    for name, reason in prop.reasons.items():
        reasons[rename.get(name, name)] = str(reason)
    if srm.p_value is None:
        reasons["srm_p_value"] = str(srm.reasons["p_value"])
    if bayes.prob_treatment_beats_control is None:
        reasons["prob_treatment_beats_control"] = str(bayes.reasons["prob_treatment_beats_control"])

    def ci(interval: Any) -> list[float] | None:
        return None if interval is None else [interval.lower, interval.upper]

    payload: dict[str, Any] = {
        "control_rate": prop.control_value,
        "treatment_rate": prop.treatment_value,
        "abs_diff": prop.abs_diff,
        "abs_ci": ci(prop.abs_ci),
        "rel_lift": prop.rel_lift,
        "rel_ci": ci(prop.rel_ci),
        "p_value": prop.p_value,
        "p_value_pooled": prop.p_value_pooled,
        "srm_p_value": srm.p_value,
        "srm_alarm": srm.alarm,
        "prob_treatment_beats_control": bayes.prob_treatment_beats_control,
        "expected_loss_treatment": bayes.expected_loss_treatment,
        "alpha": alpha,
        "control": {"users": c.users, "conversions": c.conversions},
        "treatment": {"users": t.users, "conversions": t.conversions},
        "weights": {"control": weights[0], "treatment": weights[1]},
        "method": (
            f"{prop.method}; pooled p-value: two_proportion_z_pooled; rel_ci: delta_method_normal; "
            f"srm: {srm.method}; prob_treatment_beats_control: {bayes.method}"
        ),
        "methods": {
            "abs_ci": "unpooled_wald_normal",
            "p_value": "two_proportion_z_unpooled (consistent with abs_ci)",
            "p_value_pooled": "two_proportion_z_pooled",
            "rel_ci": "delta_method_normal",
            "srm_p_value": srm.method,
            "prob_treatment_beats_control": bayes.method,
        },
    }
    payload["reasons"] = {name: reason for name, reason in sorted(reasons.items()) if name in payload}
    return payload


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v, pct) for v in value) + "]"
    return f"{value * 100:.3f} %" if pct else f"{value:.4g}"


def _print_table(payload: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Two-proportion test (alpha = {payload['alpha']:g})")
    table.add_column("statistic")
    table.add_column("value", justify="right")
    table.add_column("note")
    reasons = payload["reasons"]
    rows = [
        ("control_rate", True, "conversions / users"),
        ("treatment_rate", True, "conversions / users"),
        ("abs_diff", True, "treatment − control"),
        ("abs_ci", True, "unpooled Wald CI"),
        ("rel_lift", True, "treatment / control − 1"),
        ("rel_ci", True, "delta-method CI"),
        ("p_value", False, "unpooled z, consistent with abs_ci"),
        ("p_value_pooled", False, "pooled two-proportion z"),
        ("srm_p_value", False, "chi-square vs weights; alarm below 0.001"),
        ("prob_treatment_beats_control", False, "Beta–Binomial, uniform priors"),
    ]
    for name, pct, note in rows:
        reason = reasons.get(name)
        table.add_row(name, _fmt(payload[name], pct), f"null: {reason}" if reason else note)
    Console().print(table)
    if payload["srm_alarm"]:
        Console(stderr=True).print("[bold red]Sample-ratio mismatch: the split differs from the weights.[/]")


def stats(
    control: Annotated[str, typer.Option(help="Control arm as USERS/CONVERSIONS, e.g. 10000/1000.")],
    treatment: Annotated[str, typer.Option(help="Treatment arm as USERS/CONVERSIONS, e.g. 10000/1100.")],
    alpha: Annotated[float, typer.Option(help="Significance level for the CIs and p-values.")] = 0.05,
    weights: Annotated[str, typer.Option(help="Configured split control,treatment for the SRM check.")] = "0.5,0.5",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    """Compare two conversion rates: CIs, p-values, SRM and P(treatment beats control)."""
    c = parse_counts("--control", control)
    t = parse_counts("--treatment", treatment)
    if not (math.isfinite(alpha) and 0.0 < alpha < 1.0):
        raise StatsInputError(f"--alpha must lie strictly between 0 and 1; got {alpha}")
    w = parse_weights(weights)
    payload = stats_payload(c, t, alpha=alpha, weights=w)
    if as_json:
        typer.echo(json.dumps(payload, sort_keys=True, allow_nan=False))
    else:
        _print_table(payload)
