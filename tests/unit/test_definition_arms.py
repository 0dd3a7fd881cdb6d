"""Model arms in the definition: `arm_models` and `segment_attributes` round trip, refusals, frozen once launched."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from experiment.core.definition import ArmModel, ExperimentDefinition, ModelRef
from experiment.core.errors import ExperimentError

CHAMPION = ModelRef("models/champion.pmml", "ab" * 32, ("age", "man", "woman", "cat1", "cat2"))
CHALLENGER = ModelRef("models/challenger.pmml", "cd" * 32, ("age", "cat2", "cat7"))
ARMS = [("control", 0.34), ("champion", 0.33), ("challenger", 0.33)]


def make(**overrides: Any) -> ExperimentDefinition:
    values: dict[str, Any] = {
        "id": "cc-v1",
        "name": "Champion vs challenger",
        "hypothesis": "The challenger picks better",
        "owner": "growth",
        "category": "cat61",
        "model": CHAMPION,
        "threshold": 0.5,
        "now_ms": 1_700_000_000_000,
        "variants": ARMS,
        "arm_models": {"challenger": ArmModel(CHALLENGER, 0.45)},
    }
    values.update(overrides)
    return ExperimentDefinition.new(**values)


def test_arm_models_and_segment_attributes_round_trip_through_json() -> None:
    d = make(segment_attributes=["cat2", "cat7"])
    data = json.loads(d.to_json())
    assert data["arm_models"] == {
        "challenger": {
            "model": {
                "pmml_path": CHALLENGER.pmml_path,
                "model_version": "cd" * 32,
                "features": ["age", "cat2", "cat7"],
            },
            "threshold": 0.45,
        }
    }
    assert data["segment_attributes"] == ["cat2", "cat7"]
    back = ExperimentDefinition.from_json(d.to_json())
    assert back == d
    assert back.arm_models == {"challenger": ArmModel(CHALLENGER, 0.45)}
    assert back.segment_attributes == ("cat2", "cat7")
    assert back.models() == {"champion": CHAMPION, "challenger": CHALLENGER}
    assert (back.model_of("control"), back.model_of("champion"), back.model_of("challenger")) == (
        None,
        CHAMPION,
        CHALLENGER,
    )
    assert (back.threshold_of("champion"), back.threshold_of("challenger")) == (0.5, 0.45)


def test_a_one_model_definition_keeps_the_json_it_always_had() -> None:
    data = json.loads(make(arm_models=None).to_json())
    assert "arm_models" not in data and "segment_attributes" not in data
    back = ExperimentDefinition.from_json(json.dumps(data))
    assert back.arm_models == {} and back.segment_attributes == ()
    assert back.models() == {"champion": CHAMPION, "challenger": CHAMPION}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"arm_models": {"nope": ArmModel(CHALLENGER, 0.4)}},
         "arm_models names 'nope', which is not a variant (control, champion, challenger)."),
        ({"arm_models": {"control": ArmModel(CHALLENGER, 0.4)}},
         "arm_models names the control 'control'; the control is never scored."),
        ({"arm_models": {"challenger": CHALLENGER}},
         f"arm_models['challenger'] must be an ArmModel. Got {CHALLENGER!r}."),
        ({"arm_models": {"challenger": ArmModel(CHALLENGER, 1.5)}},
         "arm_models.challenger.threshold must be a probability in [0, 1]. Got 1.5."),
        ({"arm_models": {"challenger": ArmModel(CHALLENGER, True)}},
         "arm_models.challenger.threshold must be a probability in [0, 1]. Got True."),
        ({"arm_models": {"challenger": ArmModel(replace(CHALLENGER, pmml_path=""), 0.4)}},
         "arm_models.challenger.model.pmml_path must be a non-empty string. Got ''."),
        ({"arm_models": {"challenger": ArmModel(replace(CHALLENGER, model_version="AB" * 32), 0.4)}},
         "arm_models.challenger.model.model_version must be the SHA-256 of the PMML file (64 lowercase hex digits). "
         f"Got '{'AB' * 32}'."),
        ({"arm_models": {"challenger": ArmModel(replace(CHALLENGER, features=()), 0.4)}},
         "arm_models.challenger.model.features must be a non-empty list of names. Got []."),
        ({"arm_models": {"challenger": ArmModel(replace(CHALLENGER, features=("age", "age")), 0.4)}},
         "arm_models.challenger.model.features has duplicates: ['age', 'age']."),
        ({"segment_attributes": ["age_band"]},
         "segment attribute 'age_band' is a built-in segment (age_band, gender, customer_type, history_tier); it "
         "is recorded already."),
        ({"segment_attributes": ["cat9"]}, "segment attribute 'cat9' is not a feature of the experiment's models."),
        ({"segment_attributes": ["cat2", "cat2"]}, "segment_attributes has duplicates: ['cat2', 'cat2']."),
        ({"segment_attributes": ["cat2", ""]}, "segment_attributes must be a list of feature names. Got ('cat2', '')."),
    ],
)  # fmt: skip
def test_every_refusal_has_its_exact_message(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ExperimentError) as info:
        make(**overrides)
    assert str(info.value) == f"Experiment 'cc-v1': {message}"


def test_a_challenger_only_feature_may_be_a_segment_attribute() -> None:
    assert make(segment_attributes=["cat7"]).segment_attributes == ("cat7",)  # only the challenger's model has it


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(arm_models=[]), "arm_models must be an object of arm name -> {model, threshold}. Got []."),
        (lambda d: d["arm_models"].update(challenger={"threshold": 0.4}),
         "arm_models['challenger'] must be an object with model and threshold. Got {'threshold': 0.4}."),
        (lambda d: d["arm_models"]["challenger"].update(model={"pmml_path": "x"}),
         "arm_models.challenger.model must be an object with pmml_path, model_version and features."),
        (lambda d: d["arm_models"]["challenger"]["model"].update(features="age"),
         "arm_models.challenger.model.features must be a list. Got 'age'."),
        (lambda d: d.update(segment_attributes="cat2"), "segment_attributes must be a list. Got 'cat2'."),
    ],
)  # fmt: skip
def test_from_json_refuses_malformed_arm_models(mutate: Any, message: str) -> None:
    data = json.loads(make().to_json())
    mutate(data)
    with pytest.raises(ExperimentError) as info:
        ExperimentDefinition.from_json(json.dumps(data))
    assert str(info.value) == f"Experiment 'cc-v1': {message}"


@pytest.mark.parametrize("status", ["running", "paused"])
def test_a_model_arm_is_swapped_only_by_a_new_experiment(status: str) -> None:
    launched = replace(make(), status=status)
    new_model = ModelRef("models/challenger-2.pmml", "ef" * 32, CHALLENGER.features)
    for arm_models in ({"challenger": ArmModel(new_model, 0.45)}, {"challenger": ArmModel(CHALLENGER, 0.4)}, {}):
        with pytest.raises(ExperimentError) as info:
            launched.updated(1_700_000_000_001, arm_models=arm_models)
        assert str(info.value) == (
            f"Experiment 'cc-v1': cannot change arm_models of a {status} experiment: it would change the treatment "
            "mid-test. Stop it and create a new experiment instead."
        )
    with pytest.raises(ExperimentError, match=r"cannot change segment_attributes of a .* would lack it"):
        launched.updated(1_700_000_000_001, segment_attributes=("cat2",))
    same = launched.updated(1_700_000_000_001, arm_models={"challenger": ArmModel(CHALLENGER, 0.45)})
    assert same.version == 2  # an unchanged value is not a change


def test_a_draft_may_still_change_its_arm_models() -> None:
    new_model = ModelRef("models/challenger-2.pmml", "ef" * 32, CHALLENGER.features)
    after = make().updated(1_700_000_000_001, arm_models={"challenger": ArmModel(new_model, 0.4)})
    assert after.model_of("challenger") == new_model and after.threshold_of("challenger") == 0.4
