"""`abflow pipeline run|stop|status`: the Flink decision job on the local MiniCluster.

`run` blocks (Ctrl-C cancels the job cleanly); `run --detach` starts the same job in a background process
(`python -m flink_pipeline.job --local ...`) whose pid and log live under `<home>/pipeline/`, so `stop` and `status`
can find it. The MiniCluster lives inside that process: stopping the process (SIGTERM) cancels the job first, which
aborts its open Kafka transaction at once.

PyFlink is imported only inside the commands, so `abflow --help` stays fast.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Literal

import typer

from experiment.cli.common import fail
from experiment.cli.kafka_cmd import BootstrapServers, TopicPrefix, cli_settings
from experiment.config import Settings
from experiment.errors import AbflowError, ConfigError, InfraError
from experiment.processes import pid_alive

__all__ = ["app", "parse_interval_ms", "run", "status", "stop"]

app = typer.Typer(help="The Flink decision job on the local MiniCluster.", no_args_is_help=True)

_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")


def parse_interval_ms(text: str) -> int:
    """'2s', '500ms', '1m' or a bare number of milliseconds -> milliseconds."""
    match = _INTERVAL.match(text)
    if not match:
        raise ConfigError(f"checkpoint interval must look like 2s, 500ms, 1m or 2000. Got {text!r}.")
    value, unit = float(match.group(1)), match.group(2) or "ms"
    return int(value * {"ms": 1, "s": 1_000, "m": 60_000}[unit])


def _state_dir(settings: Settings) -> Path:
    return settings.home / "pipeline"


def _read_state(settings: Settings) -> dict | None:
    path = _state_dir(settings) / "job.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@app.command("run")
def run(
    detach: Annotated[bool, typer.Option("--detach", help="Start in the background; see `pipeline status`.")] = False,
    parallelism: Annotated[int, typer.Option("--parallelism", min=1, help="Parallel subtasks.")] = 1,
    checkpoint_interval: Annotated[
        str, typer.Option("--checkpoint-interval", help="Checkpoint (and output commit) interval: 2s, 500ms, 1m.")
    ] = "2s",
    mode: Annotated[
        Literal["thread", "process"],
        typer.Option("--mode", help="Python execution mode (thread: in the JVM; process: separate workers)."),
    ] = "thread",
    categories: Annotated[int, typer.Option("--categories", min=1, help="Purchase categories K in sessions.")] = 60,
    reference_data: Annotated[
        Path | None,
        typer.Option(
            "--reference-data",
            help="Data dir whose X_test.csv the scorer is verified on (default: data/ "
            "if it has X_test.csv, else synthetic probe rows).",
        ),
    ] = None,
    group_id: Annotated[str, typer.Option("--group-id", help="Consumer group of the job's sources.")] = (
        "abflow-decisions"
    ),
    bootstrap_servers: BootstrapServers = None,
    topic_prefix: TopicPrefix = None,
) -> None:
    """Run the decision job: sessions/outcomes in, assignments/attributed-outcomes/dead-letter out (exactly once)."""
    try:
        settings = cli_settings(bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix)
        interval_ms = parse_interval_ms(checkpoint_interval)
        if reference_data is None and Path("data", "X_test.csv").is_file():
            reference_data = Path("data")
        args = [
            "--local",
            "--parallelism",
            str(parallelism),
            "--checkpoint-interval-ms",
            str(interval_ms),
            "--execution-mode",
            mode,
            "--categories",
            str(categories),
            "--group-id",
            group_id,
            "--transactional-id-prefix",
            group_id,
            "--bootstrap",
            settings.kafka.bootstrap_servers,
            "--topic-prefix",
            settings.kafka.topic_prefix,
        ]
        if reference_data is not None:
            args += ["--reference-rows", str(reference_data.resolve())]
        from experiment.kafka.topics import ensure_topics
        from flink_pipeline import job

        config = job.config_from_args(job.parse_args(args))
        ensure_topics(settings.kafka)
        if detach:
            _start_detached(settings, args)
            return
        typer.echo(
            f"running the decision job (mode={mode}, parallelism={parallelism}, checkpoints every "
            f"{interval_ms} ms) against {settings.kafka.bootstrap_servers}; Ctrl-C stops it",
            err=True,
        )
        job.run_local_until_stopped(settings, config)
    except AbflowError as error:
        fail(error)


def _start_detached(settings: Settings, args: list[str]) -> None:
    state = _read_state(settings)
    if state and pid_alive(int(state["pid"])):
        raise InfraError(f"the pipeline is already running (pid {state['pid']}); `abflow pipeline stop` first.")
    directory = _state_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "job.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(  # our own interpreter and module, no shell
            [sys.executable, "-m", "flink_pipeline.job", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=Path.cwd(),
        )
    time.sleep(1.0)
    if process.poll() is not None:
        raise InfraError(f"the pipeline exited at once (code {process.returncode}); see {log_path}")
    record = {"pid": process.pid, "started": int(time.time()), "args": args, "log": str(log_path.resolve())}
    (directory / "job.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    typer.echo(f"pipeline started in the background (pid {process.pid}); log: {log_path}")


@app.command("stop")
def stop(
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for a clean cancel.")] = 60.0,
) -> None:
    """Stop the detached pipeline: cancel the job cleanly (SIGTERM), then kill it if it does not exit in time."""
    settings = cli_settings()
    state = _read_state(settings)
    if not state or not pid_alive(int(state["pid"])):
        typer.echo("the pipeline is not running")
        if state:
            (_state_dir(settings) / "job.json").unlink(missing_ok=True)
        return
    pid = int(state["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.5)
    if pid_alive(pid):
        os.killpg(pid, signal.SIGKILL)
        typer.echo(f"the pipeline (pid {pid}) did not stop within {timeout:.0f} s and was killed")
    else:
        typer.echo(f"the pipeline (pid {pid}) stopped")
    (_state_dir(settings) / "job.json").unlink(missing_ok=True)


@app.command("status")
def status(
    lines: Annotated[int, typer.Option("--lines", min=0, help="Recent log lines to show.")] = 5,
) -> None:
    """Whether the detached pipeline runs, since when, and the latest lines of its log."""
    settings = cli_settings()
    state = _read_state(settings)
    if not state or not pid_alive(int(state["pid"])):
        typer.echo("pipeline: not running")
        raise typer.Exit(code=1)
    uptime = int(time.time()) - int(state["started"])
    typer.echo(f"pipeline: running (pid {state['pid']}, up {uptime} s)")
    typer.echo(f"log: {state['log']}")
    log = Path(state["log"])
    if lines and log.is_file():
        recent = log.read_text(encoding="utf-8", errors="replace").splitlines()
        for line in recent[-lines:]:
            typer.echo(f"  {line}")
