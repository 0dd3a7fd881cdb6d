"""`abflow pipeline run|stop|savepoint|status`: the Flink decision job, on the local MiniCluster or a Flink cluster.

`run` resumes from the newest retained checkpoint or savepoint of the job (keyed state and Kafka offsets
together), so a crash, a reboot or an upgrade loses nothing; `--from` picks a snapshot and `--fresh --yes` starts
with empty state. `run` blocks (Ctrl-C cancels; checkpoints stay); `run --detach` starts the same job in a background
process whose pid, REST address and logs live under `<home>/pipeline/`. `stop` ends the job with a savepoint,
`savepoint` takes one while it runs, `status` shows its health from Flink's REST API. See docs/operations.md.
`run --cluster http://HOST:PORT` submits the same job to a Flink cluster instead (docs/cluster.md); the other
commands then talk to that cluster's REST API.

PyFlink is imported only inside the commands, so `abflow --help` stays fast.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from experiment.cli.kafka_cmd import BootstrapServers, TopicPrefix, cli_settings
from experiment.core.errors import ConfigError, InfraError
from experiment.runtime.config import Settings
from experiment.runtime.processes import pid_alive
from flink_pipeline import checkpoints
from flink_pipeline.rest import FlinkRest

__all__ = ["app", "parse_interval_ms", "run", "savepoint", "status", "stop"]

app = typer.Typer(help="The Flink decision job (local MiniCluster, or --cluster).", no_args_is_help=True)

ClusterUrl = Annotated[
    str | None,
    typer.Option(
        "--cluster",
        help="The Flink cluster's REST address (http://HOST:PORT); default: where `pipeline run` put the job.",
        show_default=False,
    ),
]

_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")
#: The job's name: it names the folders of its checkpoints and savepoints, so it must not change between runs.
JOB_NAME = "abflow-decisions"
_RETAINED = 3


def parse_interval_ms(text: str) -> int:
    """'2s', '500ms', '1m' or a bare number of milliseconds -> milliseconds."""
    match = _INTERVAL.match(text)
    if not match:
        raise ConfigError(f"checkpoint interval must look like 2s, 500ms, 1m or 2000. Got {text!r}.")
    value, unit = float(match.group(1)), match.group(2) or "ms"
    return int(value * {"ms": 1, "s": 1_000, "m": 60_000}[unit])


def _state_dir(settings: Settings) -> Path:
    return settings.home / "pipeline"


def _read_state(settings: Settings) -> dict[str, Any] | None:
    path = _state_dir(settings) / "job.json"
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _running_state(settings: Settings) -> dict[str, Any] | None:
    """The record of the running job: a local process that is alive, or a cluster job that is not terminal."""
    state = _read_state(settings)
    if state and state.get("cluster"):
        return state if _cluster_job(state) is not None else None
    return state if state and pid_alive(int(state["pid"])) else None


def _cluster_job(state: dict[str, Any]) -> dict[str, Any] | None:
    """The job of a `run --cluster` record if the cluster still runs it (None when the cluster or the job is gone)."""
    try:
        job = FlinkRest(str(state["cluster"]), timeout_s=3.0).active_job(JOB_NAME)
    except InfraError:
        return None
    return job if job is not None and job.get("jid") == state.get("jid") else None


def _cluster_state(cluster: str) -> dict[str, Any]:
    """A record for `--cluster URL` given to status/stop/savepoint: the cluster's running decision job."""
    job = FlinkRest(cluster, timeout_s=5.0).active_job(JOB_NAME)
    return {
        "cluster": cluster,
        "rest": cluster,
        "jid": None if job is None else job["jid"],
        "started": int(job.get("start-time", time.time() * 1000)) // 1000 if job else int(time.time()),
    }


