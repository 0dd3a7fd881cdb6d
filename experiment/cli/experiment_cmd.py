"""`abflow experiment create|launch|pause|resume|stop|list|show|set-traffic`: the control plane from the shell.

Every command reads the compacted `experiments` topic (the only source of truth) and every change publishes the whole
next version to it; nothing is kept locally. `show` also looks in the results store for the job's word on each arm's
model (filled by `abflow collect` from `experiment-health`), so a model the job refuses is seen where the experiment is.

Model arms (champion vs challenger): `create --model ARM=DIR [--threshold ARM=X]` gives one arm its own model and
threshold; a plain `--model DIR` / `--threshold X` is the default of every model arm that names none. `launch` verifies
every arm's model, and `list`/`show` name each arm's model version and threshold.
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
    ArmModel,
    ExperimentDefinition,
    ModelRef,
)
from experiment.core.errors import ExperimentError, InfraError, ModelError
from experiment.runtime.config import KafkaSettings

__all__ = ["app", "parse_arm_options", "parse_duration", "parse_variants"]

app = typer.Typer(
    help="Create and steer experiments (published to the Kafka `experiments` topic).", no_args_is_help=True
)

ExperimentId = Annotated[str, typer.Argument(help="Experiment id.", show_default=False)]
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
#: `ARM=VALUE` in `--model`/`--threshold`: an arm-like name (no path separator) before the first '='.
_ARM_VALUE = re.compile(r"^([A-Za-z0-9_.-]+)=(.*)$")
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


def parse_arm_options(
    option: str, values: list[str], arms: list[str], control: str
) -> tuple[str | None, dict[str, str]]:
    """`--model DIR --model challenger=DIR2` → `("DIR", {"challenger": "DIR2"})`: the default and each arm's own.

    A value is `ARM=VALUE` when the text before its first '=' looks like an arm name (no path separator; write
    `./a=b` for a directory called `a=b`). Refused, each with one line: an arm that is not declared, the control
    (never scored), an arm named twice, and two defaults.
    """
    default: str | None = None
    own: dict[str, str] = {}
    for text in values:
        match = _ARM_VALUE.match(text)
        if match is None:
            if default is not None:
                raise ExperimentError(
                    f"{option} {default} and {option} {text}: only one default for every model arm; name the arm "
                    f"of the other: {option} ARM={text}."
                )
            default = text
            continue
        arm, value = match.group(1), match.group(2)
        if arm == control:
            raise ExperimentError(
                f"{option} {text} names the control '{control}', which is never scored; model arms: "
                f"{', '.join(a for a in arms if a != control)}."
            )
        if arm not in arms:
            raise ExperimentError(
                f"{option} {text} names '{arm}', which is not an arm of this experiment ({', '.join(arms)})."
            )
        if arm in own:
            raise ExperimentError(f"{option} names arm '{arm}' twice ({own[arm]} and {value}).")
        own[arm] = value
    return default, own


def _threshold(option: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ExperimentError(f"{option} must be a number or ARM=number. Got {text!r}.") from None


def _model_arms(
    models: list[str], thresholds: list[str], variants: list[tuple[str, float]], control: str
) -> tuple[ModelRef, float, dict[str, ArmModel]]:
    """The experiment's model and threshold, and the arms whose own model or threshold differs from them.

    Each model arm's model is its `--model ARM=DIR`, else the plain `--model DIR`; its threshold its
    `--threshold ARM=X`, else the plain `--threshold X`, else its model card's. The experiment's own `model` and
    `threshold` are the defaults (the first model arm's when no plain --model is given), so a one-model experiment
    is written as it always was, without `arm_models`.
    """
    from experiment.model.card import ModelCard, load_model_card

    arms = [name for name, _weight in variants]
    scored = [name for name in arms if name != control]
    default_dir, own_dirs = parse_arm_options("--model", models, arms, control)
    default_text, own_texts = parse_arm_options("--threshold", thresholds, arms, control)
    default_threshold = None if default_text is None else _threshold("--threshold", default_text)
    own_thresholds = {arm: _threshold("--threshold", text) for arm, text in own_texts.items()}
    missing = [arm for arm in scored if arm not in own_dirs and default_dir is None]
    if missing:
        raise ExperimentError(
            f"model arm(s) {', '.join(missing)} have no model: give --model DIR for every model arm, or "
            f"--model ARM=DIR for each ({', '.join(scored)})."
        )
    cards: dict[str, ModelCard] = {}

    def card_of(directory: str) -> ModelCard:
        if directory not in cards:
            card = load_model_card(Path(directory))
            card.verify_pmml()  # the XML gate and the sha256, before the model is named in an experiment
            cards[directory] = card
        return cards[directory]

    def resolved(directory: str, threshold: float | None) -> ArmModel:
        card = card_of(directory)
        ref = ModelRef(str(card.pmml_path.resolve()), card.model_version, card.features)
        return ArmModel(ref, card.threshold if threshold is None else threshold)

    per_arm = {
        arm: resolved(own_dirs.get(arm) or str(default_dir), own_thresholds.get(arm, default_threshold))
        for arm in scored
    }
    if default_dir is not None:
        base = resolved(default_dir, default_threshold)
    elif scored:
        base = per_arm[scored[0]]
    else:  # no model arm at all: the definition refuses the variants, but first it needs a model
        raise ExperimentError("--model DIR is required.")
    own = {arm: model for arm, model in per_arm.items() if model != base}
    return base.model, base.threshold, own


def _now_ms() -> int:
    return int(time.time() * 1000)


def _kafka(bootstrap_servers: str | None, topic_prefix: str | None) -> KafkaSettings:
    return cli_settings(bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix).kafka


def _verify_model(definition: ExperimentDefinition) -> None:
    """Launch gate, for every arm's model: its card must have passed parity and still describe the same PMML bytes.

    With arm models, an error names the arm(s) of the refused model and the experiment (one model for every arm
    says what it always said).
    """
    by_model: dict[ModelRef, list[str]] = {}
    for arm, ref in definition.models().items():
        by_model.setdefault(ref, []).append(arm)
    for ref, arms in by_model.items():
        try:
            _verify_arm_model(definition, ref)
        except ModelError as error:
            if not definition.arm_models:
                raise
            raise type(error)(f"arm {', '.join(arms)} of experiment '{definition.id}': {error}") from error


def _verify_arm_model(definition: ExperimentDefinition, ref: ModelRef) -> None:
    from experiment.model.card import load_verified_model_card
    from experiment.model.digest import sha256_file
    from experiment.model.pmml_guard import check_pmml

    pmml = Path(ref.pmml_path)
    card = load_verified_model_card(pmml.parent)
    if card.model_version != ref.model_version:
        raise ModelError(
            f"Experiment '{definition.id}' was created with model_version {ref.model_version}, but "
            f"{card.path} now describes {card.model_version}; create a new experiment for the new model."
        )
    if card.pmml_path.resolve() != pmml.resolve():
        if not pmml.is_file():
            raise ModelError(f"{pmml}: the PMML of experiment '{definition.id}' does not exist.")
        check_pmml(pmml)
        if sha256_file(pmml) != ref.model_version:
            raise ModelError(f"{pmml}: sha256 differs from model_version {ref.model_version}.")


def _describe(definition: ExperimentDefinition) -> str:
    split = ", ".join(
        f"{name} {weight:g}" + (" (control)" if name == definition.control != DEFAULT_CONTROL else "")
        for name, weight in definition.weights()
    )
    models = ""
    if definition.arm_models:  # a model per arm: name each (a one-model experiment reads as it always did)
        models = "; " + ", ".join(
            f"{arm} model {ref.model_version[:12]} threshold {definition.threshold_of(arm):g}"
            for arm, ref in definition.models().items()
        )
    return (
        f"{definition.id} version {definition.version} {definition.status} "
        f"(traffic {definition.traffic:g}; {split}; category {definition.category}; "
        f"threshold {definition.threshold:g}{models})"
    )


def _arm_lines(definition: ExperimentDefinition) -> list[str]:
    """One line per model arm, its full model version, threshold and PMML (only for a definition with arm models)."""
    if not definition.arm_models:
        return []
    return [
        f"arm {arm}: model {ref.model_version} threshold {definition.threshold_of(arm):g} ({ref.pmml_path})"
        for arm, ref in definition.models().items()
    ]


@app.command()
def create(
    experiment_id: Annotated[str, typer.Option("--id", help="Slug that names the experiment.", show_default=False)],
    name: Annotated[str, typer.Option("--name", help="Human title.", show_default=False)],
    hypothesis: Annotated[str, typer.Option("--hypothesis", help="What should happen and why.", show_default=False)],
    owner: Annotated[str, typer.Option("--owner", help="Who answers for it.", show_default=False)],
    category: Annotated[str, typer.Option("--category", help="Category shown to treated customers, e.g. cat61.")],
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="Model directory holding model.json and the PMML: DIR for every model arm, or ARM=DIR for one arm "
            "(repeatable; champion vs challenger: --model champion=DIR1 --model challenger=DIR2).",
            show_default=False,
        ),
    ] = None,
    threshold: Annotated[
        list[str] | None,
        typer.Option(
            "--threshold",
            help="Show when P(show) >= this: X for every model arm, or ARM=X for one arm (repeatable; default: "
            "each arm's model card's).",
            show_default=False,
        ),
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
    segment_by: Annotated[
        str | None,
        typer.Option(
            "--segment-by",
            help="Session features to break the lift down by, comma-separated (e.g. cat3,cat7); recorded with "
            "each first exposure.",
            show_default=False,
        ),
    ] = None,
    bootstrap_servers: BootstrapServers = None,
    topic_prefix: TopicPrefix = None,
) -> None:
    """Create an experiment in draft (version 1) from trained models; refuses an existing id."""
    from experiment.kafka import control_plane

    arms = parse_variants(variants)
    base_model, base_threshold, arm_models = _model_arms(model or [], threshold or [], arms, control)
    segment_attributes = [name.strip() for name in segment_by.split(",")] if segment_by else []
    definition = ExperimentDefinition.new(
        id=experiment_id,
        name=name,
        hypothesis=hypothesis,
        owner=owner,
        category=category,
        model=base_model,
        threshold=base_threshold,
        now_ms=_now_ms(),
        salt=salt,
        traffic=traffic,
        variants=arms,
        control=control,
        attribution_window_s=parse_duration(attribution_window),
        planned_sample_size=planned_sample_size,
        mde=mde,
        arm_models=arm_models,
        segment_attributes=segment_attributes,
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
    """Start assigning customers (draft → running); refuses any arm's model that failed parity or was changed."""
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


def _unusable_model_lines(definition: ExperimentDefinition, store_path: Path, wait_s: float = 3.0) -> list[str]:
    """The results store's word that the job cannot use an arm's model of this definition (none without a store).

    One line per refused model version; with arm models each names its arm(s). The collector holds the store only
    while it writes a batch, so a busy store is retried briefly; a store that stays busy gives a note instead of an
    error, since the definition itself was read fine.
    """
    from experiment.results.store import ResultsStore

    if not store_path.exists():
        return []
    arms_of: dict[str, list[str]] = {}
    for arm, ref in definition.models().items():
        arms_of.setdefault(ref.model_version, []).append(arm)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with ResultsStore(store_path, read_only=True) as results:
                refused = [(arms, results.unusable_model(definition.id, v)) for v, arms in arms_of.items()]
            return [
                (f"arm {', '.join(arms)}: " if definition.arm_models else "") + health.headline()
                for arms, health in refused
                if health is not None
            ]
        except InfraError as error:
            if time.monotonic() > deadline:
                return [f"note: model health unknown, the results store could not be read ({error})"]
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
    """Print the latest full definition of one experiment as JSON; on stderr, arm models and refused models.

    With arm models, each arm's model version and threshold; and whether the job refuses a model. These lines go to
    stderr so that the JSON on stdout can still be piped.
    """
    from experiment.kafka import control_plane

    settings = cli_settings(bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix)
    definition = control_plane.get(settings.kafka, experiment_id)
    typer.echo(json.dumps(definition.to_dict(), sort_keys=True, indent=2))
    for line in [*_arm_lines(definition), *_unusable_model_lines(definition, store or settings.store_path)]:
        typer.echo(line, err=True)
