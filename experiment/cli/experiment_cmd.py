"""`abflow experiment create|launch|pause|resume|stop|list|show|set-traffic`: the control plane from the shell.

Every command reads the compacted `experiments` topic (the only source of truth) and every change publishes the whole
next version to it; nothing is kept locally. `show` also looks in the results store for the job's word on the model
(filled by `abflow collect` from `experiment-health`), so a model the job refuses is seen where the experiment is.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Annotated

import typer

from experiment.cli.kafka_cmd import BootstrapServers, TopicPrefix, cli_settings
from experiment.core.definition import (
    DEFAULT_ATTRIBUTION_WINDOW_S,
    DEFAULT_CONTROL,
    Action,
    ExperimentDefinition,
    ModelRef,
)
from experiment.core.errors import ExperimentError, InfraError, ModelError
from experiment.runtime.config import KafkaSettings

__all__ = ["app", "parse_duration", "parse_variants"]

app = typer.Typer(
    help="Create and steer experiments (published to the Kafka `experiments` topic).", no_args_is_help=True
)

ExperimentId = Annotated[str, typer.Argument(help="Experiment id.", show_default=False)]
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_variants(text: str) -> list[tuple[str, float]]:
    """`"control:0.5,treatment:0.5"` → `[("control", 0.5), ("treatment", 0.5)]`, in declared order."""
    variants = []
    for part in text.split(","):
        name, sep, weight = part.partition(":")
        try:
            variants.append((name.strip(), float(weight)))
        except ValueError:
            sep = ""
        if not sep:
            raise ExperimentError(f"--variants must look like 'control:0.5,treatment:0.5'. Got {text!r}.")
    return variants


def parse_duration(text: str) -> int:
    """`"604800"`, `"3600s"`, `"30m"`, `"12h"`, `"7d"`, `"1w"` → seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ExperimentError(f"--attribution-window must be seconds or a number with s, m, h, d or w. Got {text!r}.")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _kafka(bootstrap_servers: str | None, topic_prefix: str | None) -> KafkaSettings:
    return cli_settings(bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix).kafka


def _verify_model(definition: ExperimentDefinition) -> None:
    """Launch gate: the card next to the PMML must have passed parity and still describe the same PMML bytes."""
    from experiment.model.card import load_verified_model_card
    from experiment.model.digest import sha256_file
    from experiment.model.pmml_guard import check_pmml

    pmml = Path(definition.model.pmml_path)
    card = load_verified_model_card(pmml.parent)
    if card.model_version != definition.model.model_version:
        raise ModelError(
            f"Experiment '{definition.id}' was created with model_version {definition.model.model_version}, but "
            f"{card.path} now describes {card.model_version}; create a new experiment for the new model."
        )
    if card.pmml_path.resolve() != pmml.resolve():
        if not pmml.is_file():
            raise ModelError(f"{pmml}: the PMML of experiment '{definition.id}' does not exist.")
        check_pmml(pmml)
        if sha256_file(pmml) != definition.model.model_version:
            raise ModelError(f"{pmml}: sha256 differs from model_version {definition.model.model_version}.")


def _describe(definition: ExperimentDefinition) -> str:
    split = ", ".join(
        f"{name} {weight:g}" + (" (control)" if name == definition.control != DEFAULT_CONTROL else "")
        for name, weight in definition.weights()
    )
    return (
        f"{definition.id} version {definition.version} {definition.status} "
        f"(traffic {definition.traffic:g}; {split}; category {definition.category}; threshold {definition.threshold:g})"
    )


