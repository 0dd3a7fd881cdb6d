"""The per-customer keyed state survives its tuple encoding unchanged (what a checkpoint and restore go through)."""

from __future__ import annotations

import pickle

import pytest

from experiment.core.events import Outcome
from flink_pipeline.functions import _Customer, _Exposure, _Held


def test_round_trip_keeps_every_field() -> None:
    outcome = Outcome(event_id="o1", customer_id="c1", ts=5, type="purchase", category="cat61", revenue=12.5)
    customer = _Customer(
        exposures={"e1": _Exposure("treatment", 10, 3), "e2": _Exposure("control", 11, 0)},
        purchases=4,
        held=[_Held(outcome, 600_005, {"e2", "e1"}), _Held(outcome, 700_000)],
    )
    restored = _Customer.from_state(pickle.loads(pickle.dumps(customer.to_state())))
    assert restored == customer
    assert restored.held[0].outcome == outcome and restored.held[1].attributed_to == set()


def test_empty_customer_round_trips() -> None:
    assert _Customer.from_state(_Customer().to_state()) == _Customer()


def test_unknown_format_is_refused() -> None:
    state = list(_Customer().to_state())
    state[0] = 999
    with pytest.raises(ValueError, match="customer state format 999"):
        _Customer.from_state(tuple(state))