def choose_snapshot(settings: Settings, *, from_path: Path | None, fresh: bool, yes: bool) -> Path | None:
    """The snapshot `pipeline run` restores (None: empty state), after pruning old runs' checkpoints.

    Resuming is the default because starting empty silently forgets every exposure the job has seen, and with
    it the attribution of those customers' later purchases.
    """
    if fresh and from_path is not None:
        raise ConfigError("--fresh and --from contradict each other; give one")
    if fresh:
        if not yes:
            raise ConfigError("--fresh drops the job's state (exposures and held purchases); confirm with --yes")
        typer.echo("starting fresh: empty state, offsets from the consumer group (--fresh --yes)", err=True)
        return None
    snapshot = (
        checkpoints.snapshot_at(from_path.expanduser())
        if from_path is not None
        else checkpoints.newest_snapshot(settings.home, JOB_NAME)
    )
    if snapshot is None:
        where = checkpoints.checkpoint_root(settings.home, JOB_NAME)
        typer.echo(f"starting fresh: no checkpoint or savepoint of {JOB_NAME} under {where.parent}", err=True)
        return None
    checkpoints.prune_checkpoints(settings.home, JOB_NAME, _RETAINED, protect=snapshot.path)
    typer.echo(f"resuming from {checkpoints.describe(snapshot)}", err=True)
    return snapshot.path.resolve()


