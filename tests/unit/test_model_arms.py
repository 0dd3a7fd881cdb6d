"""A model per arm (champion vs challenger), decided by the pure rules and by the job's adapter.

Each scored arm is scored only by its own model with its own threshold; the control by none; and one unusable arm
model makes the whole experiment assign nobody (an arm without its model would bias the comparison).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from experiment.core import events
from experiment.core.assignment import assign
from experiment.core.decisions import Assigned, CustomerState, Skipped, arm_scorers, decide_session
from experiment.core.definition import ArmModel, ExperimentDefinition, ModelRef
from experiment.core.view import ArmSpec, ExperimentView, parse_definition
from flink_pipeline.functions import DecideFunction, Topics, _Metrics
from tests.helpers.fixed_model import Fixed
from tests.helpers.null_metrics import NullMetricGroup

NAMES = events.default_feature_names(3)
CHAMPION = ModelRef("champion.pmml", "c" * 64, NAMES)
CHALLENGER = ModelRef("challenger.pmml", "d" * 64, ("age", "cat1"))  # a feature subset
ARMS = (("control", 0.34), ("champion", 0.33), ("challenger", 0.33))
TOPICS = Topics(*(f"m.{name}" for name in ("s", "o", "e", "a", "ao", "dl", "health")))


def definition(exp_id: str = "cc-1", **changes: Any) -> ExperimentDefinition:
    """A running champion-vs-challenger experiment: champion on the experiment's model at 0.5, challenger on its own
    model at 0.45."""
    values: dict[str, Any] = {
        "id": exp_id, "name": "cc", "hypothesis": "h", "owner": "o", "category": "cat61", "model": CHAMPION,
        "threshold": 0.5, "now_ms": 1, "variants": ARMS, "arm_models": {"challenger": ArmModel(CHALLENGER, 0.45)},
    }  # fmt: skip
    values.update(changes)
    return ExperimentDefinition.new(**values).transition("launch", 2)


def running_view(exp_id: str = "cc-1", **changes: Any) -> ExperimentView:
    return parse_definition(definition(exp_id, **changes).to_json())


def customer_in(view: ExperimentView, arm: str) -> str:
    return next(c for c in (f"c{i}" for i in range(10_000)) if assign(view.salt, c, view.traffic, view.weights) == arm)


def test_the_view_resolves_each_scored_arm_to_its_own_model_and_threshold() -> None:
    view = running_view()
    assert view.arms == (
        ArmSpec("champion", CHAMPION.pmml_path, CHAMPION.model_version, NAMES, 0.5),
        ArmSpec("challenger", CHALLENGER.pmml_path, CHALLENGER.model_version, ("age", "cat1"), 0.45),
    )
    assert view.arm("challenger") is view.arms[1] and view.arm("control") is None and view.arm("nope") is None


def test_a_hand_built_view_scores_every_non_control_arm_with_the_experiments_model() -> None:
    view = ExperimentView(
        id="h", version=1, status="running", salt="h", traffic=1.0, weights=ARMS, control="control", threshold=0.3,
        pmml_path="m.pmml", model_version="e" * 64, features=NAMES, attribution_window_ms=1,
    )  # fmt: skip
    assert [(a.variant, a.model_version, a.threshold) for a in view.arms] == [
        ("champion", "e" * 64, 0.3),
        ("challenger", "e" * 64, 0.3),
    ]
    with pytest.raises(ValueError, match="must be every arm but the control"):
        ExperimentView(
            id="h", version=1, status="running", salt="h", traffic=1.0, weights=ARMS, control="control",
            threshold=0.3, pmml_path="m.pmml", model_version="e" * 64, features=NAMES, attribution_window_ms=1,
            arms=(ArmSpec("challenger", "x.pmml", "f" * 64, NAMES, 0.3),),
        )  # fmt: skip


@pytest.mark.parametrize(
    ("champion_score", "challenger_score", "decisions"),
    [
        (0.6, 0.4, {"champion": "show", "challenger": "hide"}),
        (0.47, 0.47, {"champion": "hide", "challenger": "show"}),  # 0.47 is under 0.5 but over 0.45: own thresholds
        (0.5, 0.45, {"champion": "show", "challenger": "show"}),  # each threshold itself shows
    ],
)
def test_each_arm_is_scored_by_its_own_model_with_its_own_threshold(
    champion_score: float, challenger_score: float, decisions: dict[str, str]
) -> None:
    view = running_view()
    for arm in ("control", "champion", "challenger"):
        models = {CHAMPION.model_version: Fixed(champion_score), CHALLENGER.model_version: Fixed(challenger_score)}
        scorers = arm_scorers(view, lambda _v, spec, models=models: models[spec.model_version])
        (decided,) = decide_session(customer_in(view, arm), {"age": 30.0}, [view], lambda _v, s=scorers: s)
        assert isinstance(decided, Assigned) and decided.variant == arm
        calls = {name: models[ref.model_version].calls for name, ref in (("champion", CHAMPION),
                                                                        ("challenger", CHALLENGER))}  # fmt: skip
        if arm == "control":
            assert (decided.score, decided.decision, decided.spec) == (None, "hide", None)
            assert calls == {"champion": 0, "challenger": 0}  # the control is never scored
            continue
        own = champion_score if arm == "champion" else challenger_score
        assert (decided.score, decided.decision) == (own, decisions[arm])
        assert decided.spec is view.arm(arm)
        assert calls == {"champion": int(arm == "champion"), "challenger": int(arm == "challenger")}


def test_one_unusable_arm_model_assigns_nobody_in_any_arm() -> None:
    view = running_view()
    asked: list[str] = []

    def scorer_of(_view: ExperimentView, spec: ArmSpec) -> Fixed | None:
        asked.append(spec.variant)
        return None if spec.model_version == CHALLENGER.model_version else Fixed(0.9)

    assert arm_scorers(view, scorer_of) is None
    assert asked == ["champion", "challenger"]  # every arm's model is asked for (and so loaded), in order
    assert arm_scorers(view, lambda _v, _s: Fixed(0.9)) is not None
    for arm in ("control", "champion", "challenger"):
        (decided,) = decide_session(customer_in(view, arm), {}, [view], lambda v: arm_scorers(v, scorer_of))
        assert decided == Skipped(view, "model_unusable")
    # Outside the traffic too: the experiment does not run at all.
    partial = running_view(traffic=0.01)
    outside = next(c for c in (f"o{i}" for i in range(1000)) if assign(partial.salt, c, 0.01, partial.weights) is None)
    assert decide_session(outside, {}, [partial], lambda v: arm_scorers(v, scorer_of)) == (
        Skipped(partial, "model_unusable"),
    )


# ------------------------------------------------------------------ the job's adapter


class _Scorer:
    def __init__(self, score: float) -> None:
        self.score = score

    def score_one(self, features: Mapping[str, float]) -> float:
        return self.score


def _function(views: list[ExperimentView]) -> DecideFunction:
    function = DecideFunction(
        TOPICS, feature_names=NAMES, max_bytes=4_096, hold_ms=1_000, state_ttl_ms=1_000, reference_rows=None,
        scorer_fallback=False,
    )  # fmt: skip
    function._metrics = _Metrics(NullMetricGroup())
    function._views = {v.id: v for v in views}
    function._views_loaded = True
    customers: dict[str, CustomerState] = {}
    function._load = lambda customer_id: customers.setdefault(customer_id, CustomerState())  # type: ignore[method-assign]
    function._save = lambda customer_id, customer: None  # type: ignore[method-assign]
    return function


def _run(function: DecideFunction, n: int) -> dict[str, list[dict[str, Any]]]:
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for i in range(n):
        session = events.Session(f"s{i}", f"c{i}", 1_000 + i, dict.fromkeys(NAMES, 0.0))
        for row in function._on_session(session):
            by_topic.setdefault(row[0], []).append({"key": row[1], **json.loads(row[2])})
    return by_topic


def test_the_job_scores_each_arm_with_its_model_and_records_its_model_version() -> None:
    view = running_view()
    function = _function([view])
    function._scorers[(CHAMPION.model_version, CHAMPION.pmml_path)] = _Scorer(0.7)  # type: ignore[assignment]
    function._scorers[(CHALLENGER.model_version, CHALLENGER.pmml_path)] = _Scorer(0.2)  # type: ignore[assignment]
    out = _run(function, 60)
    got = {(a["variant"], a["score"], a["decision"], a["model_version"]) for a in out[TOPICS.assignments]}
    assert got == {
        ("control", None, "hide", None),
        ("champion", 0.7, "show", CHAMPION.model_version),
        ("challenger", 0.2, "hide", CHALLENGER.model_version),
    }
    assert len(out[TOPICS.assignments]) == 60
    health = sorted((h["model_version"], h["status"], h["reason"]) for h in out[TOPICS.experiment_health])
    assert health == [(CHAMPION.model_version, "model_ready", None), (CHALLENGER.model_version, "model_ready", None)]


def test_the_job_assigns_nobody_when_the_challengers_model_is_missing_and_says_which(tmp_path: Path) -> None:
    missing = ModelRef(str(tmp_path / "missing.pmml"), CHALLENGER.model_version, CHALLENGER.features)
    broken = running_view("cc-broken", arm_models={"challenger": ArmModel(missing, 0.45)})
    healthy = running_view("cc-healthy")
    function = _function([broken, healthy])
    function._scorers[(CHAMPION.model_version, CHAMPION.pmml_path)] = _Scorer(0.7)  # type: ignore[assignment]
    function._scorers[(CHALLENGER.model_version, CHALLENGER.pmml_path)] = _Scorer(0.2)  # type: ignore[assignment]
    out = _run(function, 40)
    assert {a["experiment_id"] for a in out[TOPICS.assignments]} == {"cc-healthy"}
    assert len(out[TOPICS.assignments]) == 40
    health = {(h["experiment_id"], h["model_version"]): h for h in out[TOPICS.experiment_health]}
    assert len(out[TOPICS.experiment_health]) == 4  # once per (experiment, model version), not per session
    refused = health[("cc-broken", CHALLENGER.model_version)]
    assert refused["status"] == "model_unusable" and "does not exist" in refused["reason"]
    assert health[("cc-broken", CHAMPION.model_version)]["status"] == "model_ready"
    assert {h["status"] for (exp, _v), h in health.items() if exp == "cc-healthy"} == {"model_ready"}
    function._metrics.flush()  # type: ignore[union-attr]
    assert function._metrics.totals[("cc-broken", "model_unusable")] == 40  # type: ignore[union-attr]
