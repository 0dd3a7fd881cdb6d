"""Fill a results store with a synthetic experiment whose truth is known.

Used by the statistics, store and report tests and by the dashboard tests. Customers are assigned with the
real assignment hash; each customer converts with the probability of their variant (control `p_control`, treatment
`p_control * (1 + true_rel_lift)`), converters spend a seeded log-normal revenue, and the pre-period purchase count (the
CUPED covariate) is Poisson with a mean that rises with the customer's latent propensity, so it correlates with
conversion as in real data. Records have the exact shape of the `assignments` / `attributed-outcomes` topics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from experiment.core.assignment import assign
from experiment.results.store import ResultsStore
from experiment.stats.sufficient import VariantStats

__all__ = ["DAY_MS", "START_MS", "SyntheticExperiment", "definition_dict", "fill_store", "make_experiment"]

DAY_MS = 86_400_000
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def definition_dict(
    experiment_id: str = "cat61-v1",
    *,
    variants: tuple[tuple[str, float], ...] = (("control", 0.5), ("treatment", 0.5)),
    planned_sample_size: int | None = 20_000,
    mde: float | None = 0.1,
    version: int = 1,
    status: str = "running",
) -> dict[str, Any]:
    """A definition shaped like `ExperimentDefinition.to_json()` (the `experiments` topic's records)."""
    return {
        "id": experiment_id,
        "name": f"Show category 61 ({experiment_id})",
        "hypothesis": "Showing category 61 to customers the model picks raises conversion.",
        "owner": "growth-team",
        "category": "cat61",
        "model": {
            "pmml_path": "models/model.pmml",
            "model_version": "0" * 64,
            "features": ["age", "man", "woman"],
        },
        "threshold": 0.5,
        "salt": experiment_id,
        "traffic": 1.0,
        "variants": [{"name": n, "weight": w} for n, w in variants],
        "primary_metric": "conversion",
        "secondary_metrics": ["revenue_per_user"],
        "guardrail_metrics": [],
        "attribution_window_s": 604800,
        "planned_sample_size": planned_sample_size,
        "mde": mde,
        "status": status,
        "version": version,
        "created_ts": START_MS - DAY_MS,
        "updated_ts": START_MS - DAY_MS + version,
    }


@dataclass
class SyntheticExperiment:
    """The records to feed the store and the truth to test against."""

    definition: dict[str, Any]
    assignments: list[dict[str, Any]]
    outcomes: list[dict[str, Any]]
    true_rates: dict[str, float]
    expected_stats: dict[str, VariantStats] = field(default_factory=dict)

    @property
    def definition_json(self) -> str:
        """Sorted, compact JSON as on the `experiments` topic."""
        return json.dumps(self.definition, sort_keys=True, separators=(",", ":"))


def make_experiment(
    *,
    n_customers: int = 20_000,
    p_control: float = 0.10,
    true_rel_lift: float = 0.10,
    days: int = 14,
    seed: int = 7,
    definition: dict[str, Any] | None = None,
    extra_exposures: float = 0.3,
) -> SyntheticExperiment:
    """Generate the records of one experiment (every treatment arm shares `true_rel_lift`).

    Each customer has one first exposure on a uniformly random day and, with probability `extra_exposures`, a
    later repeat exposure (which must not change their variant or covariate). Converters have 1–3 purchases
    within two days of exposure.
    """
    defn = definition or definition_dict()
    rng = np.random.default_rng(seed)
    variants = [(v["name"], float(v["weight"])) for v in defn["variants"]]
    control = variants[0][0]
    rates = {name: p_control if name == control else p_control * (1 + true_rel_lift) for name, _ in variants}

    assignments: list[dict[str, Any]] = []
    outcomes: list[dict[str, Any]] = []
    propensity = rng.gamma(0.5, 2.0, size=n_customers)  # mean 1, var 2: higher = more likely to buy, before and after
    horizon_ms = days * DAY_MS
    for i in range(n_customers):
        customer_id = f"c{i:07d}"
        variant = assign(defn["salt"], customer_id, float(defn["traffic"]), variants)
        if variant is None:
            continue
        pre = int(rng.poisson(4.0 * propensity[i]))
        p = min(0.99, rates[variant] * propensity[i])
        first_ts = START_MS + int(rng.integers(0, horizon_ms - 3 * DAY_MS))
        score = None if variant == control else float(rng.random())
        decision = "hide" if score is None or score < defn["threshold"] else "show"
        base = {
            "experiment_id": defn["id"],
            "experiment_version": defn["version"],
            "customer_id": customer_id,
            "variant": variant,
            "score": score,
            "decision": decision,
            "model_version": defn["model"]["model_version"],
        }
        assignments.append(
            {
                **base,
                "event_id": f"s-{customer_id}-1",
                "first_exposure": True,
                "event_ts": first_ts,
                "decided_ts": first_ts + 5,
                "pre_period_purchases": pre,
            }
        )
        if rng.random() < extra_exposures:
            later = first_ts + int(rng.integers(1, DAY_MS))
            assignments.append(
                {
                    **base,
                    "event_id": f"s-{customer_id}-2",
                    "first_exposure": False,
                    "event_ts": later,
                    "decided_ts": later + 5,
                    "pre_period_purchases": pre + 1,
                }
            )
        converted = bool(rng.random() < p)
        if converted:
            for k in range(int(rng.integers(1, 4))):
                revenue = round(float(rng.lognormal(3.0, 0.8)), 2)
                ts = first_ts + int(rng.integers(1, 2 * DAY_MS))
                outcomes.append(
                    {
                        "experiment_id": defn["id"],
                        "customer_id": customer_id,
                        "variant": variant,
                        "outcome_event_id": f"o-{customer_id}-{k}",
                        "event_id": f"o-{customer_id}-{k}",
                        "ts": ts,
                        "converted": True,
                        "revenue": revenue,
                        "seconds_since_exposure": (ts - first_ts) / 1000,
                    }
                )

    # Revenue in cents is the sum of per-outcome cents, exactly as the store rounds it.
    cents: dict[str, int] = {}
    for o in outcomes:
        cents[o["customer_id"]] = cents.get(o["customer_id"], 0) + round(o["revenue"] * 100)
    first = {a["customer_id"]: a for a in assignments if a["first_exposure"]}
    exact: dict[str, VariantStats] = {name: VariantStats() for name, _ in variants}
    for customer_id, a in first.items():
        r = cents.get(customer_id, 0)
        exact[a["variant"]] = exact[a["variant"]] + VariantStats.of_user_cents(r > 0, r, a["pre_period_purchases"])
    return SyntheticExperiment(
        definition=defn, assignments=assignments, outcomes=outcomes, true_rates=rates, expected_stats=exact
    )


def fill_store(path: str | Path, experiment: SyntheticExperiment | None = None, **kwargs: Any) -> SyntheticExperiment:
    """Write a synthetic experiment (`make_experiment(**kwargs)` unless given) into the store at `path`."""
    exp = experiment or make_experiment(**kwargs)
    with ResultsStore(path) as store:
        store.record_experiment(exp.definition_json)
        batch = 5_000
        for start in range(0, max(len(exp.assignments), len(exp.outcomes)), batch):
            store.record_batch(
                assignments=exp.assignments[start : start + batch],
                outcomes=exp.outcomes[start : start + batch],
            )
    return exp
