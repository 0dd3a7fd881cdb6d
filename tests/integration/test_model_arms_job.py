"""The real job with a model per arm: control, a champion and a challenger, each model arm scored by its own model.

Two real quick-trained PMMLs (different data, and the challenger on a feature subset: 8 categories of the sessions'
10, so its PMML bytes and version differ). One running experiment uses both; a second one names a challenger whose
PMML was changed after its definition was made, so it must assign nobody, in any arm, and say which model on
`experiment-health`. Every output is read with read_committed; every score is checked against pypmml.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiment.core import events
from experiment.core.definition import ArmModel, ModelRef
from experiment.kafka.topics import ensure_topics
from experiment.model.card import load_model_card
from experiment.model.reference import PmmlReference
from tests.helpers.flink_job import definition, produce, publish, read_until, running_job, session_raw, warm_up

pytestmark = [pytest.mark.kafka, pytest.mark.flink, pytest.mark.e2e, pytest.mark.slow]

CUSTOMERS = 300
OUTPUTS = ("assignments", "experiment-health")
ARMS = (("control", 0.34), ("champion", 0.33), ("challenger", 0.33))


@pytest.fixture(scope="module")
def challenger(tmp_path_factory: pytest.TempPathFactory) -> ModelRef:
    """A second real model: other data (seed 7) with 8 categories, so features age, man, woman, cat1..cat8."""
    from data.generator import generate, write
    from training.train import TrainConfig, train

    root = tmp_path_factory.mktemp("challenger")
    write(generate(customers=800, categories=8, seed=7), root / "data")
    result = train(TrainConfig(data_dir=root / "data", out_dir=root / "model", quick=True, n_jobs=1))
    card = load_model_card(root / "model")
    assert card.model_version == result.model_version
    return ModelRef(str(card.pmml_path.resolve()), card.model_version, card.features)


def test_each_arm_is_scored_by_its_own_model(job_model, challenger: ModelRef, kafka_broker, tmp_path: Path) -> None:
    kafka = replace(kafka_broker, topic_prefix=f"t-arms-{random.randrange(16**8):08x}.")
    ensure_topics(kafka)
    group = f"g-arms-{random.randrange(16**8):08x}"
    champion = ModelRef(str(job_model.pmml), job_model.version, job_model.features)
    assert champion.model_version != challenger.model_version
    assert set(challenger.features) < set(champion.features)  # a feature subset of what sessions carry
    arms = definition(
        "exp-arms", champion.pmml_path, champion.model_version, champion.features, threshold=0.5, variants=ARMS,
        arm_models={"challenger": ArmModel(challenger, 0.3)},
    )  # fmt: skip
    # The same experiment, but its challenger's PMML changes after the definition names it.
    changed = tmp_path / "changed.pmml"
    changed.write_bytes(Path(challenger.pmml_path).read_bytes() + b"\n<!-- a copy -->\n")
    changed_ref = ModelRef(str(changed), hashlib.sha256(changed.read_bytes()).hexdigest(), challenger.features)
    broken = definition(
        "exp-arms-broken", champion.pmml_path, champion.model_version, champion.features, variants=ARMS,
        arm_models={"challenger": ArmModel(changed_ref, 0.3)},
    )  # fmt: skip
    changed.write_bytes(changed.read_bytes() + b"<!-- edited after the experiment was defined -->\n")
    for d in (arms, broken):
        publish(kafka, d)

    x_test = pd.read_csv(job_model.data_dir / "X_test.csv", index_col=0)[list(champion.features)]
    rows = x_test.to_dict("records")
    sessions: dict[str, events.Session] = {}
    messages = []
    for c in range(CUSTOMERS):
        features = {k: float(v) for k, v in rows[c % len(rows)].items()}
        key, value = session_raw(f"s-{c}", f"cust-{c}", 1_700_000_000_000 + c, features)
        sessions[f"s-{c}"] = events.parse_session(value, feature_names=champion.features)
        messages.append((key, value))
    with running_job(kafka, group, categories=job_model.categories, reference_rows=str(job_model.data_dir)):
        warm_up(kafka, "probe-0", champion.features, expected=1)
        produce(kafka, "sessions", messages)

        def done(r: dict[str, list[dict]]) -> bool:
            real = [a for a in r["assignments"] if a["customer_id"].startswith("cust-")]
            return len(real) >= CUSTOMERS and len(r["experiment-health"]) >= 4

        read_until(kafka, list(OUTPUTS), done, timeout_s=120)
        time.sleep(3)  # a few more checkpoints: a late assignment of the broken experiment would show up now
        out = read_until(kafka, list(OUTPUTS), lambda r: False, timeout_s=4)

    assert Counter(a["experiment_id"] for a in out["assignments"])[broken.id] == 0, "one arm model refused: nobody"
    assignments = [a for a in out["assignments"] if a["customer_id"].startswith("cust-")]
    assert Counter(a["experiment_id"] for a in assignments) == {arms.id: CUSTOMERS}
    by_arm: dict[str, list[dict]] = {}
    for a in assignments:
        by_arm.setdefault(a["variant"], []).append(a)
    assert set(by_arm) == {"control", "champion", "challenger"}
    assert all(a["score"] is None and a["decision"] == "hide" and a["model_version"] is None for a in by_arm["control"])

    for arm, model, threshold in (("champion", champion, 0.5), ("challenger", challenger, 0.3)):
        got = by_arm[arm]
        assert {a["model_version"] for a in got} == {model.model_version}
        frame = pd.DataFrame([sessions[a["event_id"]].features for a in got])
        with PmmlReference(model.pmml_path) as reference:
            expected = reference.predict(frame[list(model.features)])
        scores = np.array([a["score"] for a in got], dtype=float)
        assert np.max(np.abs(scores - expected)) <= 1e-9, arm
        assert [a["decision"] for a in got] == ["show" if p >= threshold else "hide" for p in expected]
        if arm == "challenger":  # the other model would have scored these sessions differently
            with PmmlReference(champion.pmml_path) as reference:
                other = reference.predict(frame[list(champion.features)])
            assert np.max(np.abs(other - expected)) > 1e-3

    health = {(h["experiment_id"], h["model_version"]): h for h in out["experiment-health"]}
    assert Counter((h["experiment_id"], h["model_version"]) for h in out["experiment-health"]) == {
        (arms.id, champion.model_version): 1,
        (arms.id, challenger.model_version): 1,
        (broken.id, champion.model_version): 1,
        (broken.id, changed_ref.model_version): 1,
    }  # once per task and (experiment, model version)
    assert health[(arms.id, champion.model_version)]["status"] == "model_ready"
    assert health[(arms.id, challenger.model_version)]["status"] == "model_ready"
    assert health[(broken.id, champion.model_version)]["status"] == "model_ready"
    refused = health[(broken.id, changed_ref.model_version)]
    assert refused["status"] == "model_unusable" and "sha256" in refused["reason"]
