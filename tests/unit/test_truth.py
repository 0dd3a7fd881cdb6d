"""A report held against a known truth (`experiment.results.truth`): what the demo prints and the e2e test asserts."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from experiment.results import truth
from experiment.results.report import build_report
from experiment.results.store import ResultsStore
from experiment.simulation.population import TrueLift
from tests.helpers.arms_segments import three_arm_definition
from tests.helpers.fill_store import definition_dict, fill_store


def _lift(arm: str, baseline: str, control_rate: float, treatment_rate: float) -> TrueLift:
    diff = treatment_rate - control_rate
    return TrueLift(1000, control_rate, treatment_rate, diff, diff / control_rate, 0.5, 1.0, 1.0, 0.0, arm, baseline)


def _result(lifts: list[TrueLift]) -> Any:
    return SimpleNamespace(true_lifts=lifts, true_lift=lifts[0], true_segment_lifts={})


def test_three_arms_each_comparison_against_its_truth_and_the_ranking(tmp_path: Path) -> None:
    path = tmp_path / "results.duckdb"
    fill_store(path, n_customers=3_000, seed=5, definition=three_arm_definition("arms-v1"))
    with ResultsStore(path, read_only=True) as store:
        report = build_report(store, "arms-v1")
    assert report.arms is not None
    rate = {v.name: v.conversion_rate for v in report.variants}
    measured = {(r.arm, r.baseline): r for r in report.arms.comparisons}
    exact = [_lift(arm, base, rate[base], rate[arm]) for arm, base in measured]  # truth = what was measured
    checks = truth.arm_checks(report, _result(exact))
    assert {c.what for c in checks} == {r.label for r in measured.values()} and len(checks) == 3
    assert all(c.covered for c in checks)
    far = [_lift(arm, base, rate[base], rate[base] + 0.5) for arm, base in measured]  # 50 points off: outside
    assert not any(c.covered for c in truth.arm_checks(report, _result(far)))
    assert truth.reported_ranking(report) == sorted(rate, key=lambda arm: -rate[arm])
    ranked = [_lift("champion", "control", 0.10, 0.12), _lift("challenger", "control", 0.10, 0.11)]
    assert truth.true_ranking(_result(ranked)) == ["champion", "challenger", "control"]


def test_two_arms_the_one_comparison_and_no_segment_checks_without_segments(tmp_path: Path) -> None:
    path = tmp_path / "results.duckdb"
    fill_store(path, n_customers=2_000, seed=3, definition=definition_dict("two-v1"))
    with ResultsStore(path, read_only=True) as store:
        report = build_report(store, "two-v1")
    primary = next(r for r in report.results if r.metric == "conversion")
    ci = primary.fixed_horizon.abs_ci
    assert ci is not None
    inside = _lift("treatment", "control", 0.1, 0.1 + (ci.lower + ci.upper) / 2)
    (check,) = truth.arm_checks(report, _result([inside]))
    assert check.covered and check.estimate == primary.fixed_horizon.abs_diff
    (outside,) = truth.arm_checks(report, _result([_lift("treatment", "control", 0.1, 0.1 + ci.upper + 0.01)]))
    assert not outside.covered
    assert truth.segment_checks(report, _result([inside])) == []
