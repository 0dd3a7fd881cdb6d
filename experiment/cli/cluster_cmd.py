"""`abflow cluster up|down|status`: a real local cluster, a Flink standalone session cluster and 3 Kafka brokers.

`up` is idempotent: it starts whatever is not running (a process that crashed comes back on its old ports) and prints
the two addresses the other commands need (`ABFLOW_KAFKA_BOOTSTRAP=…` and `pipeline run --cluster …`). `down` stops
the decision job with a savepoint first, then every process; nothing under `<home>/cluster/` is deleted. See
docs/cluster.md.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Annotated

import typer

from experiment.cli.kafka_cmd import TopicPrefix, cli_settings
from experiment.core.errors import InfraError

if TYPE_CHECKING:
    from experiment.cluster.procs import ProcessInfo
    from experiment.runtime.config import Settings

__all__ = ["app", "down", "status", "up"]

app = typer.Typer(
    help="A real local cluster: Flink JobManager + TaskManagers, and a 3-broker Kafka cluster.", no_args_is_help=True
)

_JOB_NAME = "abflow-decisions"


@app.command()
def up(
    taskmanagers: Annotated[int, typer.Option("--taskmanagers", min=1, help="TaskManager processes.")] = 2,
    slots: Annotated[int, typer.Option("--slots", min=1, help="Task slots per TaskManager.")] = 2,
    brokers: Annotated[
        int, typer.Option("--brokers", min=1, help="Kafka brokers (fixed when the cluster is first created).")
    ] = 3,
    topic_prefix: TopicPrefix = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for each part to be ready.")] = 180.0,
) -> None:
    """Start the Kafka brokers and the Flink cluster (what is not running yet), create the topics, print addresses."""
    from experiment.cluster import flink_standalone, kafka_cluster
    from experiment.kafka.topics import ensure_topics

    settings = cli_settings(topic_prefix=topic_prefix)
    nodes = kafka_cluster.start(settings, brokers=brokers, timeout_s=timeout)
    bootstrap = kafka_cluster.bootstrap_servers(nodes)
    created = ensure_topics(replace(settings.kafka, bootstrap_servers=bootstrap))
    layout = flink_standalone.start(settings, taskmanagers=taskmanagers, slots=slots, timeout_s=timeout)
    _print_status(settings)
    typer.echo(f"topics: {'created ' + ', '.join(created) if created else 'all present'}")
    typer.echo(f"export ABFLOW_KAFKA_BOOTSTRAP={bootstrap}")
    typer.echo(f"abflow pipeline run --cluster {flink_standalone.rest_url(layout)}")


@app.command()
def down(
    no_savepoint: Annotated[
        bool, typer.Option("--no-savepoint", help="Do not stop the decision job with a savepoint first.")
    ] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the savepoint.")] = 120.0,
) -> None:
    """Stop the decision job with a savepoint, then every cluster process; the data directories stay."""
    from experiment.cluster import flink_standalone, kafka_cluster
    from flink_pipeline import checkpoints
    from flink_pipeline.rest import FlinkRest

    settings = cli_settings()
    layout = flink_standalone.load_layout(settings)
    if layout is not None and not no_savepoint and flink_standalone.pids(settings).get(flink_standalone.JOBMANAGER):
        rest = FlinkRest(flink_standalone.rest_url(layout), timeout_s=5.0)
        try:
            job = rest.active_job(_JOB_NAME)
            if job is not None:
                target = checkpoints.savepoint_root(settings.home, _JOB_NAME).resolve().as_uri()
                path = rest.savepoint(job["jid"], target, stop=True, timeout_s=timeout)
                typer.echo(f"savepoint: {path.removeprefix('file:')}")
        except InfraError as error:
            typer.echo(f"warning: no savepoint taken ({error}); the retained checkpoints stay", err=True)
    stopped = flink_standalone.stop(settings) + kafka_cluster.stop(settings)
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "cluster: nothing was running")
    typer.echo(f"data kept under {(settings.home / 'cluster').resolve()}")


@app.command()
def status() -> None:
    """Every process of the cluster with its pid, port and health.

    Exits 0 when all are healthy, 1 when none runs (or no cluster was ever started), 3 when some are down or unhealthy.
    """
    settings = cli_settings()
    infos = _print_status(settings)
    if not infos or not any(info.running for info in infos):
        typer.echo("cluster: not running (`abflow cluster up` starts it)")
        raise typer.Exit(code=1)
    if not all(info.healthy for info in infos):
        raise typer.Exit(code=3)


def _print_status(settings: Settings) -> list[ProcessInfo]:
    from experiment.cluster import flink_standalone, kafka_cluster

    infos = [*flink_standalone.status(settings), *kafka_cluster.status(settings)]
    for info in infos:
        typer.echo(info.describe())
    nodes = kafka_cluster.load_nodes(settings)
    layout = flink_standalone.load_layout(settings)
    if nodes:
        typer.echo(f"kafka bootstrap: {kafka_cluster.bootstrap_servers(nodes)}")
    if layout is not None:
        typer.echo(f"flink REST: {flink_standalone.rest_url(layout)}")
    return infos
