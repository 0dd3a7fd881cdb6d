"""The experiment definition: every validation error (exact message), every lifecycle transition, JSON round trip."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from experiment.core.definition import (
    ACTIONS,
    TRANSITIONS,
    ExperimentDefinition,
    ModelRef,
    Variant,
)
from experiment.core.errors import ExperimentError

SHA = "ab" * 32
MODEL = ModelRef("artifacts/model/xgboost_model.pmml", SHA, ("age", "man", "woman", "cat1", "cat2"))


def make(**overrides: Any) -> ExperimentDefinition:
    values: dict[str, Any] = {
        "id": "cat61-v1",
        "name": "Show cat61",
        "hypothesis": "Showing cat61 to likely buyers raises conversion",
        "owner": "growth",
        "category": "cat61",
        "model": MODEL,
        "threshold": 0.5,
        "now_ms": 1_700_000_000_000,
    }
    values.update(overrides)
    return ExperimentDefinition.new(**values)


def at(status: str) -> ExperimentDefinition:
    return replace(make(), status=status)


def test_new_has_contract_defaults() -> None:
    d = make()
    assert d.salt == "cat61-v1"
    assert d.traffic == 1.0
    assert d.weights() == [("control", 0.5), ("treatment", 0.5)]
    assert d.control == "control"
    assert d.treatments == ("treatment",)
    assert (d.status, d.version, d.created_ts, d.updated_ts) == ("draft", 1, 1_700_000_000_000, 1_700_000_000_000)
    assert d.primary_metric == "conversion"
    assert d.secondary_metrics == ("revenue_per_user",)
    assert d.attribution_window_s == 604_800
    assert not d.is_running


def test_json_round_trip_is_sorted_compact_and_exact() -> None:
    d = make(variants=[("control", 0.4), ("a", 0.3), ("b", 0.3)], planned_sample_size=20_000, mde=0.01)
    text = d.to_json()
    assert " " not in text.replace("Show cat61", "").replace("Showing cat61 to likely buyers raises conversion", "")
    data = json.loads(text)
    assert list(data) == sorted(data)
    assert set(data) == {
        "id", "name", "hypothesis", "owner", "category", "model", "threshold", "salt", "traffic", "variants", "control",
        "primary_metric", "secondary_metrics", "guardrail_metrics", "attribution_window_s", "planned_sample_size",
        "mde", "status", "version", "created_ts", "updated_ts",
    }  # fmt: skip
    assert data["model"] == {"pmml_path": MODEL.pmml_path, "model_version": SHA, "features": list(MODEL.features)}
    assert data["variants"] == [{"name": "control", "weight": 0.4}, {"name": "a", "weight": 0.3},
                                {"name": "b", "weight": 0.3}]  # fmt: skip
    back = ExperimentDefinition.from_json(text)
    assert back == d
    assert back.treatments == ("a", "b")
    assert ExperimentDefinition.from_json(text.encode()) == d


def test_from_json_ignores_unknown_keys_from_newer_writers() -> None:
    data = json.loads(make().to_json())
    data["added_in_v2"] = {"x": 1}
    assert ExperimentDefinition.from_json(json.dumps(data)) == make()


def test_assign_uses_salt_traffic_and_weights() -> None:
    from experiment.core.assignment import assign

    d = make(traffic=0.3, salt="s1")
    for customer in ("1", "2", "77", "c-123"):
        assert d.assign(customer) == assign("s1", customer, 0.3, [("control", 0.5), ("treatment", 0.5)])


# --------------------------------------------------------------------------------------------- validation errors
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"variants": [("control", 0.6), ("treatment", 0.6)]},
         "Experiment 'cat61-v1': the variant weights must sum to 1 (within 1e-9). Got 0.6 + 0.6 = 1.2."),
        ({"variants": [("control", 0.5), ("treatment", 0.5 - 1e-8)]},
         "Experiment 'cat61-v1': the variant weights must sum to 1 (within 1e-9). Got 0.5 + 0.49999999 = 0.99999999."),
        ({"traffic": 0.0}, "Experiment 'cat61-v1': traffic must be in (0, 1]. Got 0.0."),
        ({"traffic": 1.5}, "Experiment 'cat61-v1': traffic must be in (0, 1]. Got 1.5."),
        ({"traffic": -0.1}, "Experiment 'cat61-v1': traffic must be in (0, 1]. Got -0.1."),
        ({"traffic": float("nan")}, "Experiment 'cat61-v1': traffic must be in (0, 1]. Got nan."),
        ({"id": "Cat 61"},
         "Experiment 'Cat 61': id must be a slug: 1-64 characters of a-z, 0-9, '-' or '_', starting with a letter or "
         "digit."),
        ({"id": ""},
         "Experiment '': id must be a slug: 1-64 characters of a-z, 0-9, '-' or '_', starting with a letter or digit."),
        ({"name": " "}, "Experiment 'cat61-v1': name must be a non-empty string. Got ' '."),
        ({"category": ""}, "Experiment 'cat61-v1': category must be a non-empty string. Got ''."),
        ({"salt": ""}, "Experiment 'cat61-v1': salt must be a non-empty string. Got ''."),
        ({"owner": None}, "Experiment 'cat61-v1': owner must be a string. Got None."),
        ({"threshold": 1.2}, "Experiment 'cat61-v1': threshold must be a probability in [0, 1]. Got 1.2."),
        ({"threshold": True}, "Experiment 'cat61-v1': threshold must be a probability in [0, 1]. Got True."),
        ({"model": ModelRef("", SHA, ("age",))},
         "Experiment 'cat61-v1': model.pmml_path must be a non-empty string. Got ''."),
        ({"model": ModelRef("m.pmml", "abc", ("age",))},
         "Experiment 'cat61-v1': model.model_version must be the SHA-256 of the PMML file (64 lowercase hex digits). "
         "Got 'abc'."),
        ({"model": ModelRef("m.pmml", SHA, ())},
         "Experiment 'cat61-v1': model.features must be a non-empty list of names. Got []."),
        ({"model": ModelRef("m.pmml", SHA, ("age", "age"))},
         "Experiment 'cat61-v1': model.features has duplicates: ['age', 'age']."),
        ({"variants": [("control", 1.0)]},
         "Experiment 'cat61-v1': needs at least 2 variants (control first). Got 1."),
        ({"variants": [("control", 0.5), ("control", 0.5)]},
         "Experiment 'cat61-v1': variant names must be unique. Got control, control."),
        ({"variants": [("control", 0.5), ("Treat ment", 0.5)]},
         "Experiment 'cat61-v1': variant name 'Treat ment' must be a slug (a-z, 0-9, '-', '_')."),
        ({"variants": [("control", 1.0), ("treatment", 0.0)]},
         "Experiment 'cat61-v1': the weight of variant 'control' must be in (0, 1). Got 1.0."),
        ({"primary_metric": "clicks"},
         "Experiment 'cat61-v1': unknown metric 'clicks' in primary_metric; known: conversion, revenue_per_user."),
        ({"guardrail_metrics": ["latency"]},
         "Experiment 'cat61-v1': unknown metric 'latency' in guardrail_metrics; known: conversion, revenue_per_user."),
        ({"attribution_window_s": 0},
         "Experiment 'cat61-v1': attribution_window_s must be a positive whole number of seconds. Got 0."),
        ({"planned_sample_size": -5},
         "Experiment 'cat61-v1': planned_sample_size must be a positive integer or null. Got -5."),
        ({"mde": 0.0}, "Experiment 'cat61-v1': mde must be a positive number or null. Got 0.0."),
        ({"now_ms": -1}, "Experiment 'cat61-v1': created_ts must be epoch milliseconds (an integer >= 0). Got -1."),
    ],
)  # fmt: skip
def test_validation_errors_have_exact_messages(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ExperimentError) as info:
        make(**overrides)
    assert str(info.value) == message
    assert info.value.exit_code == 2


def test_weights_within_tolerance_are_accepted() -> None:
    d = make(variants=[("control", 1 / 3), ("a", 1 / 3), ("b", 1 / 3)])
    assert len(d.variants) == 3
    make(variants=[("control", 0.5), ("treatment", 0.5 + 5e-10)])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("status", "deleted", "Experiment 'cat61-v1': status must be one of draft, running, paused, stopped, "
                              "archived. Got 'deleted'."),
        ("version", 0, "Experiment 'cat61-v1': version must be an integer >= 1. Got 0."),
        ("updated_ts", 5, "Experiment 'cat61-v1': updated_ts (5) is before created_ts (1700000000000)."),
    ],
)  # fmt: skip
def test_lifecycle_field_validation(field: str, value: object, message: str) -> None:
    with pytest.raises(ExperimentError) as info:
        replace(make(), **{field: value})
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: "not json", "Experiment definition is not valid JSON"),
        (lambda d: [1, 2], "Experiment definition must be a JSON object. Got list."),
        (lambda d: {k: v for k, v in d.items() if k not in ("salt", "traffic")},
         "Experiment 'cat61-v1': definition is missing salt, traffic."),
        (lambda d: {**d, "model": "m.pmml"},
         "Experiment 'cat61-v1': model must be an object with pmml_path, model_version and features."),
        (lambda d: {**d, "model": {**d["model"], "features": "age"}},
         "Experiment 'cat61-v1': model.features must be a list. Got 'age'."),
        (lambda d: {**d, "variants": [["control", 0.5]]},
         "Experiment 'cat61-v1': variants must be a list of {name, weight} objects. Got [['control', 0.5]]."),
        (lambda d: {**d, "secondary_metrics": "revenue_per_user"},
         "Experiment 'cat61-v1': secondary_metrics must be a list. Got 'revenue_per_user'."),
        (lambda d: {**d, "version": "2"}, "Experiment 'cat61-v1': version must be an integer >= 1. Got '2'."),
    ],
)  # fmt: skip
def test_from_json_rejects_malformed_values(mutate: Any, message: str) -> None:
    data = json.loads(make().to_json())
    raw = mutate(data)
    text = raw if isinstance(raw, str) else json.dumps(raw)
    with pytest.raises(ExperimentError) as info:
        ExperimentDefinition.from_json(text)
    assert str(info.value).startswith(message)


# ---------------------------------------------------------------------------------------------------- lifecycle
LEGAL = [
    ("draft", "launch", "running"),
    ("running", "pause", "paused"),
    ("paused", "resume", "running"),
    ("running", "stop", "stopped"),
    ("paused", "stop", "stopped"),
    ("draft", "stop", "archived"),
]
ALL_PAIRS = [(s, a) for s in ("draft", "running", "paused", "stopped", "archived") for a in ACTIONS]
ILLEGAL = [(s, a) for s, a in ALL_PAIRS if (s, a) not in {(x, y) for x, y, _ in LEGAL}]


def test_transition_table_matches_the_lifecycle() -> None:
    assert {(s, a, t) for a in TRANSITIONS for s, t in TRANSITIONS[a].items()} == set(LEGAL)
    assert len(ILLEGAL) == 14


@pytest.mark.parametrize(("source", "action", "target"), LEGAL)
def test_legal_transition_bumps_version_and_timestamp(source: str, action: str, target: str) -> None:
    d = replace(at(source), version=4)
    after = d.transition(action, now_ms=1_700_000_000_500)  # type: ignore[arg-type]
    assert after.status == target
    assert after.version == 5
    assert after.updated_ts == 1_700_000_000_500
    assert after.created_ts == d.created_ts
    assert replace(after, status=source, version=4, updated_ts=d.updated_ts) == d  # nothing else changed


@pytest.mark.parametrize(("source", "action"), ILLEGAL)
def test_illegal_transition_is_refused(source: str, action: str) -> None:
    allowed = " or ".join(TRANSITIONS[action])
    with pytest.raises(ExperimentError) as info:
        at(source).transition(action, now_ms=1_800_000_000_000)  # type: ignore[arg-type]
    assert str(info.value) == (
        f"Experiment 'cat61-v1': cannot {action}: it is {source}, and {action} is only allowed from {allowed}."
    )


def test_resuming_a_stopped_experiment_names_the_problem() -> None:
    with pytest.raises(ExperimentError, match="cannot resume: it is stopped, and resume is only allowed from paused"):
        at("stopped").transition("resume", now_ms=1)


def test_unknown_action() -> None:
    with pytest.raises(ExperimentError, match="unknown action 'archive'"):
        make().transition("archive", now_ms=1)  # type: ignore[arg-type]


def test_timestamps_never_go_backwards() -> None:
    assert make().transition("launch", now_ms=5).updated_ts == make().updated_ts


# ------------------------------------------------------------------------------------------------------ changes
@pytest.mark.parametrize("status", ["draft", "running", "paused"])
def test_traffic_may_change_until_stopped(status: str) -> None:
    after = at(status).updated(1_700_000_001_000, traffic=0.25)
    assert (after.traffic, after.version, after.status) == (0.25, 2, status)


@pytest.mark.parametrize("status", ["running", "paused"])
def test_changing_salt_or_weights_of_a_launched_experiment_is_refused(status: str) -> None:
    d = at(status)
    with pytest.raises(ExperimentError) as info:
        d.updated(1, salt="other")
    assert str(info.value) == (
        f"Experiment 'cat61-v1': cannot change the salt of a {status} experiment: it would reshuffle users between "
        "variants. Stop it and create a new experiment instead."
    )
    with pytest.raises(ExperimentError, match=r"cannot change the variant weights .* would reshuffle users"):
        d.updated(1, variants=[("control", 0.3), ("treatment", 0.7)])
    with pytest.raises(ExperimentError, match="cannot change the salt and the variant weights"):
        d.updated(1, salt="x", variants=[("control", 0.3), ("treatment", 0.7)])
    with pytest.raises(ExperimentError, match=r"cannot change threshold .* change the treatment mid-test"):
        d.updated(1, threshold=0.7)
    assert d.updated(1, salt=d.salt).version == 2  # an unchanged value is not a change


def test_draft_may_change_anything_editable() -> None:
    after = make().updated(1_700_000_000_001, salt="s2", variants=[("control", 0.3), ("treatment", 0.7)], threshold=0.6)
    assert (after.salt, after.weights(), after.threshold) == ("s2", [("control", 0.3), ("treatment", 0.7)], 0.6)


def test_changes_that_are_never_allowed() -> None:
    with pytest.raises(ExperimentError, match="it is stopped; a stopped experiment cannot be changed"):
        at("stopped").updated(1, traffic=0.5)
    with pytest.raises(ExperimentError, match="it is archived; an archived experiment cannot be changed"):
        at("archived").updated(1, traffic=0.5)
    with pytest.raises(ExperimentError, match="status, version cannot be changed directly"):
        make().updated(1, status="running", version=9)
    with pytest.raises(ExperimentError, match="unknown field"):
        make().updated(1, colour="red")
    with pytest.raises(ExperimentError, match=r"traffic must be in \(0, 1\]. Got 2"):
        at("running").updated(1, traffic=2)


def test_definition_is_frozen() -> None:
    with pytest.raises(AttributeError):
        make().traffic = 0.5  # type: ignore[misc]
    assert isinstance(make().variants[0], Variant)
