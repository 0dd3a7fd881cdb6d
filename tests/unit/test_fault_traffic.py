"""The fault tests' yardstick (`tests.helpers.fault_traffic`) counts exactly what it claims to count."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from experiment.core import events
from experiment.core.definition import ExperimentDefinition, ModelRef
from tests.helpers.fault_traffic import count_records, fault_scale, plan_traffic, scaled

NAMES = events.default_feature_names(3)


def _definition(exp_id: str, **changes: Any) -> ExperimentDefinition:
    draft = ExperimentDefinition.new(
        id=exp_id,
        name=exp_id,
        hypothesis="h",
        owner="tests",
        category="cat61",
        model=ModelRef("m.pmml", "0" * 64, NAMES),
        threshold=0.5,
        now_ms=1,
        **changes,
    )
    return draft.transition("launch", 2)


@pytest.fixture(scope="module")
def plan():
    experiments = [
        _definition("two", traffic=0.8),
        _definition("three", variants=(("control", 0.4), ("a", 0.3), ("b", 0.3)), attribution_window_s=3_600),
    ]
    return plan_traffic(experiments, customers=600, rounds=3, feature_names=NAMES, tag="yard", late_purchases=0.2)


def test_the_plan_has_new_and_returning_customers_and_late_purchases(plan) -> None:
    assert len(plan.rounds[0]) == 200 and all(len(r) > 200 for r in plan.rounds[1:])
    assert len({s.event_id for s in plan.sessions}) == len(plan.sessions)
    attributed = {purchase for purchase, _exp in plan.expected_attributions}
    in_traffic = {customer for customer, _exp in plan.first_exposure_ts}
    late = [p for p in plan.purchases if p.customer_id in in_traffic and p.event_id not in attributed]
    assert 0.1 * len(in_traffic) < len(late) < 0.3 * len(in_traffic)
    totals = plan.variant_totals("three")
    assert set(totals) == {"control", "a", "b"} and sum(t.users for t in totals.values()) == 600
    assert sum(t.conversions for t in totals.values()) == sum(1 for _p, e in plan.expected_attributions if e == "three")
    assert plan == plan_traffic(
        plan.experiments, customers=600, rounds=3, feature_names=NAMES, tag="yard", late_purchases=0.2
    )


def test_the_job_output_of_the_plan_counts_as_exact(plan) -> None:
    output = plan.job_output()
    count = count_records(plan, output.assignments, output.attributed_outcomes)
    assert count.exact and count.problems == {}
    assert count.assignments_seen == count.expected_assignments == len(plan.expected_assignments)
    # Records of other customers (probes, another plan) are not counted at all.
    probe = {**output.assignments[0], "customer_id": "probe-1", "event_id": "p"}
    assert count_records(plan, [*output.assignments, probe], output.attributed_outcomes) == count


def test_every_kind_of_damage_is_counted(plan) -> None:
    output = plan.job_output()
    assignments = list(output.assignments)
    outcomes = list(output.attributed_outcomes)
    lost = assignments.pop(0)  # a first exposure: also counts as a first exposure that changed
    assignments.append(assignments[5])
    assignments[10] = {**assignments[10], "variant": "nope"}
    later = next(i for i, a in enumerate(assignments) if not a["first_exposure"])
    assignments[later] = {**assignments[later], "first_exposure": True}  # a job that forgot the customer
    outcomes.append({**outcomes[0], "outcome_event_id": "unexpected"})
    outcomes[1] = {**outcomes[1], "seconds_since_exposure": outcomes[1]["seconds_since_exposure"] + 60}
    count = count_records(plan, assignments, outcomes)
    assert count.problems == {
        "lost_assignments": 1,
        "duplicated_assignments": 1,
        "unexpected_attributions": 1,
        "variant_changes": 1,
        "first_exposure_changes": 3,
    }, count.summary()
    assert count.examples["lost_assignments"] == (str((lost["event_id"], lost["experiment_id"])),)
    with pytest.raises(AssertionError, match="lost_assignments"):
        count.assert_exact()


def test_scale_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.delenv("ABFLOW_FAULT_SCALE", raising=False)
    assert fault_scale() == 1.0 and scaled(10_000) == 10_000
    monkeypatch.setenv("ABFLOW_FAULT_SCALE", "0.2")
    assert scaled(10_000) == 2_000 and scaled(10, minimum=5) == 5
    monkeypatch.setenv("ABFLOW_FAULT_SCALE", "-1")
    with pytest.raises(ValueError, match="positive"):
        fault_scale()


def test_paused_experiments_expect_nothing(plan) -> None:
    paused = replace(plan.experiments[0], status="paused")
    quiet = plan_traffic([paused], customers=30, rounds=2, feature_names=NAMES, tag="yard")
    assert not quiet.expected_assignments and not quiet.expected_attributions
