"""The simulator with a model per arm: each customer decided by its arm's model and threshold, and the exact true
lift of each model arm versus the control and of the challenger versus the champion (checked against a direct
computation from the ground truth)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from data import ground_truth
from experiment.cli.simulate_cmd import summary_lines
from experiment.core import events
from experiment.core.errors import ConfigError
from experiment.core.view import ArmSpec, ExperimentView
from experiment.simulation.simulator import SimulationConfig, build_population, simulate, true_lift, true_lifts

FEATURES = events.default_feature_names(60)
SUBSET = ("age", "woman", "cat2", "cat5")
WINDOW_MS = 7 * 86_400_000
ARMS = (("control", 0.34), ("champion", 0.33), ("challenger", 0.33))


class TruthScorer:
    """The ground truth's own interest q(x): the champion (the oracle model)."""

    feature_names = FEATURES

    def score_batch(self, features: np.ndarray) -> np.ndarray:
        return ground_truth.label_probability(pd.DataFrame(features, columns=list(self.feature_names)))


class SubsetScorer:
    """A challenger that sees only a few features (the rest count as absent, 0): a different, worse policy."""

    feature_names = SUBSET

    def score_batch(self, features: np.ndarray) -> np.ndarray:
        assert features.shape[1] == len(SUBSET)  # it is handed its own features only
        return ground_truth.label_probability(pd.DataFrame(features, columns=list(SUBSET)))


def _view(traffic: float = 1.0) -> ExperimentView:
    return ExperimentView(
        id="cc-1", version=1, status="running", salt="cc-1", traffic=traffic, weights=ARMS, control="control",
        threshold=0.4, pmml_path="champion.pmml", model_version="c" * 64, features=FEATURES,
        attribution_window_ms=WINDOW_MS,
        arms=(
            ArmSpec("champion", "champion.pmml", "c" * 64, FEATURES, 0.4),
            ArmSpec("challenger", "challenger.pmml", "d" * 64, SUBSET, 0.3),
        ),
    )  # fmt: skip


SCORERS = {"champion": TruthScorer(), "challenger": SubsetScorer()}


@pytest.fixture(scope="module")
def population():
    return build_population(_view(traffic=0.9), SCORERS, customers=6_000, seed=21)


def test_each_customer_is_decided_by_its_arms_model_and_threshold(population) -> None:
    arms = np.array([v or "" for v in population.variant])
    truth = ground_truth.label_probability(population.features)
    subset = ground_truth.label_probability(population.features[list(SUBSET)])
    assert list(population.features.columns) == list(FEATURES)  # sessions carry every feature
    assert not np.allclose(truth, subset)  # two different policies
    np.testing.assert_allclose(population.arm_scores["champion"], truth, rtol=0, atol=1e-15)
    np.testing.assert_allclose(population.arm_scores["challenger"], subset, rtol=0, atol=1e-15)
    expected = ((arms == "champion") & (truth >= 0.4)) | ((arms == "challenger") & (subset >= 0.3))
    np.testing.assert_array_equal(population.shown, expected)
    np.testing.assert_array_equal(population.score[arms == "challenger"], subset[arms == "challenger"])
    np.testing.assert_array_equal(population.score[arms == "champion"], truth[arms == "champion"])
    assert population.shown[arms == "challenger"].any() and population.shown[arms == "champion"].any()
    assert not population.shown[arms == "control"].any() and not population.shown[arms == ""].any()


def _direct(population, policy: np.ndarray | bool, base: np.ndarray | bool) -> tuple[float, float, float, float]:
    """(baseline rate, arm rate, baseline revenue/user, arm revenue/user) over the in-traffic customers."""
    keep = population.in_experiment
    features = population.features[keep]
    p0, p1 = ground_truth.true_conversion_probs(features)
    policy = policy[keep] if isinstance(policy, np.ndarray) else policy
    base = base[keep] if isinstance(base, np.ndarray) else base
    return (
        float(np.where(base, p1, p0).mean()),
        float(np.where(policy, p1, p0).mean()),
        float(ground_truth.expected_revenue(features, base).mean()),
        float(ground_truth.expected_revenue(features, policy).mean()),
    )


def test_the_true_lift_of_each_model_arm_and_of_the_challenger_vs_the_champion(population) -> None:
    champion = ground_truth.label_probability(population.features) >= 0.4
    challenger = ground_truth.label_probability(population.features[list(SUBSET)]) >= 0.3
    cases = {
        ("champion", "control"): _direct(population, champion, False),
        ("challenger", "control"): _direct(population, challenger, False),
        ("challenger", "champion"): _direct(population, challenger, champion),
    }
    lifts = true_lifts(population)
    assert [(lift.arm, lift.baseline) for lift in lifts] == list(cases)
    for lift in lifts:
        base_rate, arm_rate, base_revenue, arm_revenue = cases[(lift.arm, lift.baseline)]
        assert lift.customers == int(population.in_experiment.sum())
        assert lift.control_rate == pytest.approx(base_rate, rel=1e-12)
        assert lift.treatment_rate == pytest.approx(arm_rate, rel=1e-12)
        assert lift.abs_lift == pytest.approx(arm_rate - base_rate, rel=1e-9, abs=1e-15)
        assert lift.rel_lift == pytest.approx((arm_rate - base_rate) / base_rate, rel=1e-9)
        assert lift.control_revenue_per_user == pytest.approx(base_revenue, rel=1e-12)
        assert lift.treatment_revenue_per_user == pytest.approx(arm_revenue, rel=1e-12)
    by_pair = {(lift.arm, lift.baseline): lift for lift in lifts}
    # Challenger vs champion is the difference of their lifts vs the control; the oracle champion wins.
    assert by_pair[("challenger", "champion")].abs_lift == pytest.approx(
        by_pair[("challenger", "control")].abs_lift - by_pair[("champion", "control")].abs_lift, abs=1e-15
    )
    assert by_pair[("champion", "control")].abs_lift > by_pair[("challenger", "control")].abs_lift
    assert true_lift(population) == by_pair[("champion", "control")]  # the default: the first model arm
    assert true_lift(population, arm="challenger", baseline="champion") == by_pair[("challenger", "champion")]


