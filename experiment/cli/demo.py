"""`python -m experiment.cli.demo` (what `make demo` runs after `make install`): the whole product, end to end, once.

Stages (each shown with its progress and time): Kafka up, data, model, experiment, Flink job, simulated traffic,
collection, the significance report (terminal + HTML/Markdown/JSON under `reports/`), and how to open the dashboard.

Why each run is a new experiment: running the demo twice must work, and the results of the first run are worth
keeping. Every run launches `demo-<UTC time>` (stopping earlier running `demo-*` experiments first, so the job
stops spending work on them) and simulates customers with a run-specific seed, so no customer of one run can be
attributed to another. The broker, the topics, the job (and its committed offsets) and the results store are
reused; the dashboard shows every run. The job runs detached (`abflow pipeline run --detach`; `abflow pipeline
stop` ends it, as `make clean` must before `abflow kafka down`); everything the demo creates lives in `.abflow/`,
`data/*.csv`, `artifacts/` and `reports/`.

`--arms 3` (`make demo ARMS=3`, or `ABFLOW_DEMO_ARMS=3`) runs champion vs challenger instead: the challenger is the
champion's recipe trained without `age` into `artifacts/challenger/`, the experiment splits 34/33/33 into control,
champion and challenger, and the report adds the arms (Holm, P(best)) and the lift by age band and gender, each
held against the simulator's true lifts, and says whether the arms are ranked as the ground truth ranks them.

Environment: `ABFLOW_KAFKA_BOOTSTRAP` picks the broker (a local address is started on its port, anything else is
used as is), `ABFLOW_DEMO_FULL_GRID=1` trains with the full grid, `ABFLOW_DEMO_CUSTOMERS` / `ABFLOW_DEMO_RATE`
change the simulated traffic.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from experiment.core.errors import AbflowError, ConfigError, InfraError

if TYPE_CHECKING:
    from rich.console import Console

    from experiment.runtime.config import KafkaSettings, Settings
    from experiment.simulation.simulator import SimulationResult

__all__ = ["job_group_id", "main", "run_demo", "wait_for_job_to_read_experiments"]

logger = logging.getLogger(__name__)

DATA_DIR = Path("data")
MODEL_DIR = Path("artifacts/model")
CHALLENGER_DIR = Path("artifacts/challenger")
#: What the three-arm demo's challenger is trained without, and its seed (see `_challenger`).
CHALLENGER_DROPS = ("age",)
CHALLENGER_SEED = 11
THRESHOLD = 0.5
#: The segment dimensions the three-arm demo's report breaks the lift down by.
DEMO_SEGMENTS = ("age_band", "gender")
STAGES = 10
DEFAULT_CUSTOMERS = 50_000
DEFAULT_RATE = 5_000.0
MALFORMED = 0.002
JOB_GROUP = "abflow-decisions"  # flink_pipeline.job.JobConfig.group_id


# --------------------------------------------------------------------------------------------------------------
# The Flink job, detached
# --------------------------------------------------------------------------------------------------------------


def job_group_id(group_id: str = JOB_GROUP) -> str:
    """The consumer group under which the job's `experiments` source commits offsets on checkpoints."""
    return f"{group_id}-experiments"


def wait_for_job_to_read_experiments(
    kafka: KafkaSettings,
    *,
    group_id: str = JOB_GROUP,
    timeout_s: float = 180.0,
    pid: int | None = None,
) -> float:
    """Block until the running job has read (and checkpointed) every definition now on the `experiments` topic.

    Why: the job reads definitions (broadcast) and sessions concurrently; a session it processes before it knows
    an experiment is not assigned to it. The job's Kafka source commits its offsets when a checkpoint completes,
    after the records before the barrier were processed, so a committed offset at the topic's end proves the
    broadcast state holds every definition. Returns the seconds waited; `InfraError` on timeout or a dead job.
    """
    from kafka import TopicPartition

    from experiment.kafka.clients import make_consumer
    from experiment.kafka.topics import EXPERIMENTS

    topic = kafka.topic(EXPERIMENTS)
    started = time.monotonic()
    consumer = make_consumer(
        kafka, group_id=job_group_id(group_id), enable_auto_commit=False, client_id="abflow-demo-probe"
    )
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        end = consumer.end_offsets(partitions)
        while True:
            committed = {tp: consumer.committed(tp) or 0 for tp in partitions}
            if all(committed[tp] >= end[tp] for tp in partitions):
                return time.monotonic() - started
            if pid is not None and not _running(pid):
                raise InfraError(
                    f"The Flink job (pid {pid}) exited before reading the experiment definitions; see its log."
                )
            if time.monotonic() - started > timeout_s:
                raise InfraError(
                    f"The Flink job has not read topic '{topic}' within {timeout_s:.0f} s (committed {committed}, "
                    f"end {end}, group {job_group_id(group_id)}); see its log."
                )
            time.sleep(1.0)
    finally:
        consumer.close(autocommit=False)


