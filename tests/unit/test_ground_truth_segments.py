"""The ground truth's known heterogeneous effect is what a segment breakdown of a demo-sized experiment finds.

Customers come from `data.ground_truth`, segments from the job's own `segments_of`, statistics from
`experiment.stats.segments`: the chain a real run goes through, minus Kafka and Flink. The seed is fixed, so the 95%
intervals either cover the truth or not, once and for all (here they do).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from data import ground_truth
from experiment.core.segments import segments_of
from experiment.stats.segments import segment_lift
from experiment.stats.sufficient import VariantStats

CUSTOMERS = 20_000
THRESHOLD = 0.4  # the policy: show the category to treatment customers with q >= 0.4 (a perfect model)


def _experiment(seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = ground_truth.sample_customers(CUSTOMERS, 60, rng)
    p0, p1 = ground_truth.true_conversion_probs(x)
    policy = ground_truth.label_probability(x) >= THRESHOLD
    treated = rng.random(CUSTOMERS) < 0.5
    converted = rng.random(CUSTOMERS) < np.where(treated & policy, p1, p0)
    true_gain = np.where(policy, p1, p0) - p0  # per customer: treatment minus control, in expectation
    return x, treated, converted, true_gain


def _by_segment(
    x: pd.DataFrame, treated: np.ndarray, converted: np.ndarray, dimension: str
) -> tuple[dict[str, dict[str, VariantStats]], list[str]]:
    purchases = x[ground_truth.category_names(60)].sum(axis=1).to_numpy()
    labels = [
        segments_of(features, int(pre))[dimension]
        for features, pre in zip(x[["age", "man", "woman"]].to_dict("records"), purchases, strict=True)
    ]
    counts: dict[str, dict[str, list[int]]] = {}
    for label, arm, conv in zip(labels, treated, converted, strict=True):
        slot = counts.setdefault(label, {"control": [0, 0], "treatment": [0, 0]})["treatment" if arm else "control"]
        slot[0] += 1
        slot[1] += int(conv)
    stats = {s: {arm: VariantStats(users=n, conversions=c) for arm, (n, c) in d.items()} for s, d in counts.items()}
    return stats, labels


def test_women_aged_25_34_gain_far_more_and_a_20k_experiment_finds_it() -> None:
    x, treated, converted, true_gain = _experiment(seed=11)
    for dimension, segment in (("age_band", "25-34"), ("gender", "woman")):
        stats, labels = _by_segment(x, treated, converted, dimension)
        analysis = segment_lift(stats, control="control")
        heterogeneity = analysis.heterogeneity["treatment"]
        assert heterogeneity.p_value is not None and heterogeneity.p_value < 1e-6, (dimension, heterogeneity)
        inside = np.array(labels) == segment
        lift = analysis.lift(segment, "treatment").comparison
        assert lift.abs_ci is not None and lift.abs_ci.contains(float(true_gain[inside].mean())), (dimension, lift)
        assert lift.abs_ci.lower > float(true_gain[~inside].mean())  # far above the rest, beyond doubt
    young_women = ((x["woman"] == 1) & (x["age"] >= 25) & (x["age"] < 35)).to_numpy()
    assert true_gain[young_women].mean() > 0.25 > 0.03 > true_gain[~young_women].mean()