def test_arms_sharing_one_model_and_threshold_are_not_compared_with_each_other() -> None:
    view = ExperimentView(
        id="same", version=1, status="running", salt="same", traffic=1.0, weights=ARMS, control="control",
        threshold=0.4, pmml_path="m.pmml", model_version="c" * 64, features=FEATURES, attribution_window_ms=WINDOW_MS,
    )  # fmt: skip
    population = build_population(view, TruthScorer(), customers=500, seed=3)
    assert [(lift.arm, lift.baseline) for lift in true_lifts(population)] == [
        ("champion", "control"),
        ("challenger", "control"),
    ]


def test_a_model_per_arm_needs_a_scorer_per_arm() -> None:
    with pytest.raises(ConfigError, match="has a model per arm; pass one scorer per model arm"):
        build_population(_view(), TruthScorer(), customers=10, seed=1)
    with pytest.raises(ConfigError, match="No scorer for the model arm"):
        build_population(_view(), {"champion": TruthScorer()}, customers=10, seed=1)


def test_the_result_and_the_summary_carry_every_arms_true_lift() -> None:
    sent: list[tuple[str, bytes, bytes]] = []
    config = SimulationConfig(customers=800, rate=1e9, seed=5, start_ms=1_700_000_000_000)
    result = simulate(_view(), SCORERS, config, lambda *message: sent.append(message))
    data = json.loads(json.dumps(result.as_dict()))
    assert [(lift["arm"], lift["baseline"]) for lift in data["true_lifts"]] == [
        ("champion", "control"),
        ("challenger", "control"),
        ("challenger", "champion"),
    ]
    assert data["true_lift"] == data["true_lifts"][0]  # two-arm readers still find the first model arm's
    lines = [line for line in summary_lines(result) if line.startswith("TRUE lift")]
    assert [line.split(" (ground truth")[0] for line in lines] == [
        "TRUE lift of champion vs control",
        "TRUE lift of challenger vs control",
        "TRUE lift of challenger vs champion",
    ]
    lift = result.true_lifts[2]
    assert f"conversion {lift.control_rate:.4%} -> {lift.treatment_rate:.4%}" in lines[2]


def test_two_arms_print_the_line_they_always_printed() -> None:
    view = ExperimentView(
        id="two", version=1, status="running", salt="two", traffic=1.0, weights=(("control", 0.5), ("treatment", 0.5)),
        control="control", threshold=0.4, pmml_path="m.pmml", model_version="c" * 64, features=FEATURES,
        attribution_window_ms=WINDOW_MS,
    )  # fmt: skip
    config = SimulationConfig(customers=300, rate=1e9, seed=4, start_ms=1_700_000_000_000)
    result = simulate(view, TruthScorer(), config, lambda *message: None)
    assert result.true_lifts == [result.true_lift]
    (line,) = [line for line in summary_lines(result) if line.startswith("TRUE lift")]
    assert line.startswith("TRUE lift of the treatment policy (ground truth, 300 customers): conversion ")


# --------------------------------------------------------------------------------------------------------------
# The true lift by segment
# --------------------------------------------------------------------------------------------------------------


def test_segment_labels_are_the_jobs_segments_of_the_first_exposure(population) -> None:
    from experiment.core.segments import segments_of
    from experiment.simulation.population import segment_labels

    labels = segment_labels(population)
    rows = population.features.to_dict(orient="records")
    for i in range(0, len(rows), 97):
        purchases = int(sum(v for k, v in rows[i].items() if k.startswith("cat")))
        expected = segments_of({k: float(v) for k, v in rows[i].items()}, purchases)
        assert {dimension: labels[dimension][i] for dimension in labels} == expected
    assert set(labels["gender"]) == {"woman", "man", "unstated"}
    assert "25-34" in set(labels["age_band"])


def test_true_segment_lifts_add_up_to_the_overall_lift(population) -> None:
    """Means are linear: the customers-weighted segment lifts of a dimension equal the whole population's."""
    from experiment.simulation.population import true_segment_lifts

    overall = {(lift.arm, lift.baseline): lift for lift in true_lifts(population)}
    by_segment = true_segment_lifts(population)
    assert set(by_segment) == {"age_band", "gender", "customer_type", "history_tier"}
    for dimension, segments in by_segment.items():
        for key, lift in overall.items():
            parts = [next(x for x in lifts if (x.arm, x.baseline) == key) for lifts in segments.values()]
            assert sum(part.customers for part in parts) == lift.customers, dimension
            weighted = sum(part.abs_lift * part.customers for part in parts) / lift.customers
            assert weighted == pytest.approx(lift.abs_lift, abs=1e-12), (dimension, key)


def test_the_known_heterogeneous_effect_shows_in_the_true_segment_lifts(population) -> None:
    """The ground truth helps women aged 25-34 far more: their true lift exceeds every other age band's and gender's."""
    from experiment.simulation.population import true_segment_lifts

    lifts = true_segment_lifts(population)

    def champion(dimension: str, value: str) -> float:
        return next(x.abs_lift for x in lifts[dimension][value] if (x.arm, x.baseline) == ("champion", "control"))

    young = champion("age_band", "25-34")
    assert all(young > champion("age_band", band) + 0.02 for band in lifts["age_band"] if band != "25-34")
    assert champion("gender", "woman") > champion("gender", "man") + 0.02