def _abflow(*args: str) -> subprocess.CompletedProcess[str]:
    """Run an `abflow` command of this installation (same interpreter), capturing its output."""
    command = [sys.executable, "-c", "from experiment.cli.main import main; main()", *args]
    return subprocess.run(command, capture_output=True, text=True, check=False, cwd=Path.cwd())


def _pipeline_pid(settings: Settings) -> int | None:
    """The pid `abflow pipeline run --detach` recorded, if any (used only to notice a job that died)."""
    try:
        return int(json.loads((settings.home / "pipeline" / "job.json").read_text(encoding="utf-8"))["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _running(pid: int) -> bool:
    """Whether `pid` still runs: reaps it if it is our exited child, and counts a zombie as gone."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


# --------------------------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _stage(console: Console, number: int, title: str) -> Iterator[None]:
    console.rule(f"[bold cyan][{number}/{STAGES}] {title}")
    started = time.monotonic()
    yield
    console.print(f"[green]✓[/green] {title} [dim]({time.monotonic() - started:.1f} s)[/dim]")


def _kafka(console: Console, settings: Settings) -> Settings:
    from experiment.kafka import broker
    from experiment.kafka.topics import ensure_topics

    try:
        host, port = broker.listen_address(settings.kafka.bootstrap_servers)
    except ConfigError:
        host, port = "", 0  # not a single local address: a cluster to use as it is
    if port:
        with console.status(f"starting the local broker on port {port} (idempotent)"):
            status = broker.start(settings, host=host, port=port)
        console.print(
            f"kafka: ready pid={status.pid} bootstrap={status.bootstrap_servers} (data dir {status.data_dir})"
        )
    else:
        console.print(f"kafka: using {settings.kafka.bootstrap_servers} (ABFLOW_KAFKA_BOOTSTRAP); not starting one")
    created = ensure_topics(settings.kafka)
    console.print(f"topics: {'created ' + ', '.join(created) if created else 'all present'}")
    return settings


def _data(console: Console) -> None:
    from data import generator

    if all((DATA_DIR / name).is_file() for name in generator.FILE_NAMES):
        console.print(f"data: {DATA_DIR}/ already has the four CSVs (kept)")
        return
    with console.status("generating customers from the ground truth"):
        paths = generator.write(generator.generate(), DATA_DIR)
    console.print(f"data: wrote {', '.join(str(p) for p in paths)} ({generator.DEFAULT_CUSTOMERS} customers)")


def _model_is_fresh(model_dir: Path, full_grid: bool, features: tuple[str, ...] | None = None) -> str | None:
    """Why the model must be (re)trained, or None when the one on disk matches the data, grid and features."""
    from experiment.model.digest import sha256_file
    from training.dataset import data_fingerprint

    card_path = model_dir / "model.json"
    pmml = model_dir / "xgboost_model.pmml"
    if not card_path.is_file() or not pmml.is_file():
        return "no model yet"
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
        if card["data"]["fingerprint"] != data_fingerprint(DATA_DIR):
            return "the data changed since training"
        if card["model_version"] != sha256_file(pmml):
            return "the PMML file does not match model.json"
        if not card["parity"]["passed"]:
            return "the last training failed its parity check"
        if full_grid and card["cv"]["quick"]:
            return "ABFLOW_DEMO_FULL_GRID=1 asks for the full grid"
        if features is not None and tuple(card["features"]) != features:
            return "it was trained on other features"
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"model.json is unreadable ({error!r})"
    return None


def _model(console: Console) -> dict[str, Any]:
    from training import train as training

    full_grid = os.environ.get("ABFLOW_DEMO_FULL_GRID") == "1"
    reason = _model_is_fresh(MODEL_DIR, full_grid)
    if reason is None:
        console.print(f"model: {MODEL_DIR}/ is up to date with the data (kept)")
    else:
        console.print(f"model: training ({'full' if full_grid else 'quick'} grid) because {reason}")
        result = training.train_with_progress(
            training.TrainConfig(data_dir=DATA_DIR, out_dir=MODEL_DIR, quick=not full_grid)
        )
        for line in training.summary_lines(result):
            console.print(f"  {line}")
    return json.loads((MODEL_DIR / "model.json").read_text(encoding="utf-8"))


def _challenger(console: Console, champion: dict[str, Any]) -> dict[str, Any]:
    """The three-arm demo's challenger: the champion's recipe without `age` (and another seed), in its own dir.

    Why this challenger: the ground truth's strongest interest signals involve age (young women, older men who buy
    cat4, the over-65 dip), so a model blind to age ranks customers worse, and the experiment should find that the
    champion beats it, as the ground truth says.
    """
    from training import train as training

    features = tuple(name for name in champion["features"] if name not in CHALLENGER_DROPS)
    reason = _model_is_fresh(CHALLENGER_DIR, False, features)
    if reason is None:
        console.print(f"challenger: {CHALLENGER_DIR}/ is up to date with the data (kept)")
    else:
        console.print(f"challenger: training without {', '.join(CHALLENGER_DROPS)} (quick grid) because {reason}")
        result = training.train_with_progress(
            training.TrainConfig(
                data_dir=DATA_DIR,
                out_dir=CHALLENGER_DIR,
                quick=True,
                random_state=CHALLENGER_SEED,
                features=features,
                name="challenger",
            )
        )
        for line in training.summary_lines(result):
            console.print(f"  {line}")
    return json.loads((CHALLENGER_DIR / "model.json").read_text(encoding="utf-8"))


def _experiment(
    console: Console, settings: Settings, card: dict[str, Any], challenger: dict[str, Any] | None = None
) -> str:
    """Stop earlier demo experiments, then create and launch this run's: two arms, or three with a challenger."""
    from experiment.core.definition import ArmModel, ExperimentDefinition, ModelRef
    from experiment.kafka import control_plane

    now = int(time.time() * 1000)
    for old in control_plane.read_snapshot(settings.kafka).sorted():
        if old.id.startswith("demo-") and old.status in ("running", "paused"):
            control_plane.apply_action(settings.kafka, old.id, "stop", now_ms=now)
            console.print(f"experiment: stopped the earlier demo experiment {old.id}")
    experiment_id = "demo-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime(now / 1000))

    def model_ref(model_dir: Path, model_card: dict[str, Any]) -> ModelRef:
        pmml = (model_dir / model_card.get("pmml_file", "xgboost_model.pmml")).resolve()
        return ModelRef(str(pmml), model_card["model_version"], tuple(model_card["features"]))

    common: dict[str, Any] = {
        "id": experiment_id,
        "name": "Show cat61 to the customers the model picks",
        "owner": "demo",
        "category": "cat61",
        "model": model_ref(MODEL_DIR, card),
        "threshold": THRESHOLD,
        "now_ms": now,
    }
    if challenger is None:
        definition = ExperimentDefinition.new(
            hypothesis=f"Showing the new category to customers with P(show) >= {THRESHOLD} raises conversion.",
            **common,
        )
        arms = "50/50 control/treatment"
    else:
        definition = ExperimentDefinition.new(
            hypothesis="The champion model's picks raise conversion more than the challenger's.",
            variants=(("control", 0.34), ("champion", 0.33), ("challenger", 0.33)),
            arm_models={"challenger": ArmModel(model_ref(CHALLENGER_DIR, challenger), THRESHOLD)},
            **common,
        )
        arms = f"control/champion/challenger 34/33/33, challenger model {challenger['model_version'][:12]}…"
    control_plane.create(settings.kafka, definition)
    launched = control_plane.apply_action(settings.kafka, experiment_id, "launch", now_ms=now + 1)
    console.print(
        f"experiment: {experiment_id} v{launched.version} {launched.status}, {arms}, "
        f"model {card['model_version'][:12]}…, threshold {THRESHOLD}"
    )
    return experiment_id


def _job(console: Console, settings: Settings) -> None:
    """`abflow pipeline run --detach` unless `abflow pipeline status` says it already runs; then wait for it."""
    status = _abflow("pipeline", "status", "--lines", "0")
    if status.returncode in (0, 3):  # 3: running but unhealthy (status says why); starting again would fail
        console.print(f"flink job: already running ({status.stdout.strip().splitlines()[0]})")
    else:
        started = _abflow("pipeline", "run", "--detach", "--reference-data", str(DATA_DIR))
        if started.returncode != 0:
            raise InfraError(f"`abflow pipeline run --detach` failed: {(started.stderr or started.stdout).strip()}")
        console.print(f"flink job: {started.stdout.strip()}")
    with console.status("waiting until the job has loaded the experiment (broadcast state, checkpointed)"):
        waited = wait_for_job_to_read_experiments(settings.kafka, timeout_s=240.0, pid=_pipeline_pid(settings))
    console.print(f"flink job: knows the experiment after {waited:.1f} s")


def _simulate(console: Console, settings: Settings, experiment_id: str) -> SimulationResult:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from experiment.cli.simulate_cmd import summary_lines
    from experiment.cli.simulate_io import run_simulation
    from experiment.simulation.simulator import SimulationConfig

    config = SimulationConfig(
        customers=int(os.environ.get("ABFLOW_DEMO_CUSTOMERS", DEFAULT_CUSTOMERS)),
        rate=float(os.environ.get("ABFLOW_DEMO_RATE", DEFAULT_RATE)),
        seed=int(time.time()) % 1_000_000,
        malformed=MALFORMED,
    )
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
    ) as progress:
        task = progress.add_task("preparing", total=None)
        result = run_simulation(
            settings,
            experiment_id,
            config,
            progress=lambda sent, total: progress.update(
                task, completed=sent, total=total, description="sending events"
            ),
            stage=lambda message: progress.update(task, description=message),
        )
    for line in summary_lines(result):
        console.print(line)
    return result


