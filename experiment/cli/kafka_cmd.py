"""`abflow kafka install|up|down|status`: the local single-node Kafka broker, run from jars fetched by Maven.

Also defines the Kafka connection options shared by every command that talks to Kafka (`--bootstrap-servers`,
`--topic-prefix`); SASL/SSL settings come from the config file or `ABFLOW_KAFKA_*` variables so that secrets never
appear on a command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from experiment.cli.common import fail
from experiment.config import Settings, load_settings
from experiment.errors import AbflowError

__all__ = ["BootstrapServers", "TopicPrefix", "app", "cli_settings"]

app = typer.Typer(
    help="Run the local Kafka broker (single node, KRaft, jars from Maven Central).",
    no_args_is_help=True,
)

BootstrapServers = Annotated[
    str | None,
    typer.Option(
        "--bootstrap-servers",
        help="Kafka to use instead of the local broker (host:port,...). Default: $ABFLOW_KAFKA_BOOTSTRAP or config.",
        show_default=False,
    ),
]
TopicPrefix = Annotated[
    str | None,
    typer.Option(
        "--topic-prefix",
        help="Prefix of every topic name (default: $ABFLOW_KAFKA_TOPIC_PREFIX or none).",
        show_default=False,
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Broker data directory (default: <abflow home>/kafka).", show_default=False),
]


def cli_settings(bootstrap_servers: str | None = None, topic_prefix: str | None = None) -> Settings:
    """Settings from config and environment, with the command-line Kafka options on top."""
    return load_settings({"kafka.bootstrap_servers": bootstrap_servers, "kafka.topic_prefix": topic_prefix})


@app.command()
def install() -> None:
    """Fetch the pinned Kafka broker jars and the Flink Kafka connector (checksums verified; no-op when present)."""
    from experiment.kafka import jars

    try:
        report = jars.install_jars(cli_settings())
    except AbflowError as error:
        fail(error)
    state = "downloaded" if report.downloaded else "already installed, nothing downloaded"
    typer.echo(f"kafka jars: {report.kafka_dir} (Kafka {jars.KAFKA_VERSION}; {state})")
    typer.echo(f"flink kafka connector: {report.flink_connector}")


@app.command()
def up(
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Client port on 127.0.0.1.")] = 9092,
    data_dir: DataDir = None,
    topic_prefix: TopicPrefix = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for readiness.")] = 90.0,
) -> None:
    """Start the local broker (idempotent), create the topics, and print the bootstrap address."""
    from dataclasses import replace

    from experiment.kafka import broker, topics

    try:
        settings = cli_settings(topic_prefix=topic_prefix)
        status = broker.start(settings, port=port, data_dir=data_dir, timeout_s=timeout)
        assert status.bootstrap_servers is not None
        kafka = replace(settings.kafka, bootstrap_servers=status.bootstrap_servers)
        created = topics.ensure_topics(kafka)
    except AbflowError as error:
        fail(error)
    typer.echo(f"kafka: ready pid={status.pid} data dir {status.data_dir}")
    typer.echo(f"topics: {'created ' + ', '.join(created) if created else 'all present'}")
    typer.echo(status.bootstrap_servers)


@app.command()
def down(data_dir: DataDir = None) -> None:
    """Stop the local broker cleanly (SIGTERM, then wait for its controlled shutdown)."""
    from experiment.kafka import broker

    try:
        settings = cli_settings()
        directory = data_dir or settings.kafka_data_dir
        before = broker.status(directory, probe=False)
        stopped = broker.stop(directory)
    except AbflowError as error:
        fail(error)
    typer.echo(f"kafka: stopped pid={before.pid}" if stopped else "kafka: not running")


@app.command()
def status(data_dir: DataDir = None, bootstrap_servers: BootstrapServers = None) -> None:
    """Show whether the local broker runs and answers; with --bootstrap-servers, probe that cluster instead.

    Exits 1 when nothing answers, so scripts can test it.
    """
    from experiment.kafka import broker

    try:
        settings = cli_settings(bootstrap_servers=bootstrap_servers)
        if bootstrap_servers:
            ok = broker.metadata_answered(settings.kafka, timeout_s=10.0)
            typer.echo(
                f"kafka: {settings.kafka.bootstrap_servers} {'answers' if ok else 'does not answer'} metadata requests"
            )
        else:
            local = broker.status(data_dir or settings.kafka_data_dir)
            ok = local.running and local.ready
            typer.echo(local.describe())
    except AbflowError as error:
        fail(error)
    if not ok:
        raise typer.Exit(code=1)
