"""The control arm is named and checked, and it is the only arm never scored, whatever the declared order or names."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiment.core.assignment import assign
from experiment.core.definition import ExperimentDefinition, ModelRef
from experiment.core.errors import ExperimentError
from experiment.core.view import parse_definition
from experiment.simulation.simulator import build_population
from experiment.stats.analysis import AnalysisConfig
from tests.helpers.fill_store import definition_dict

MODEL = ModelRef("artifacts/model/xgboost_model.pmml", "ab" * 32, ("age", "man", "woman", "cat1", "cat2"))
NAMES = ("control", "treatment", "baseline", "a", "b")
CUSTOMERS = [f"c{i}" for i in range(300)]


def make(variants: list[tuple[str, float]], control: str = "control") -> ExperimentDefinition:
    return ExperimentDefinition.new(
        id="e1", name="n", hypothesis="h", owner="o", category="cat61", model=MODEL, threshold=0.5, now_ms=1,
        variants=variants, control=control,
    )  # fmt: skip


@st.composite
def declared_arms(draw: st.DrawFn) -> tuple[list[tuple[str, float]], str]:
    """Any order and naming of 2-4 arms, positive weights summing to 1, and any control name (valid or not)."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=2, max_size=4, unique=True))
    raw = draw(st.lists(st.integers(1, 9), min_size=len(names), max_size=len(names)))
    variants = [(name, k / sum(raw)) for name, k in zip(names, raw, strict=True)]
    return variants, draw(st.sampled_from([*names, "control", "nobody"]))


@settings(max_examples=300, deadline=None)
@given(declared_arms())
def test_a_definition_validates_exactly_when_the_control_is_named_first(
    case: tuple[list[tuple[str, float]], str],
) -> None:
    variants, control = case
    names = [name for name, _ in variants]
    expected = names[0] == control and ("control" not in names or control == "control")
    try:
        make(variants, control)
    except ExperimentError as error:
        assert not expected, error
        assert "\n" not in str(error) and repr(control) in str(error)
    else:
        assert expected


@settings(max_examples=300, deadline=None)
@given(declared_arms())
def test_only_non_control_arms_are_ever_scored(case: tuple[list[tuple[str, float]], str]) -> None:
    variants, control = case
    try:
        definition = make(variants, control)
    except ExperimentError:
        return  # refused: it never reaches the job (the property above pins which ones)
    view = parse_definition(definition.to_json())  # what the job holds
    names = [name for name, _ in variants]
    scored = [name for name in names if view.is_scored(name)]
    assert scored == [name for name in names if name != definition.control] == list(definition.treatments)
    assert "control" not in scored and definition.control not in scored
    for customer in CUSTOMERS:
        arm = assign(view.salt, customer, view.traffic, view.weights)
        assert arm is not None and view.is_scored(arm) == (arm != definition.control)
    config = AnalysisConfig.from_definition(definition)  # what the report compares
    assert (config.control, config.treatments) == (definition.control, tuple(scored))


@pytest.mark.parametrize(
    ("variants", "control", "message"),
    [
        ([("treatment", 0.5), ("control", 0.5)], "control",
         "Experiment 'e1': the control must be the first declared variant. Got control='control' with variants "
         "treatment, control."),
        ([("baseline", 0.5), ("new", 0.5)], "control",
         "Experiment 'e1': control must name one of the variants (baseline, new). Got control='control'."),
        ([("baseline", 0.5), ("control", 0.5)], "baseline",
         "Experiment 'e1': the variant named 'control' must be the control. Got control='baseline' with variants "
         "baseline, control."),
        ([("new", 0.5), ("baseline", 0.5)], "baseline",
         "Experiment 'e1': the control must be the first declared variant. Got control='baseline' with variants "
         "new, baseline."),
    ],
)  # fmt: skip
def test_a_misplaced_or_misnamed_control_is_refused_in_one_line(
    variants: list[tuple[str, float]], control: str, message: str
) -> None:
    with pytest.raises(ExperimentError) as info:
        make(variants, control)
    assert str(info.value) == message
    assert info.value.exit_code == 2


def test_a_named_control_round_trips_and_cannot_change_once_launched() -> None:
    d = make([("baseline", 0.4), ("new", 0.6)], control="baseline")
    assert (d.control, d.treatments) == ("baseline", ("new",))
    assert json.loads(d.to_json())["control"] == "baseline"
    assert ExperimentDefinition.from_json(d.to_json()) == d
    running = d.transition("launch", now_ms=2)
    with pytest.raises(ExperimentError, match=r"cannot change control of a running experiment"):
        running.updated(3, control="new")


def _legacy(variants: list[tuple[str, float]]) -> str:
    data: dict[str, Any] = json.loads(make([("control", 0.5), ("treatment", 0.5)]).to_json())
    del data["control"]
    data["variants"] = [{"name": n, "weight": w} for n, w in variants]
    return json.dumps(data)


def test_definitions_written_before_the_control_field_still_parse() -> None:
    """Older writers meant the first declared arm; a swapped one of those is refused like a new one."""
    assert ExperimentDefinition.from_json(_legacy([("control", 0.5), ("treatment", 0.5)])).control == "control"
    assert parse_definition(_legacy([("baseline", 0.5), ("new", 0.5)])).control == "baseline"
    with pytest.raises(ExperimentError, match="the variant named 'control' must be the control"):
        ExperimentDefinition.from_json(_legacy([("treatment", 0.5), ("control", 0.5)]))


def test_analysis_uses_the_named_control_not_the_position() -> None:
    config = AnalysisConfig(experiment_id="e1", variants=(("new", 0.5), ("baseline", 0.5)), control="baseline")
    assert (config.control, config.treatments) == ("baseline", ("new",))
    named = {**definition_dict(variants=(("baseline", 0.5), ("new", 0.5))), "control": "baseline"}
    config = AnalysisConfig.from_definition(ExperimentDefinition.from_dict(named))
    assert (config.control, config.treatments) == ("baseline", ("new",))
    stored_before_the_field = ExperimentDefinition.from_dict(definition_dict())
    legacy = AnalysisConfig.from_definition(stored_before_the_field)
    assert (legacy.control, legacy.treatments) == ("control", ("treatment",))
    with pytest.raises(ValueError, match="control must name one of the variants"):
        AnalysisConfig(experiment_id="e1", variants=(("control", 0.5), ("treatment", 0.5)), control="nobody")


class _ConstantScorer:
    """Scores everyone 0.9, so every scored customer is shown."""

    feature_names = ("age", "man", "woman", *(f"cat{j}" for j in range(1, 8)))

    def score_batch(self, features: Any) -> Any:
        import numpy as np

        return np.full(len(features), 0.9)


def test_the_simulator_shows_only_non_control_arms() -> None:
    definition = ExperimentDefinition.new(
        id="e1", name="n", hypothesis="h", owner="o", category="cat3", threshold=0.5, now_ms=1,
        model=ModelRef("m.pmml", "ab" * 32, _ConstantScorer.feature_names),
        variants=[("baseline", 0.5), ("new", 0.5)], control="baseline",
    )  # fmt: skip
    population = build_population(parse_definition(definition.to_json()), _ConstantScorer(), customers=400, seed=1)
    shown = {v for v, s in zip(population.variant, population.shown, strict=True) if s}
    hidden = {v for v, s in zip(population.variant, population.shown, strict=True) if not s}
    assert (shown, hidden) == ({"new"}, {"baseline"})