def _collect(console: Console, settings: Settings, experiment_id: str, result: SimulationResult) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from experiment.results.collector import CollectStats, collect
    from experiment.results.store import ResultsStore

    expected = (result.sessions_in_experiment, result.outcomes_in_experiment, result.malformed_sent)
    counts = {"now": (0, 0, 0)}

    def accounted_for(store: ResultsStore, stats: CollectStats) -> bool:
        a, o = store.con.execute(
            "SELECT (SELECT count(*) FROM assignments WHERE experiment_id = $e), "
            "(SELECT count(*) FROM outcomes WHERE experiment_id = $e)",
            {"e": experiment_id},
        ).fetchone()
        counts["now"] = (int(a), int(o), stats.dead_letters)
        return all(n >= e for n, e in zip(counts["now"], expected, strict=True))

    total = expected[0] + expected[1]
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("collecting decisions and outcomes", total=total)

        def on_progress(_stats: CollectStats, _lag: int) -> None:
            a, o, _dead = counts["now"]
            progress.update(task, completed=a + o)

        stats = collect(settings, until=accounted_for, timeout_s=300.0, progress=on_progress)
    a, o, dead = counts["now"]
    console.print(
        f"collected: {a} assignments (expected {expected[0]}), {o} attributed purchases (expected "
        f"{expected[1]}), {dead} dead letters ({result.malformed_sent} malformed events sent) into "
        f"{settings.store_path} in {stats.elapsed_s:.1f} s"
    )


