"""`abflow kafka install|up|down|status`: the local single-node Kafka broker, run from jars fetched by Maven.

Also defines the Kafka connection options shared by every command that talks to Kafka (`--bootstrap-servers`,
`--topic-prefix`); SASL/SSL settings come from the config file or `ABFLOW_KAFKA_*` variables so that secrets never
appear on a command line. The configured bootstrap address is the one source of truth: `up` starts the broker there
and `status` checks that it answers there, so neither can disagree with the commands that use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from experiment.core.errors import ConfigError
from experiment.runtime.config import Settings, load_settings, parse_bootstrap_servers

if TYPE_CHECKING:
    from experiment.kafka.broker import BrokerStatus

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


def _local_address(settings: Settings) -> tuple[str, int] | None:
    """Where the local broker must listen to serve the configured bootstrap, or None when that is not local."""
    from experiment.kafka import broker

    parse_bootstrap_servers(settings.kafka.bootstrap_servers)  # a malformed address is an error, not "remote"
    try:
        return broker.listen_address(settings.kafka.bootstrap_servers)
    except ConfigError:
        return None


@app.command()
def install() -> None:
    """Fetch the pinned Kafka broker jars and the Flink Kafka connector (checksums verified; no-op when present)."""
    from experiment.kafka import jars

    report = jars.install_jars(cli_settings())
    state = "downloaded" if report.downloaded else "already installed, nothing downloaded"
    typer.echo(f"kafka jars: {report.kafka_dir} (Kafka {jars.KAFKA_VERSION}; {state})")
    typer.echo(f"flink kafka connector: {report.flink_connector}")


@app.command()
def up(
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            min=1,
            max=65535,
            help="Client port (default: the port of the configured bootstrap, $ABFLOW_KAFKA_BOOTSTRAP or config).",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDir = None,
    topic_prefix: TopicPrefix = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for readiness.")] = 90.0,
) -> None:
    """Start the local broker (idempotent), create the topics, and print the bootstrap address."""
    from dataclasses import replace

    from experiment.kafka import broker, topics

    settings = cli_settings(topic_prefix=topic_prefix)
    host, port = broker.listen_address(settings.kafka.bootstrap_servers, port)
    status = broker.start(settings, host=host, port=port, data_dir=data_dir, timeout_s=timeout)
    assert status.bootstrap_servers is not None
    if _local_address(settings) != (host, port):
        typer.echo(
            f"note: other abflow commands use {settings.kafka.bootstrap_servers}; set "
            f"ABFLOW_KAFKA_BOOTSTRAP={status.bootstrap_servers} for them to use this broker",
            err=True,
        )
    kafka = replace(settings.kafka, bootstrap_servers=status.bootstrap_servers)
    created = topics.ensure_topics(kafka)
    typer.echo(f"kafka: ready pid={status.pid} data dir {status.data_dir}")
    typer.echo(f"topics: {'created ' + ', '.join(created) if created else 'all present'}")
    typer.echo(status.bootstrap_servers)


@app.command()
def down(data_dir: DataDir = None) -> None:
    """Stop the local broker cleanly (SIGTERM, then wait for its controlled shutdown)."""
    from experiment.kafka import broker

    settings = cli_settings()
    directory = data_dir or settings.kafka_data_dir
    before = broker.status(directory, probe=False)
    stopped = broker.stop(directory)
    typer.echo(f"kafka: stopped pid={before.pid}" if stopped else "kafka: not running")


@app.command()
def status(data_dir: DataDir = None, bootstrap_servers: BootstrapServers = None) -> None:
    """Check that Kafka answers at the configured address (or --bootstrap-servers), and show the local broker there.

    Exits 1, with the reason on stderr, when nothing answers there, so scripts can test it.
    """
    from dataclasses import replace

    from experiment.kafka import broker

    settings = cli_settings(bootstrap_servers=bootstrap_servers)
    kafka = settings.kafka
    local = _local_address(settings)
    running = broker.status(data_dir or settings.kafka_data_dir, probe=False) if local else None
    # A refused TCP connection needs no Kafka client (which would retry for connect_timeout_s).
    reachable = broker.port_open(*local) if local else True
    ok = reachable and broker.metadata_answered(kafka, timeout_s=kafka.connect_timeout_s)
    if running is not None and running.running and (running.host, running.port) == local:
        typer.echo(replace(running, ready=ok).describe())
    elif running is not None and not running.running and not ok:
        typer.echo(running.describe())
    else:
        typer.echo(f"kafka: {kafka.bootstrap_servers} {'answers' if ok else 'does not answer'} metadata requests")
    if not ok:
        typer.echo(
            f"error: {_why_not_answering(kafka.bootstrap_servers, kafka.connect_timeout_s, local, running)}", err=True
        )
        raise typer.Exit(code=1)


def _why_not_answering(
    bootstrap_servers: str, timeout_s: float, local: tuple[str, int] | None, running: BrokerStatus | None
) -> str:
    """The reason nothing answers at the configured address, with the command that fixes it."""
    if running is None:
        return (
            f"no Kafka broker answered at {bootstrap_servers} within {timeout_s:g} s; "
            "check the address and the security settings"
        )
    if not running.running:
        return f"nothing answers at {bootstrap_servers}; `abflow kafka up` starts the local broker there"
    if (running.host, running.port) != local:
        return (
            f"the local broker listens on {running.bootstrap_servers}, but abflow is configured for "
            f"{bootstrap_servers}; set ABFLOW_KAFKA_BOOTSTRAP={running.bootstrap_servers}, or run "
            "`abflow kafka down` and then `abflow kafka up` to move it"
        )
    return (
        f"the local broker (pid {running.pid}) does not answer metadata requests at {bootstrap_servers}; "
        f"see {running.data_dir / 'logs' / 'server.log'}"
    )
