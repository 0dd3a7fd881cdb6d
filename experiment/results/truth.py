"""A report held against the simulator's known truth: do its intervals cover the true lifts, are the arms ranked right.

Why: a simulated experiment knows the exact lift of every arm and of every segment (`experiment.simulation`), so
the demo can show, and the end-to-end tests can assert, that what the report measured is what was true. Pure: it
reads a typed `Report` and a `SimulationResult`; nothing here queries a store or a broker.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from experiment.results.report_model import Report
    from experiment.simulation.population import TrueLift
    from experiment.simulation.simulator import SimulationResult

__all__ = ["TruthCheck", "arm_checks", "reported_ranking", "segment_checks", "true_ranking"]


@dataclass(frozen=True)
class TruthCheck:
    """One reported interval for an absolute lift (conversion rate, treatment − baseline) and the true value."""

    what: str
    truth: float
    estimate: float | None
    lower: float | None
    upper: float | None

    @property
    def covered(self) -> bool:
        """Whether the interval exists and contains the true lift."""
        return self.lower is not None and self.upper is not None and self.lower <= self.truth <= self.upper


def _truth(lifts: Iterable[TrueLift], arm: str, baseline: str) -> TrueLift | None:
    return next((lift for lift in lifts if lift.arm == arm and lift.baseline == baseline), None)


def _vs_control(result: SimulationResult) -> list[TrueLift]:
    """The true lifts of the model arms against the control (the simulator lists them first)."""
    lifts = result.true_lifts or ([result.true_lift] if result.true_lift is not None else [])
    control = lifts[0].baseline if lifts else None
    return [lift for lift in lifts if lift.baseline == control]


def arm_checks(report: Report, result: SimulationResult) -> list[TruthCheck]:
    """Every reported arm comparison (each model arm vs control, each pair of model arms) against its truth.

    With two arms the report's one treatment-vs-control result on conversion is the comparison.
    """
    checks: list[TruthCheck] = []
    if report.arms is not None:
        for row in report.arms.comparisons:
            truth = _truth(result.true_lifts, row.arm, row.baseline)
            if truth is not None:
                checks.append(TruthCheck(row.label, truth.abs_lift, row.abs_diff, row.abs_ci_lower, row.abs_ci_upper))
        return checks
    lifts = _vs_control(result)
    found = next((r for r in report.results if r.metric == "conversion"), None)
    if len(lifts) == 1 and found is not None:  # two arms: the report's one treatment-vs-control result
        fixed, ci = found.fixed_horizon, found.fixed_horizon.abs_ci
        checks.append(
            TruthCheck(
                f"{found.arm} − {lifts[0].baseline}",
                lifts[0].abs_lift,
                fixed.abs_diff,
                None if ci is None else ci.lower,
                None if ci is None else ci.upper,
            )
        )
    return checks


def segment_checks(report: Report, result: SimulationResult) -> list[TruthCheck]:
    """Every reported segment row (dimension, segment, arm vs control) whose true lift the simulator knows."""
    checks: list[TruthCheck] = []
    if report.segments is None:
        return checks
    for dimension in report.segments.dimensions:
        truths = result.true_segment_lifts.get(dimension.dimension, {})
        for row in dimension.rows:
            truth = _truth(truths.get(row.segment, ()), row.arm, dimension.control)
            if truth is None and len(_vs_control(result)) == 1:  # two arms: the one treatment's lift, however named
                truth = next(iter(truths.get(row.segment, ())), None)
            if truth is not None:
                checks.append(
                    TruthCheck(
                        f"{row.dimension}={row.segment} {row.arm}",
                        truth.abs_lift,
                        row.abs_diff,
                        row.abs_ci_lower,
                        row.abs_ci_upper,
                    )
                )
    return checks


def true_ranking(result: SimulationResult) -> list[str]:
    """Arms from the highest true conversion rate to the lowest (the control at its `control_rate`)."""
    lifts = _vs_control(result)
    if not lifts:
        return []
    rates = {lift.arm: lift.treatment_rate for lift in lifts}
    rates[lifts[0].baseline] = lifts[0].control_rate
    return sorted(rates, key=lambda arm: -rates[arm])


def reported_ranking(report: Report) -> list[str]:
    """Arms from the highest measured conversion rate to the lowest (arms without users last)."""
    rates = {row.name: float("-inf") if row.conversion_rate is None else row.conversion_rate for row in report.variants}
    return sorted(rates, key=lambda arm: -rates[arm])