@app.command()
def create(
    experiment_id: Annotated[str, typer.Option("--id", help="Slug that names the experiment.", show_default=False)],
    name: Annotated[str, typer.Option("--name", help="Human title.", show_default=False)],
    hypothesis: Annotated[str, typer.Option("--hypothesis", help="What should happen and why.", show_default=False)],
    owner: Annotated[str, typer.Option("--owner", help="Who answers for it.", show_default=False)],
    category: Annotated[str, typer.Option("--category", help="Category shown to treated customers, e.g. cat61.")],
    model: Annotated[Path, typer.Option("--model", help="Model directory holding model.json and the PMML.")],
    threshold: Annotated[
        float | None, typer.Option("--threshold", help="Show when P(show) >= this (default: the model card's).")
    ] = None,
    traffic: Annotated[float, typer.Option("--traffic", help="Fraction of customers in the experiment, (0, 1].")] = 1.0,
    variants: Annotated[
        str, typer.Option("--variants", help="name:weight,... with the control first; weights sum to 1.")
    ] = "control:0.5,treatment:0.5",
    control: Annotated[
        str,
        typer.Option(
            "--control",
            help="Name of the control arm (never scored); it must be declared first, and no other arm may be "
            "called 'control'.",
        ),
    ] = DEFAULT_CONTROL,
    attribution_window: Annotated[
        str, typer.Option("--attribution-window", help="How long after first exposure an outcome counts (7d, 12h, s).")
    ] = f"{DEFAULT_ATTRIBUTION_WINDOW_S // 86400}d",
    planned_sample_size: Annotated[
        int | None,
        typer.Option(
            "--planned-sample-size",
            help="Total customers you plan to collect, summed over all variants; the verdict uses fixed-horizon "
            "tests once reached.",
        ),
    ] = None,
    mde: Annotated[
        float | None,
        typer.Option(
            "--mde",
            help="Minimum detectable effect, relative to the control's conversion rate (0.05 = +5 %); without "
            "--planned-sample-size the plan is the total, over all variants, needed to detect it with 80 % power.",
        ),
    ] = None,
    salt: Annotated[str | None, typer.Option("--salt", help="Assignment salt (default: the id).")] = None,
    bootstrap_servers: BootstrapServers = None,
    topic_prefix: TopicPrefix = None,
) -> None:
    """Create an experiment in draft (version 1) from a trained model; refuses an existing id."""
    from experiment.kafka import control_plane
    from experiment.model.card import load_model_card

    card = load_model_card(model)
    card.verify_pmml()  # the XML gate and the sha256, before the model is named in an experiment
    definition = ExperimentDefinition.new(
        id=experiment_id,
        name=name,
        hypothesis=hypothesis,
        owner=owner,
        category=category,
        model=ModelRef(str(card.pmml_path.resolve()), card.model_version, card.features),
        threshold=card.threshold if threshold is None else threshold,
        now_ms=_now_ms(),
        salt=salt,
        traffic=traffic,
        variants=parse_variants(variants),
        control=control,
        attribution_window_s=parse_duration(attribution_window),
        planned_sample_size=planned_sample_size,
        mde=mde,
    )
    control_plane.create(_kafka(bootstrap_servers, topic_prefix), definition)
    typer.echo(f"created {_describe(definition)}")


def _act(
    action: Action, past: str, experiment_id: str, bootstrap_servers: str | None, topic_prefix: str | None
) -> None:
    from experiment.kafka import control_plane

    kafka = _kafka(bootstrap_servers, topic_prefix)
    if action == "launch":
        _verify_model(control_plane.get(kafka, experiment_id))
    definition = control_plane.apply_action(kafka, experiment_id, action, now_ms=_now_ms())
    if definition.status == "archived":  # `stop` on a draft
        past = "archived"
    typer.echo(f"{past} {_describe(definition)}")


@app.command()
def launch(
    experiment_id: ExperimentId, bootstrap_servers: BootstrapServers = None, topic_prefix: TopicPrefix = None
) -> None:
    """Start assigning customers (draft → running); refuses a model that failed parity or was changed."""
    _act("launch", "launched", experiment_id, bootstrap_servers, topic_prefix)


@app.command()
def pause(
    experiment_id: ExperimentId, bootstrap_servers: BootstrapServers = None, topic_prefix: TopicPrefix = None
) -> None:
    """Stop assigning new sessions for now (running → paused); assignments so far are kept."""
    _act("pause", "paused", experiment_id, bootstrap_servers, topic_prefix)