def _report(
    console: Console, settings: Settings, experiment_id: str, result: SimulationResult, arms: int = 2
) -> list[Path]:
    """The report, the truth it should find, and (three arms) whether the arms are ranked as the truth ranks them."""
    from experiment.results import truth
    from experiment.results.report import REPORTS_DIR, build_report, print_summary, write_report
    from experiment.results.store import ResultsStore

    with ResultsStore(settings.store_path, read_only=True) as store:
        model = build_report(store, experiment_id, segments=list(DEMO_SEGMENTS) if arms == 3 else None)
    notes: list[str] = []
    for lift in result.true_lifts or ([result.true_lift] if result.true_lift is not None else []):
        what = "" if arms == 2 else f" of {lift.arm} vs {lift.baseline}"
        notes.append(
            f"[bold]true lift{what}[/bold] (ground truth): {lift.abs_lift:+.4f} absolute, {lift.rel_lift:+.1%} relative"
        )
    if arms == 3:
        reported, true = truth.reported_ranking(model), truth.true_ranking(result)
        mark = "[green]same[/green]" if reported == true else "[yellow]differs[/yellow]"
        notes.append(f"[bold]ranking[/bold]: measured {' > '.join(reported)}; ground truth {' > '.join(true)} ({mark})")
    for kind, checks in (("arm", truth.arm_checks(model, result)), ("segment", truth.segment_checks(model, result))):
        if checks:
            missed = [check.what for check in checks if not check.covered]
            notes.append(
                f"[bold]{kind} intervals covering their true lift[/bold]: {len(checks) - len(missed)} of {len(checks)}"
                + (f" (missed: {', '.join(missed)}; a 95% interval misses 1 time in 20)" if missed else "")
            )
    print_summary(console, model, notes=notes)
    return [write_report(model, fmt, REPORTS_DIR / f"{experiment_id}.{fmt}") for fmt in ("html", "md", "json")]