@app.command("run")
def run(
    detach: Annotated[bool, typer.Option("--detach", help="Start in the background; see `pipeline status`.")] = False,
    from_path: Annotated[
        Path | None,
        typer.Option("--from", help="Resume from this checkpoint or savepoint folder (default: the newest)."),
    ] = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Start with empty state instead of resuming (needs --yes).")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm --fresh.")] = False,
    parallelism: Annotated[int, typer.Option("--parallelism", min=1, help="Parallel subtasks.")] = 1,
    checkpoint_interval: Annotated[
        str, typer.Option("--checkpoint-interval", help="Checkpoint (and output commit) interval: 2s, 500ms, 1m.")
    ] = "2s",
    mode: Annotated[
        Literal["thread", "process"],
        typer.Option("--mode", help="Python execution mode (thread: in the JVM; process: separate workers)."),
    ] = "thread",
    categories: Annotated[int, typer.Option("--categories", min=1, help="Purchase categories K in sessions.")] = 60,
    state_backend: Annotated[
        Literal["hashmap", "rocksdb"],
        typer.Option(
            "--state-backend",
            help="Keyed state on the JVM heap (hashmap, fastest) or in RocksDB on local disk (state beyond memory).",
        ),
    ] = "hashmap",
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
    cluster: Annotated[
        str | None,
        typer.Option(
            "--cluster",
            help="Submit to this Flink cluster (its JobManager's REST address, http://HOST:PORT) instead of the local "
            "MiniCluster; the job runs detached there.",
            show_default=False,
        ),
    ] = None,
    python_exec: Annotated[
        str | None,
        typer.Option(
            "--python-exec",
            help="With --cluster: the Python (with the project's requirements) the TaskManagers run the operators "
            "with. Default: this interpreter.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the decision job, resuming from its newest checkpoint or savepoint (exactly-once output)."""
    settings = cli_settings(bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix)
    interval_ms = parse_interval_ms(checkpoint_interval)
    if cluster is not None:
        from experiment.cluster.submit import jobmanager_address

        jobmanager_address(cluster)  # a malformed address fails before anything else happens
    if reference_data is None and Path("data", "X_test.csv").is_file():
        reference_data = Path("data")
    running = _running_state(settings)
    if running:
        where = f"job {running['jid']} on {running['cluster']}" if running.get("cluster") else f"pid {running['pid']}"
        raise InfraError(f"the pipeline is already running ({where}); `abflow pipeline stop` first.")
    restore = choose_snapshot(settings, from_path=from_path, fresh=fresh, yes=yes)
    from experiment.runtime.processes import free_port

    rest_port = free_port()
    args = [
        "--parallelism",
        str(parallelism),
        "--checkpoint-interval-ms",
        str(interval_ms),
        "--execution-mode",
        mode,
        "--categories",
        str(categories),
        "--state-backend",
        state_backend,
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
    if restore is not None:
        args += ["--restore-from", str(restore)]
    from experiment.kafka.topics import ensure_topics
    from flink_pipeline import job

    if cluster is not None:
        args += [
            "--checkpoint-dir",
            checkpoints.checkpoint_root(settings.home, JOB_NAME).resolve().as_uri(),
            "--savepoint-dir",
            checkpoints.savepoint_root(settings.home, JOB_NAME).resolve().as_uri(),
        ]
        job.config_from_args(job.parse_args(args))
        ensure_topics(settings.kafka)
        _run_on_cluster(settings, cluster, args, restore, python_exec)
        return
    args = ["--local", *args, "--rest-port", str(rest_port)]
    config = job.config_from_args(job.parse_args(args))
    ensure_topics(settings.kafka)
    if detach:
        _start_detached(settings, args, rest_port)
        return
    typer.echo(
        f"running the decision job (mode={mode}, parallelism={parallelism}, checkpoints every "
        f"{interval_ms} ms) against {settings.kafka.bootstrap_servers}; REST http://127.0.0.1:{rest_port}; "
        f"logs {job.log_dir(settings)}; Ctrl-C stops it",
        err=True,
    )
    _write_state(settings, os.getpid(), args, rest_port, settings.home / "pipeline" / "logs")
    job.use_log_dir(settings)
    try:
        job.run_local_until_stopped(settings, config)
    finally:
        (_state_dir(settings) / "job.json").unlink(missing_ok=True)


def _run_on_cluster(
    settings: Settings, cluster: str, args: list[str], restore: Path | None, python_exec: str | None
) -> None:
    """Submit the job to the cluster, wait until its tasks run, and record it for status/stop/savepoint."""
    from experiment.cluster.submit import submit_job, wait_running

    log_path = _state_dir(settings) / "submit.log"
    typer.echo(f"submitting the decision job to {cluster} (log {log_path})", err=True)
    job_id = submit_job(settings, cluster, args, restore=restore, python_exec=python_exec, log_path=log_path)
    record = {
        "cluster": cluster,
        "rest": cluster,
        "jid": job_id,
        "started": int(time.time()),
        "args": args,
        "log": str(log_path.resolve()),
    }
    (_state_dir(settings) / "job.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    if wait_running(cluster, job_id):
        typer.echo(f"pipeline running on {cluster} (job {job_id})")
    else:
        typer.echo(f"pipeline submitted to {cluster} (job {job_id}) but its tasks are not all running yet")


def _write_state(settings: Settings, pid: int, args: list[str], rest_port: int, log: Path) -> None:
    record = {
        "pid": pid,
        "started": int(time.time()),
        "args": args,
        "rest": f"http://127.0.0.1:{rest_port}",
        "log": str(log.resolve()),
        "flink_logs": str((settings.home / "pipeline" / "logs").resolve()),
    }
    directory = _state_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "job.json").write_text(json.dumps(record, indent=2), encoding="utf-8")


def _start_detached(settings: Settings, args: list[str], rest_port: int, timeout_s: float = 120.0) -> None:
    """Start the job process, then wait until Flink reports the job RUNNING (or the process has died)."""
    directory = _state_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "job.log"
    env = {**os.environ, "FLINK_LOG_DIR": str((directory / "logs").resolve())}
    with open(log_path, "ab") as log:
        process = subprocess.Popen(  # our own interpreter and module, no shell
            [sys.executable, "-m", "flink_pipeline.job", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=Path.cwd(),
            env=env,
        )
    _write_state(settings, process.pid, args, rest_port, log_path)
    rest = FlinkRest(f"http://127.0.0.1:{rest_port}", timeout_s=2.0)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            (directory / "job.json").unlink(missing_ok=True)
            raise InfraError(f"the pipeline exited (code {process.returncode}): {_last_error(log_path)}")
        try:
            job = rest.active_job(JOB_NAME)
        except InfraError:
            job = None
        if job is not None and job.get("state") == "RUNNING" and _tasks_running(rest, job["jid"]):
            typer.echo(
                f"pipeline started in the background (pid {process.pid}, job {job['jid']}); "
                f"REST http://127.0.0.1:{rest_port}; log: {log_path}"
            )
            return
        time.sleep(0.5)
    typer.echo(f"pipeline started (pid {process.pid}) but not RUNNING after {timeout_s:.0f} s; see {log_path}")


def _tasks_running(rest: FlinkRest, job_id: str) -> bool:
    try:
        return rest.tasks_running(job_id)
    except InfraError:
        return False


def _last_error(log_path: Path) -> str:
    """The last ERROR line of the job's log: what `run --detach` shows when the job could not start."""
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return f"see {log_path}"
    errors = [line for line in lines if " ERROR " in line]
    return (
        errors[-1].split(" ERROR ", 1)[-1].split(" ", 1)[-1] if errors else "no error logged"
    ) + f" (log: {log_path})"


def _rest(state: dict[str, Any]) -> FlinkRest:
    return FlinkRest(str(state.get("rest", "")), timeout_s=5.0)


@app.command("stop")
def stop(
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the savepoint and exit.")] = 120.0,
    no_savepoint: Annotated[
        bool, typer.Option("--no-savepoint", help="Cancel without a savepoint (the retained checkpoints stay).")
    ] = False,
    cluster: ClusterUrl = None,
) -> None:
    """Stop the detached pipeline with a savepoint (the next `run` resumes from it); print its path."""
    settings = cli_settings()
    state = _cluster_state(cluster) if cluster else _read_state(settings)
    if state and state.get("cluster"):
        _stop_on_cluster(settings, state, timeout=timeout, no_savepoint=no_savepoint)
        return
    if not state or not pid_alive(int(state["pid"])):
        typer.echo("the pipeline is not running")
        if state:
            (_state_dir(settings) / "job.json").unlink(missing_ok=True)
        return
    pid = int(state["pid"])
    if not no_savepoint:
        try:
            rest = _rest(state)
            job = rest.active_job(JOB_NAME)
            if job is None:
                raise InfraError("Flink reports no running job")
            target = checkpoints.savepoint_root(settings.home, JOB_NAME).resolve().as_uri()
            path = rest.savepoint(job["jid"], target, stop=True, timeout_s=timeout)
            typer.echo(f"savepoint: {_plain_path(path)}")
        except InfraError as error:
            typer.echo(f"error: no savepoint taken ({error}); cancelling, the retained checkpoints stay", err=True)
    if pid_alive(pid):
        os.kill(pid, signal.SIGTERM)  # after a stop-with-savepoint the process is already on its way out
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.3)
    if pid_alive(pid):
        os.killpg(pid, signal.SIGKILL)
        typer.echo(f"the pipeline (pid {pid}) did not stop within {timeout:.0f} s and was killed")
    else:
        typer.echo(f"the pipeline (pid {pid}) stopped")
    (_state_dir(settings) / "job.json").unlink(missing_ok=True)


def _stop_on_cluster(settings: Settings, state: dict[str, Any], *, timeout: float, no_savepoint: bool) -> None:
    """Stop-with-savepoint (or cancel) the job on its cluster through the REST API; the cluster keeps running."""
    job = _cluster_job(state) if state.get("jid") else None
    if job is None:
        typer.echo(f"the pipeline is not running on {state['cluster']}")
        (_state_dir(settings) / "job.json").unlink(missing_ok=True)
        return
    rest = _rest(state)
    if no_savepoint:
        rest.cancel(job["jid"])
        typer.echo(f"the pipeline (job {job['jid']}) was cancelled on {state['cluster']}; its checkpoints stay")
    else:
        target = checkpoints.savepoint_root(settings.home, JOB_NAME).resolve().as_uri()
        path = rest.savepoint(job["jid"], target, stop=True, timeout_s=timeout)
        typer.echo(f"savepoint: {_plain_path(path)}")
        typer.echo(f"the pipeline (job {job['jid']}) stopped on {state['cluster']}")
    (_state_dir(settings) / "job.json").unlink(missing_ok=True)


def _plain_path(location: str) -> str:
    return location.removeprefix("file:")


@app.command("savepoint")
def savepoint(
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the savepoint.")] = 120.0,
    cluster: ClusterUrl = None,
) -> None:
    """Take a savepoint of the running job (it keeps running); print its path."""
    settings = cli_settings()
    state = _cluster_state(cluster) if cluster else _running_state(settings)
    if state is None:
        raise InfraError("the pipeline is not running; nothing to take a savepoint of")
    rest = _rest(state)
    job = rest.active_job(JOB_NAME)
    if job is None:
        raise InfraError("Flink reports no running job")
    target = checkpoints.savepoint_root(settings.home, JOB_NAME).resolve().as_uri()
    typer.echo(f"savepoint: {_plain_path(rest.savepoint(job['jid'], target, stop=False, timeout_s=timeout))}")


def _broker_reachable(bootstrap: str, timeout_s: float = 2.0) -> bool:
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False


@app.command("status")
def status(
    lines: Annotated[int, typer.Option("--lines", min=0, help="Recent log lines to show.")] = 5,
    cluster: ClusterUrl = None,
) -> None:
    """Whether the job runs and is healthy: state, restarts, checkpoints, rates, dead letters, broker."""
    settings = cli_settings()
    state = _cluster_state(cluster) if cluster else _running_state(settings)
    if state is not None and state.get("cluster") and state.get("jid") is None:
        state = None
    newest = checkpoints.newest_snapshot(settings.home, JOB_NAME)
    if state is None:
        typer.echo("pipeline: not running")
        if newest is not None:
            typer.echo(f"next run resumes from {checkpoints.describe(newest)}")
        raise typer.Exit(code=1)
    uptime = int(time.time()) - int(state["started"])
    if state.get("cluster"):
        typer.echo(f"pipeline: on the cluster {state['cluster']} (job {state['jid']}, up {uptime} s)")
    else:
        typer.echo(f"pipeline: process up (pid {state['pid']}, up {uptime} s); REST {state.get('rest')}")
    healthy = _show_health(settings, state)
    if not _broker_reachable(settings.kafka.bootstrap_servers):
        typer.echo(f"broker: unreachable at {settings.kafka.bootstrap_servers}")
        healthy = False
    else:
        typer.echo(f"broker: reachable at {settings.kafka.bootstrap_servers}")
    if newest is not None:
        typer.echo(f"newest retained snapshot: {checkpoints.describe(newest)}")
    if "log" in state:
        typer.echo(f"log: {state['log']}")
    if "flink_logs" in state:
        typer.echo(f"flink logs: {state['flink_logs']}")
    log = Path(state.get("log", ""))
    if lines and state.get("log") and log.is_file():
        recent = log.read_text(encoding="utf-8", errors="replace").splitlines()
        for line in recent[-lines:]:
            typer.echo(f"  {line}")
    if not healthy:
        raise typer.Exit(code=3)


def _show_health(settings: Settings, state: dict[str, Any]) -> bool:
    rest = _rest(state)
    try:
        job = rest.active_job(JOB_NAME)
        if job is None:
            typer.echo("job: none running on Flink (starting, or ended; see the log)")
            return False
        health = rest.health(job["jid"])
        counters = rest.abflow_counters(job["jid"])
    except InfraError as error:
        typer.echo(f"job: unknown ({error})")
        return False
    now_ms = time.time() * 1000
    typer.echo(f"job: {health.state.lower()} (id {health.job_id}, restarts {health.restarts})")
    for label, info in (("last checkpoint", health.last_checkpoint), ("last savepoint", health.last_savepoint)):
        if info is None:
            typer.echo(f"{label}: none yet")
        else:
            age = max(0.0, (now_ms - info.completed_ms) / 1000)
            typer.echo(f"{label}: {_plain_path(info.path)} ({age:.0f} s old, {info.size_bytes} bytes)")
    typer.echo(f"restored from: {_plain_path(health.restored_from) if health.restored_from else 'nothing'}")
    typer.echo(
        f"records: {health.records_in_per_s:.0f}/s in, {health.records_out_per_s:.0f}/s out; "
        f"checkpoints {health.checkpoints_completed} completed, {health.checkpoints_failed} failed"
    )
    dead = sum(v for k, v in counters.items() if k.startswith("dead_lettered"))
    typer.echo(f"dead letters: {dead:.0f}")
    unusable = {
        k.split(".")[1]: v for k, v in counters.items() if k.startswith("experiment.") and k.endswith("model_unusable")
    }
    for exp_id, count in sorted(unusable.items()):
        if count:
            typer.echo(f"experiment {exp_id}: MODEL UNUSABLE, assigns nobody ({count:.0f} sessions not assigned)")
    return health.state == "RUNNING" and not any(unusable.values())