@app.command()
def resume(
    experiment_id: ExperimentId, bootstrap_servers: BootstrapServers = None, topic_prefix: TopicPrefix = None
) -> None:
    """Continue a paused experiment (paused → running) with the same salt and weights."""
    _act("resume", "resumed", experiment_id, bootstrap_servers, topic_prefix)


@app.command()
def stop(
    experiment_id: ExperimentId, bootstrap_servers: BootstrapServers = None, topic_prefix: TopicPrefix = None
) -> None:
    """End the experiment for good (running or paused → stopped; a draft → archived, hidden from `list`)."""
    _act("stop", "stopped", experiment_id, bootstrap_servers, topic_prefix)


@app.command("set-traffic")
def set_traffic(
    experiment_id: ExperimentId,
    traffic: Annotated[float, typer.Argument(help="New fraction of customers in the experiment, (0, 1].")],
    bootstrap_servers: BootstrapServers = None,
    topic_prefix: TopicPrefix = None,
) -> None:
    """Change the traffic fraction; customers already in keep their variant (only who is in changes)."""
    from experiment.kafka import control_plane

    kafka = _kafka(bootstrap_servers, topic_prefix)
    definition = control_plane.update(kafka, experiment_id, now_ms=_now_ms(), traffic=traffic)
    typer.echo(f"traffic set: {_describe(definition)}")


@app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array of full definitions.")] = False,
    show_all: Annotated[bool, typer.Option("--all", help="Include archived experiments (stopped drafts).")] = False,
    bootstrap_servers: BootstrapServers = None,
    topic_prefix: TopicPrefix = None,
) -> None:
    """List the latest version of every experiment on the topic (archived ones only with --all)."""
    from experiment.kafka import control_plane

    snapshot = control_plane.read_snapshot(_kafka(bootstrap_servers, topic_prefix))
    definitions = [d for d in snapshot.sorted() if show_all or d.status != "archived"]
    if as_json:
        typer.echo(json.dumps([d.to_dict() for d in definitions], sort_keys=True))
        return
    if not definitions:
        typer.echo("no experiments")
    for definition in definitions:
        typer.echo(_describe(definition))
    if snapshot.skipped:
        typer.echo(f"warning: skipped {snapshot.skipped} unreadable record(s) on the topic", err=True)


def _unusable_model_line(definition: ExperimentDefinition, store_path: Path, wait_s: float = 3.0) -> str | None:
    """The results store's word that the job cannot use this definition's model, or None (also without a store).

    The collector holds the store only while it writes a batch, so a busy store is retried briefly; a store that
    stays busy gives a note instead of an error, since the definition itself was read fine.
    """
    from experiment.results.store import ResultsStore

    if not store_path.exists():
        return None
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with ResultsStore(store_path, read_only=True) as results:
                health = results.unusable_model(definition.id, definition.model.model_version)
            return None if health is None else health.headline()
        except InfraError as error:
            if time.monotonic() > deadline:
                return f"note: model health unknown, the results store could not be read ({error})"
            time.sleep(0.1)


@app.command()
def show(
    experiment_id: ExperimentId,
    store: Annotated[
        Path | None,
        typer.Option("--store", help="Results store to read the model's health from (default: settings)."),
    ] = None,
    bootstrap_servers: BootstrapServers = None,
    topic_prefix: TopicPrefix = None,
) -> None:
    """Print the latest full definition of one experiment as JSON, and on stderr whether the job refuses its model.

    The model line goes to stderr so that the JSON on stdout can still be piped.
    """
    from experiment.kafka import control_plane

    settings = cli_settings(bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix)
    definition = control_plane.get(settings.kafka, experiment_id)
    typer.echo(json.dumps(definition.to_dict(), sort_keys=True, indent=2))
    line = _unusable_model_line(definition, store or settings.store_path)
    if line:
        typer.echo(line, err=True)
