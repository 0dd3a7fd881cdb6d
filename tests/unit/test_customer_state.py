"""The per-customer keyed state survives its tuple encoding unchanged (what a checkpoint and restore go through)."""

from __future__ import annotations

import pickle

import pytest

from experiment.core.decisions import CustomerState, Exposure, HeldOutcome
from experiment.core.events import Outcome

OUTCOME = Outcome(event_id="o1", customer_id="c1", ts=5, type="purchase", category="cat61", revenue=12.5)


def test_round_trip_keeps_every_field() -> None:
    customer = CustomerState(
        exposures={"e1": Exposure("treatment", 10, 3), "e2": Exposure("control", 11, 0)},
        purchases=4,
        held=(HeldOutcome(OUTCOME, 600_005, frozenset({"e2", "e1"})), HeldOutcome(OUTCOME, 700_000)),
    )
    restored = CustomerState.from_state(pickle.loads(pickle.dumps(customer.to_state())))
    assert restored == customer
    assert restored.held[0].outcome == OUTCOME and restored.held[1].attributed_to == frozenset()


def test_empty_customer_round_trips() -> None:
    assert CustomerState.from_state(CustomerState().to_state()) == CustomerState()


def test_the_layout_is_the_one_savepoints_hold() -> None:
    """Savepoints written before the rules moved to `experiment.core` hold exactly these plain tuples."""
    written_before = (
        1,
        {"e1": ("treatment", 10, 3)},
        4,
        [(("o1", "c1", 5, "purchase", "cat61", 12.5), 600_005, ("e1", "e2"))],
    )
    restored = CustomerState.from_state(pickle.loads(pickle.dumps(written_before)))
    assert restored == CustomerState(
        {"e1": Exposure("treatment", 10, 3)}, 4, (HeldOutcome(OUTCOME, 600_005, frozenset({"e1", "e2"})),)
    )
    assert restored.to_state() == written_before


def test_unknown_format_is_refused() -> None:
    state = list(CustomerState().to_state())
    state[0] = 999
    with pytest.raises(ValueError, match="customer state format 999"):
        CustomerState.from_state(tuple(state))
