"""The real job next to a refused model: that experiment assigns nobody, and says why on `experiment-health`.

Two running experiments share the job: one on the test model, one whose PMML was changed after its definition was
made (so its sha256 no longer matches `model_version`). Every output is read with read_committed.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from experiment.kafka.topics import ensure_topics
from tests.helpers.flink_job import definition, produce, publish, read_until, running_job, session_raw, warm_up

pytestmark = [pytest.mark.kafka, pytest.mark.flink, pytest.mark.e2e, pytest.mark.slow]

CUSTOMERS = 150
OUTPUTS = ("assignments", "experiment-health")


def test_a_refused_model_assigns_nobody_and_is_reported(job_model, kafka_broker, tmp_path: Path) -> None:
    kafka = replace(kafka_broker, topic_prefix=f"t-health-{random.randrange(16**8):08x}.")
    ensure_topics(kafka)
    group = f"g-health-{random.randrange(16**8):08x}"
    pmml, version, features = str(job_model.pmml), job_model.version, job_model.features
    # A model of its own (the job caches scorers by model version), whose file changes after the definition names it.
    changed = tmp_path / "changed.pmml"
    changed.write_bytes(job_model.pmml.read_bytes() + b"\n<!-- a copy -->\n")
    changed_version = hashlib.sha256(changed.read_bytes()).hexdigest()
    healthy = definition("exp-healthy", pmml, version, features)
    broken = definition("exp-broken", str(changed), changed_version, features)
    changed.write_bytes(changed.read_bytes() + b"<!-- edited after the experiment was defined -->\n")
    for d in (healthy, broken):
        publish(kafka, d)

    zeros = dict.fromkeys(features, 0.0)
    messages = [session_raw(f"s-{c}", f"cust-{c}", 1_700_000_000_000 + c, zeros) for c in range(CUSTOMERS)]
    with running_job(kafka, group, categories=job_model.categories, reference_rows=str(job_model.data_dir)):
        warm_up(kafka, "probe-0", features, expected=1)
        produce(kafka, "sessions", messages)

        def done(r: dict[str, list[dict]]) -> bool:
            real = [a for a in r["assignments"] if a["customer_id"].startswith("cust-")]
            return len(real) >= CUSTOMERS and any(h["experiment_id"] == broken.id for h in r["experiment-health"])

        read_until(kafka, list(OUTPUTS), done, timeout_s=90)
        time.sleep(3)  # a few more checkpoints: a late assignment of the broken experiment would show up now
        out = read_until(kafka, list(OUTPUTS), lambda r: False, timeout_s=4)

    assignments = [a for a in out["assignments"] if a["customer_id"].startswith("cust-")]
    by_experiment = Counter(a["experiment_id"] for a in out["assignments"])
    assert by_experiment[broken.id] == 0, "the refused model's experiment must assign nobody, in any arm"
    assert Counter(a["experiment_id"] for a in assignments) == {healthy.id: CUSTOMERS}
    assert {a["variant"] for a in assignments} == {"control", "treatment"}
    assert all(a["model_version"] == version for a in assignments if a["variant"] == "treatment")

    health = {h["experiment_id"]: h for h in out["experiment-health"]}
    refused = health[broken.id]
    assert refused["key"] == broken.id
    assert refused["status"] == "model_unusable"
    assert refused["reason"] and "sha256" in refused["reason"]
    assert (refused["model_version"], refused["experiment_version"]) == (changed_version, broken.version)
    assert refused["ts"] > 0
    assert health[healthy.id]["status"] == "model_ready" and health[healthy.id]["reason"] is None
    # Once per task and model version (parallelism 1, one task): not once per session.
    assert Counter(h["experiment_id"] for h in out["experiment-health"]) == {broken.id: 1, healthy.id: 1}
