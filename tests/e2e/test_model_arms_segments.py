"""End to end with a known truth: champion vs challenger models as arms, and the lift by segment.

Real everything, as in test_end_to_end: two trained PMML models (the challenger without `age`), a three-arm
experiment launched on Kafka, the Flink job on a MiniCluster, simulated traffic drawn from the ground truth (which
helps women aged 25-34 far more), the collector, the store and the report with its arms and segments sections.

What must hold: nothing lost; every scored assignment carries its own arm's model version; each reported arm
difference equals the difference actually drawn; the arms are ranked as the ground truth ranks them; every arm
and segment interval covers its true lift (a fixed salt and seed make this deterministic; coverage itself is
checked by simulation in the statistics tests); and the heterogeneity test finds that the champion's lift differs
across gender and age band, as the ground truth says it does.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest

from experiment.cli.demo import wait_for_job_to_read_experiments
from experiment.cli.simulate_io import load_experiment, load_scorers, run_simulation
from experiment.core.definition import ArmModel, ExperimentDefinition, ModelRef
from experiment.kafka import control_plane
from experiment.model.digest import sha256_file
from experiment.results import truth
from experiment.results.collector import collect
from experiment.results.report import build_report
from experiment.results.store import ResultsStore
from experiment.simulation.simulator import SimulationConfig, build_population

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.flink, pytest.mark.slow]

CUSTOMERS = 6_000
SEED = 8
SALT = "e2e-arms-salt"
DIMENSIONS = ["age_band", "gender"]


def _ref(model: Path) -> ModelRef:
    pmml = model / "xgboost_model.pmml"
    return ModelRef(str(pmml), sha256_file(pmml), tuple(json.loads((model / "model.json").read_text())["features"]))


def test_champion_vs_challenger_and_segments_match_the_ground_truth(
    abflow_settings, model_dir, challenger_dir, running_job, tmp_path
) -> None:
    kafka = abflow_settings.kafka
    champion, challenger = _ref(model_dir / "model"), _ref(challenger_dir)
    assert champion.model_version != challenger.model_version
    now = int(time.time() * 1000)
    experiment_id = f"e2e-arms-{kafka.topic_prefix[-9:-1]}"
    definition = ExperimentDefinition.new(
        id=experiment_id,
        name="champion vs challenger",
        hypothesis="the champion's picks convert better than the challenger's",
        owner="tests",
        category="cat61",
        model=champion,
        threshold=0.5,
        now_ms=now,
        salt=SALT,
        variants=(("control", 0.34), ("champion", 0.33), ("challenger", 0.33)),
        arm_models={"challenger": ArmModel(challenger, 0.5)},
    )
    control_plane.create(kafka, definition)
    control_plane.apply_action(kafka, experiment_id, "launch", now_ms=now + 1)
    wait_for_job_to_read_experiments(kafka, group_id=f"{kafka.topic_prefix}job", timeout_s=180, pid=running_job)

    config = SimulationConfig(customers=CUSTOMERS, rate=5_000, seed=SEED)
    result = run_simulation(abflow_settings, experiment_id, config)
    assert result.completed and result.customers == CUSTOMERS

    def accounted_for(store: ResultsStore, _stats) -> bool:
        a, o = store.con.execute(
            "SELECT (SELECT count(*) FROM assignments WHERE experiment_id = $e), "
            "(SELECT count(*) FROM outcomes WHERE experiment_id = $e)",
            {"e": experiment_id},
        ).fetchone()
        return (a, o) == (result.sessions_in_experiment, result.outcomes_in_experiment)

    store_path = tmp_path / "results.duckdb"
    collect(abflow_settings, str(store_path), until=accounted_for, timeout_s=240)
    collect(abflow_settings, str(store_path))  # and nothing more arrives: counts stay exact
    with ResultsStore(store_path, read_only=True) as store:
        assert accounted_for(store, None)
        report = build_report(store, experiment_id, segments=DIMENSIONS)
        versions = dict(
            store.con.execute(
                "SELECT variant, list(DISTINCT coalesce(model_version, 'none')) FROM assignments "
                "WHERE experiment_id = ? GROUP BY variant",
                [experiment_id],
            ).fetchall()
        )

    # Each arm's assignments carry its own model's version; the control is never scored.
    assert versions == {
        "control": ["none"],
        "champion": [champion.model_version],
        "challenger": [challenger.model_version],
    }
    # Sample sizes are exactly the simulated customers per arm, and each reported difference is exactly the one drawn.
    assert {v.name: v.users for v in report.variants} == result.customers_per_variant
    view = load_experiment(abflow_settings, experiment_id)
    population = build_population(view, load_scorers(view), customers=CUSTOMERS, seed=SEED)
    arms = np.array([v if v is not None else "" for v in population.variant])
    rate = {arm: float(population.converted[arms == arm].mean()) for arm in ("control", "champion", "challenger")}
    assert report.arms is not None
    for row in report.arms.comparisons:
        assert row.abs_diff == pytest.approx(rate[row.arm] - rate[row.baseline], abs=1e-12), row.label

    # The report ranks the arms as the ground truth does, and its intervals cover the true lifts.
    assert truth.reported_ranking(report) == truth.true_ranking(result) == ["champion", "challenger", "control"]
    arm_checks = truth.arm_checks(report, result)
    assert len(arm_checks) == 3 and all(check.covered for check in arm_checks), arm_checks
    segment_checks = truth.segment_checks(report, result)
    assert len(segment_checks) >= 14  # (6 age bands + 3 genders, less empty ones) x 2 model arms
    # Each 95% interval misses its truth one time in twenty, so over ~18 of them one or two misses are expected;
    # more would mean biased estimates. Together they must cover every truth at the family's 95% (Bonferroni: each
    # Wald interval widened from z(0.975) to z(1 - 0.025/m)).
    missed = [check for check in segment_checks if not check.covered]
    assert len(missed) <= 2, missed
    z, z_family = NormalDist().inv_cdf(0.975), NormalDist().inv_cdf(1 - 0.025 / len(segment_checks))
    for check in segment_checks:
        assert check.estimate is not None and check.lower is not None and check.upper is not None, check
        half_width = (check.upper - check.lower) / 2 * z_family / z
        assert abs(check.truth - check.estimate) <= half_width, check
    # The segment the ground truth favours is covered by its own interval too.
    favoured = [c for c in segment_checks if c.what in ("age_band=25-34 champion", "gender=woman champion")]
    assert len(favoured) == 2 and all(check.covered for check in favoured), favoured

    # The known heterogeneous effect is found: the champion's lift differs across gender and across age band.
    assert report.segments is not None
    for dimension in DIMENSIONS:
        q = next(h for h in report.segments.dimension(dimension).heterogeneity if h.arm == "champion")
        assert q.heterogeneous is True and q.p_value is not None and q.p_value < 0.01, q
