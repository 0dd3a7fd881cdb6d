"""A champion/challenger experiment and segment statistics with a known heterogeneous effect, for the report and
dashboard tests of the arms and segments sections."""

from __future__ import annotations

from typing import Any

from experiment.stats.sufficient import VariantStats as V
from tests.helpers.fill_store import definition_dict

__all__ = ["AGE", "CHALLENGER", "CHAMPION", "GENDER", "WEIGHTS", "three_arm_definition", "with_segments"]

CHAMPION = "a" * 64
CHALLENGER = "ab" * 32  # shares the first 12 characters with nothing else; see test_short_versions
WEIGHTS = (("control", 0.4), ("champion", 0.3), ("challenger", 0.3))


def three_arm_definition(experiment_id: str = "champ-v1", **kwargs: Any) -> dict[str, Any]:
    """control, champion (the experiment's model) and challenger (its own model and threshold)."""
    d = definition_dict(experiment_id, variants=WEIGHTS, **kwargs)
    d["model"] = {**d["model"], "model_version": CHAMPION}
    d["arm_models"] = {
        "challenger": {
            "model": {"pmml_path": "models/challenger.pmml", "model_version": CHALLENGER, "features": ["age"]},
            "threshold": 0.42,
        }
    }
    return d


AGE = {  # the store's order (age bands upwards, "unknown" last); +8 points in 25-34; 65+ has no challenger customers
    "18-24": {
        "control": V.from_counts(3_000, 300),
        "champion": V.from_counts(2_200, 230),
        "challenger": V.from_counts(2_300, 240),
    },
    "25-34": {
        "control": V.from_counts(4_000, 400),
        "champion": V.from_counts(3_000, 540),
        "challenger": V.from_counts(3_000, 560),
    },
    "65+": {"control": V.from_counts(500, 50), "champion": V.from_counts(400, 41)},
    "unknown": {
        "control": V.from_counts(300, 30),
        "champion": V.from_counts(220, 24),
        "challenger": V.from_counts(230, 25),
    },
}
GENDER = {
    "woman": {
        "control": V.from_counts(4_000, 400),
        "champion": V.from_counts(3_000, 330),
        "challenger": V.from_counts(3_000, 336),
    },
    "man": {
        "control": V.from_counts(3_800, 380),
        "champion": V.from_counts(2_820, 310),
        "challenger": V.from_counts(2_800, 305),
    },
}


def with_segments(exp: Any) -> tuple[Any, dict[str, dict[str, dict[str, V]]]]:
    """Give every first exposure an age band and a gender (every 7th customer none: "unknown"), and the truth.

    The truth (segment → arm → statistics) is summed here from the raw records, as the store must sum them.
    """
    bands, genders = ("18-24", "25-34", "35-44"), ("woman", "man")
    first: dict[str, dict[str, Any]] = {}
    for rec in exp.assignments:
        if rec["first_exposure"]:
            n = int(rec["customer_id"][1:])
            if n % 7:
                rec["segments"] = {"age_band": bands[n % 3], "gender": genders[n % 2]}
            first[rec["customer_id"]] = rec
    cents: dict[str, int] = {}
    for o in exp.outcomes:
        cents[o["customer_id"]] = cents.get(o["customer_id"], 0) + round(o["revenue"] * 100)
    truth: dict[str, dict[str, dict[str, V]]] = {"age_band": {}, "gender": {}}
    for customer, rec in first.items():
        r = cents.get(customer, 0)
        user = V.of_user_cents(r > 0, r, rec["pre_period_purchases"])
        for dimension, by_segment in truth.items():
            segment = (rec.get("segments") or {}).get(dimension, "unknown")
            cell = by_segment.setdefault(segment, {})
            cell[rec["variant"]] = cell.get(rec["variant"], V()) + user
    return exp, truth
