"""The simulator's edge: the experiment's definition and verified models in, its sessions and purchases out to Kafka.

Why apart from `experiment.simulation`: the simulator is pure (ground truth, the job's decision rules, the event plan,
rate limiting) and runs in tests without a broker or a model file; everything that touches Kafka or reads the model
lives here, beside the `abflow simulate` command and the demo that use it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from experiment.core.errors import InfraError
from experiment.core.view import ArmSpec, ExperimentView, parse_definition

if TYPE_CHECKING:
    from experiment.runtime.config import Settings
    from experiment.simulation.simulator import BatchScorer, SimulationConfig, SimulationResult

__all__ = ["load_experiment", "load_scorer", "load_scorers", "run_simulation"]

logger = logging.getLogger(__name__)


def load_experiment(settings: Settings, experiment_id: str) -> ExperimentView:
    """The latest definition of `experiment_id` on the `experiments` topic, in the job's own view of it."""
    from experiment.kafka import control_plane

    definition = control_plane.get(settings.kafka, experiment_id)
    view = parse_definition(definition.to_json())
    if not view.is_running:
        logger.warning(
            "experiment is not running; the job will not assign its sessions experiment_id=%s status=%s",
            view.id,
            view.status,
        )
    return view


def _reference_rows(pmml_path: str) -> str | None:
    """The model's data directory (holding X_test.csv) from the model.json beside the PMML, if there is one."""
    card = Path(pmml_path).with_name("model.json")
    try:
        data_dir = json.loads(card.read_text(encoding="utf-8"))["data"]["dir"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(data_dir) if (Path(data_dir) / "X_test.csv").is_file() else None


def load_scorer(model: ExperimentView | ArmSpec) -> BatchScorer:
    """One model's verified scorer (an arm's, or the experiment's).

    The PMML passes the XML gate before anything (pypmml included) reads it.
    """
    from experiment.model.pmml_guard import check_pmml
    from flink_pipeline.scoring import load_verified_scorer

    check_pmml(model.pmml_path)
    return load_verified_scorer(model.pmml_path, model.model_version, _reference_rows(model.pmml_path))


def load_scorers(view: ExperimentView) -> dict[str, BatchScorer]:
    """Every model arm's verified scorer by arm name; a model shared by several arms is loaded once."""
    loaded: dict[tuple[str, str], BatchScorer] = {}
    scorers: dict[str, BatchScorer] = {}
    for spec in view.arms:
        key = (spec.model_version, spec.pmml_path)
        if key not in loaded:
            loaded[key] = load_scorer(spec)
        scorers[spec.variant] = loaded[key]
    return scorers


def run_simulation(
    settings: Settings,
    experiment_id: str,
    config: SimulationConfig,
    *,
    progress: Callable[[int, int], None] | None = None,
    stage: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> SimulationResult:
    """Read the experiment, load every arm's model, and send the simulated sessions and outcomes to Kafka."""
    from experiment.kafka.clients import make_producer
    from experiment.kafka.topics import OUTCOMES, SESSIONS, ensure_topics
    from experiment.simulation.simulator import simulate

    config.validate()
    say = stage or (lambda _message: None)
    say(f"reading experiment {experiment_id}")
    view = load_experiment(settings, experiment_id)
    versions = dict.fromkeys(spec.model_version[:12] for spec in view.arms)
    say(f"loading and verifying model{'s' if len(versions) > 1 else ''} {', '.join(versions)}")
    scorers = load_scorers(view)
    topics = {name: settings.kafka.topic(name) for name in (SESSIONS, OUTCOMES)}
    ensure_topics(settings.kafka)
    producer = make_producer(settings.kafka, linger_ms=20, batch_size=256 * 1024, client_id="abflow-simulator")
    errors: list[BaseException] = []

    def send(topic: Literal["sessions", "outcomes"], key: bytes, value: bytes) -> None:
        future = producer.send(topics[topic], key=key, value=value)
        future.add_errback(errors.append)

    try:
        result = simulate(
            view, scorers, config, send, topics=topics, progress=progress, stage=stage, clock=clock, sleep=sleep
        )
        producer.flush()
    finally:
        producer.close()
    if errors:
        raise InfraError(
            f"{len(errors)} of {result.events_sent} events could not be sent to Kafka; first error: {errors[0]!r}"
        )
    logger.info(
        "simulation done experiment_id=%s sessions=%d outcomes=%d malformed=%d elapsed_s=%.1f rate=%.0f",
        experiment_id,
        result.sessions_sent,
        result.outcomes_sent,
        result.malformed_sent,
        result.elapsed_s,
        result.achieved_rate,
    )
    return result