def run_demo(console: Console, arms: int = 2) -> None:
    """Run the ten stages (see the module docstring); raises `AbflowError` on an expected failure.

    `arms=3` runs champion vs challenger: control, the champion model and a challenger model as arms.
    """
    from experiment.runtime.config import load_settings

    began = time.monotonic()
    settings = load_settings()
    with _stage(console, 1, "install"):
        console.print("dependencies and jars: installed by `make install` (idempotent)")
    with _stage(console, 2, "Kafka"):
        settings = _kafka(console, settings)
    with _stage(console, 3, "data"):
        _data(console)
    with _stage(console, 4, "model" if arms == 2 else "models: champion and challenger"):
        card = _model(console)
        challenger = _challenger(console, card) if arms == 3 else None
    with _stage(console, 5, "experiment"):
        experiment_id = _experiment(console, settings, card, challenger)
    with _stage(console, 6, "Flink job"):
        _job(console, settings)
    with _stage(console, 7, "simulated traffic"):
        result = _simulate(console, settings, experiment_id)
    with _stage(console, 8, "collect results"):
        _collect(console, settings, experiment_id, result)
    with _stage(console, 9, "significance report"):
        paths = _report(console, settings, experiment_id, result, arms)
        console.print("reports: " + ", ".join(str(p) for p in paths))
    with _stage(console, 10, "dashboard"):
        console.print(
            f"open the live dashboard with:  [bold].venv/bin/abflow dashboard[/bold]  "
            f"(reads {settings.store_path}; then browse http://127.0.0.1:8501)"
        )
        console.print(f"report of this run again:     .venv/bin/abflow report {experiment_id} --format html")
    console.print(f"[bold green]demo finished in {time.monotonic() - began:.0f} s[/bold green]")


def main(argv: list[str] | None = None) -> int:
    """Entry point: `python -m experiment.cli.demo`."""
    import argparse

    from rich.console import Console

    parser = argparse.ArgumentParser(
        prog="python -m experiment.cli.demo",
        description="abflow end to end (stop the job with `abflow pipeline stop`).",
    )
    parser.add_argument(
        "--arms",
        type=int,
        choices=(2, 3),
        default=os.environ.get("ABFLOW_DEMO_ARMS", "2"),  # a string default goes through `type`
        help="2: control vs the model's picks; 3: control, champion and challenger models",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.arms not in (2, 3):
        parser.error(f"ABFLOW_DEMO_ARMS must be 2 or 3. Got {args.arms}.")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # kafka-python warns whenever its I/O thread is starved for 0.1 s, which a busy 2-core demo machine does often.
    logging.getLogger("kafka").setLevel(logging.ERROR)
    console = Console()
    try:
        run_demo(console, arms=args.arms)
    except AbflowError as error:
        console.print(f"[red]error:[/red] {error}")
        return error.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
