"""A Flink standalone session cluster on loopback: one JobManager and N TaskManager JVMs, from the PyFlink wheel.

Why the wheel's own distribution: `apache-flink` ships Flink's `bin/`, `lib/` and `conf/`, the same version the job is
built with, so no tarball is downloaded and the client and the cluster can never disagree on the version.

Everything lives under `<home>/cluster/flink/`:
    cluster.json   the layout: ports (kept across `down`/`up`, so TaskManagers and clients find the same addresses),
                   TaskManager count and slots
    conf/          Flink's conf dir: `config.yaml` written on every `up`, the log4j files copied from the wheel
    log/           each process's Flink log, and `<name>.out` (its stdout/stderr)
    pid/           `<name>.pid` per process (ours), plus Flink's own pid files
Retained checkpoints and savepoints go where the local runtime puts them (`flink_pipeline.checkpoints`), so
`abflow pipeline run` resumes from the newest one whichever runtime wrote it.

Each process runs in the foreground of its own session (`jobmanager.sh start-foreground`, which `exec`s the JVM),
so its pid is the JVM's and `kill -9` of it is a real crash. A TaskManager's resource id is its name
(`taskmanager-1`), which is how `status` matches the JobManager's view of it to its pid.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from experiment.cluster.procs import (
    ProcessInfo,
    port_open,
    running_pid,
    spawn,
    terminate,
    terminate_all,
)
from experiment.core.errors import ConfigError, InfraError
from experiment.runtime.config import Settings
from experiment.runtime.processes import find_java, free_port, pid_alive
from flink_pipeline.checkpoints import checkpoint_root, savepoint_root

__all__ = [
    "JOBMANAGER",
    "FlinkLayout",
    "client_conf_dir",
    "flink_home",
    "load_layout",
    "pids",
    "rest_url",
    "start",
    "status",
    "stop",
    "taskmanager_name",
]

logger = logging.getLogger(__name__)

JOBMANAGER = "jobmanager"
_JOB_NAME = "abflow-decisions"


@dataclass(frozen=True)
class FlinkLayout:
    """The cluster's shape and ports, kept in `cluster.json` so a restart binds the same addresses.

    Memory is sized for a 2-core, 24 GB machine that also runs three brokers, the simulator and the collector: the
    JobManager schedules only; each TaskManager holds its slots' heap state, and its Python (thread mode) runs in the
    same process, outside Flink's accounted memory, so `managed_fraction` is kept small.
    """

    rest_port: int
    rpc_port: int
    taskmanager_ports: tuple[int, ...]
    slots: int = 2
    jobmanager_memory: str = "768m"
    taskmanager_memory: str = "1536m"
    managed_fraction: float = 0.2
    heartbeat_interval_ms: int = 3_000
    heartbeat_timeout_ms: int = 15_000
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def taskmanagers(self) -> int:
        """How many TaskManagers the cluster runs."""
        return len(self.taskmanager_ports)


def flink_home() -> Path:
    """The Flink distribution in the installed `apache-flink` wheel (bin/, lib/, conf/), found without importing it."""
    spec = importlib.util.find_spec("pyflink")
    if spec is None or not spec.submodule_search_locations:
        raise InfraError("PyFlink (apache-flink) is not installed in this Python; `make install` installs it.")
    home = Path(next(iter(spec.submodule_search_locations)))
    if not (home / "bin" / "jobmanager.sh").is_file():
        raise InfraError(f"The PyFlink install at '{home}' has no bin/jobmanager.sh; reinstall apache-flink.")
    return home


def _root(settings: Settings) -> Path:
    return (settings.home / "cluster" / "flink").resolve()


def taskmanager_name(index: int) -> str:
    """`taskmanager-<index>` (1-based): the process's name, pid file and Flink resource id."""
    return f"taskmanager-{index}"


def rest_url(layout: FlinkLayout) -> str:
    """The JobManager's REST address, what `abflow pipeline run --cluster` takes."""
    return f"http://127.0.0.1:{layout.rest_port}"


def load_layout(settings: Settings) -> FlinkLayout | None:
    """The layout recorded by the last `up`, or None before the first one."""
    path = _root(settings) / "cluster.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        raw["taskmanager_ports"] = tuple(raw["taskmanager_ports"])
        return FlinkLayout(**raw)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _save_layout(settings: Settings, layout: FlinkLayout) -> None:
    root = _root(settings)
    root.mkdir(parents=True, exist_ok=True)
    (root / "cluster.json").write_text(json.dumps(asdict(layout), indent=2), encoding="utf-8")


def _plan_layout(settings: Settings, taskmanagers: int, slots: int) -> FlinkLayout:
    """The saved layout resized to `taskmanagers` (new ones get free ports); a new layout on first use."""
    if taskmanagers < 1 or slots < 1:
        raise ConfigError(f"a cluster needs >= 1 TaskManager with >= 1 slot, got {taskmanagers} x {slots}")
    saved = load_layout(settings)
    if saved is None:
        return FlinkLayout(
            rest_port=free_port(),
            rpc_port=free_port(),
            taskmanager_ports=tuple(free_port() for _ in range(taskmanagers)),
            slots=slots,
        )
    if saved.slots != slots and any(_tm_pid(settings, i) for i in range(1, saved.taskmanagers + 1)):
        raise ConfigError(
            f"the running TaskManagers have {saved.slots} slots each, not {slots}; "
            "run `abflow cluster down` first to change the slots"
        )
    ports = saved.taskmanager_ports[:taskmanagers]
    ports += tuple(free_port() for _ in range(taskmanagers - len(ports)))
    return replace(saved, taskmanager_ports=ports, slots=slots)


def _config_yaml(settings: Settings, layout: FlinkLayout) -> str:
    """Flink's config.yaml (flat keys): loopback only, small memory, retained checkpoints, a restart strategy."""
    checkpoints = checkpoint_root(settings.home, _JOB_NAME).resolve().as_uri()
    savepoints = savepoint_root(settings.home, _JOB_NAME).resolve().as_uri()
    values: dict[str, str] = {
        "jobmanager.rpc.address": "127.0.0.1",
        "jobmanager.rpc.port": str(layout.rpc_port),
        "jobmanager.bind-host": "127.0.0.1",
        "jobmanager.memory.process.size": layout.jobmanager_memory,
        "jobmanager.execution.failover-strategy": "region",
        "taskmanager.bind-host": "127.0.0.1",
        "taskmanager.host": "127.0.0.1",
        "taskmanager.numberOfTaskSlots": str(layout.slots),
        "taskmanager.memory.process.size": layout.taskmanager_memory,
        "taskmanager.memory.managed.fraction": str(layout.managed_fraction),
        "rest.address": "127.0.0.1",
        "rest.bind-address": "127.0.0.1",
        "rest.port": str(layout.rest_port),
        "parallelism.default": "1",
        # A crashed TaskManager or JobManager is noticed within seconds, not the default 50 s.
        "heartbeat.interval": str(layout.heartbeat_interval_ms),
        "heartbeat.timeout": str(layout.heartbeat_timeout_ms),
        "state.backend.type": "hashmap",
        # CPython is loaded once per TaskManager, by the parent class loader (see `_write_lib`).
        "classloader.parent-first-patterns.additional": "pemja.",
        "execution.checkpointing.dir": checkpoints,
        "execution.checkpointing.savepoint-dir": savepoints,
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.num-retained": "3",
        "restart-strategy.type": "exponential-delay",
        "restart-strategy.exponential-delay.initial-backoff": "1 s",
        "restart-strategy.exponential-delay.max-backoff": "30 s",
        "restart-strategy.exponential-delay.backoff-multiplier": "2.0",
        "restart-strategy.exponential-delay.jitter-factor": "0.1",
        # Flink's own JVM flags (--add-opens for Java 17), for the daemons and the `flink` client alike.
        "env.java.opts.all": _distribution_java_opts(),
        **layout.extra,
    }
    header = "# Written by `abflow cluster up` on every start; edits are overwritten.\n"
    return header + "".join(f"{key}: {json.dumps(value)}\n" for key, value in values.items())


def _distribution_java_opts() -> str:
    """`env.java.opts.all` of the wheel's own config.yaml: the module opens Flink needs on Java 17."""
    text = (flink_home() / "conf" / "config.yaml").read_text(encoding="utf-8")
    match = re.search(r"^env:\n(?:[ \t].*\n)*?[ \t]+all:[ \t]*(.+)$", text, flags=re.MULTILINE)
    if match is None:
        raise InfraError(f"no env.java.opts.all in {flink_home() / 'conf' / 'config.yaml'}; reinstall apache-flink")
    return match.group(1).strip()


def _write_conf(settings: Settings, layout: FlinkLayout) -> Path:
    conf = _root(settings) / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    for source in (flink_home() / "conf").iterdir():
        if source.is_file() and source.name.startswith(("log4j", "logback")):
            shutil.copyfile(source, conf / source.name)
    (conf / "config.yaml").write_text(_config_yaml(settings, layout), encoding="utf-8")
    return conf


def client_conf_dir(settings: Settings) -> Path:
    """A conf dir for the `flink` client that submits to any cluster: Flink's JVM flags and log4j files only.

    The cluster's own address comes from `flink run -m`, so the same client conf serves a remote cluster too.
    """
    conf = settings.home.resolve() / "pipeline" / "flink-client-conf"
    conf.mkdir(parents=True, exist_ok=True)
    for source in (flink_home() / "conf").iterdir():
        if source.is_file() and source.name.startswith(("log4j", "logback")):
            shutil.copyfile(source, conf / source.name)
    opts = json.dumps(_distribution_java_opts())
    (conf / "config.yaml").write_text(f"# Written by `abflow pipeline run --cluster`.\nenv.java.opts.all: {opts}\n")
    return conf


def _write_lib(settings: Settings) -> Path:
    """The daemons' lib/: the wheel's jars plus its `opt/flink-python` jar, linked, not copied.

    Python operators in thread mode load CPython into the JVM once, through the classes of `flink-python`; on a
    session cluster those must come from the parent class loader (with `pemja.` parent-first), or the second job on
    a TaskManager fails because the library is already loaded by the first job's class loader.
    """
    lib = _root(settings) / "lib"
    lib.mkdir(parents=True, exist_ok=True)
    home = flink_home()
    wanted = [*sorted((home / "lib").glob("*.jar")), *sorted((home / "opt").glob("flink-python-*.jar"))]
    for link in lib.iterdir():  # links to another install of the wheel, or to jars it no longer has
        if link.is_symlink() and link.resolve() not in wanted:
            link.unlink()
    for jar in wanted:
        if not (lib / jar.name).exists():
            (lib / jar.name).symlink_to(jar)
    return lib


def _env(settings: Settings, ident: str) -> dict[str, str]:
    root = _root(settings)
    java = Path(find_java("the local cluster")).resolve()
    return {
        **os.environ,
        "JAVA_HOME": os.environ.get("JAVA_HOME") or str(java.parent.parent),
        "FLINK_LIB_DIR": str(root / "lib"),
        "FLINK_CONF_DIR": str(root / "conf"),
        "FLINK_LOG_DIR": str(root / "log"),
        "FLINK_PID_DIR": str(root / "pid"),
        "FLINK_IDENT_STRING": ident,
    }


def _marker(settings: Settings, name: str) -> str:
    """A dynamic property unique to one process of one cluster; it is on the command line from bash to the JVM."""
    return f"abflow.process={_root(settings) / name}"


def _pid(settings: Settings, name: str) -> int | None:
    return running_pid(_root(settings) / "pid" / f"{name}.pid", _marker(settings, name))


def _jm_pid(settings: Settings) -> int | None:
    return _pid(settings, JOBMANAGER)


def _tm_pid(settings: Settings, index: int) -> int | None:
    return _pid(settings, taskmanager_name(index))


def start(settings: Settings, *, taskmanagers: int = 2, slots: int = 2, timeout_s: float = 120.0) -> FlinkLayout:
    """Start whatever of the cluster is not running (idempotent) and wait until every TaskManager has registered.

    A process that died (a `kill -9` in a test) is simply started again on its old ports; TaskManagers beyond
    `taskmanagers` are stopped.
    """
    layout = _plan_layout(settings, taskmanagers, slots)
    saved = load_layout(settings)
    _save_layout(settings, layout)
    _write_conf(settings, layout)
    _write_lib(settings)
    if saved is not None:
        for index in range(layout.taskmanagers + 1, saved.taskmanagers + 1):
            _stop_taskmanager(settings, index)
    started: dict[str, int] = {}
    try:
        if _jm_pid(settings) is None:
            _ensure_free(layout.rest_port, "the JobManager's REST API")
            _ensure_free(layout.rpc_port, "the JobManager's RPC")
            started[JOBMANAGER] = _spawn(settings, JOBMANAGER, "jobmanager.sh", [])
            logger.info("jobmanager starting rest_port=%s rpc_port=%s", layout.rest_port, layout.rpc_port)
        for index, port in enumerate(layout.taskmanager_ports, start=1):
            if _tm_pid(settings, index) is not None:
                continue
            name = taskmanager_name(index)
            _ensure_free(port, f"the RPC of {name}")
            options = ["-D", f"taskmanager.resource-id={name}", "-D", f"taskmanager.rpc.port={port}"]
            started[name] = _spawn(settings, name, "taskmanager.sh", options)
            logger.info("taskmanager starting name=%s rpc_port=%s", name, port)
        _wait_registered(settings, layout, {**pids(settings), **started}, timeout_s)
    except InfraError:
        terminate_all(started, timeout_s=10.0)  # never leave half a cluster behind a failed `up`
        raise
    return layout


def _spawn(settings: Settings, name: str, script: str, options: list[str]) -> int:
    root = _root(settings)
    command = ["bash", str(flink_home() / "bin" / script), "start-foreground", "-D", _marker(settings, name), *options]
    return spawn(
        command,
        pid_file=root / "pid" / f"{name}.pid",
        log=root / "log" / f"{name}.out",
        env=_env(settings, name),
        cwd=root,
    )


def _ensure_free(port: int, what: str) -> None:
    if port_open(port):
        raise InfraError(
            f"port {port} for {what} is taken by another process; stop it, or delete cluster.json under "
            "<home>/cluster/flink to choose new ports"
        )


def _wait_registered(settings: Settings, layout: FlinkLayout, watched: dict[str, int], timeout_s: float) -> None:
    """Until the REST API answers and lists every TaskManager of the layout; fail fast if a JVM exits."""
    from flink_pipeline.rest import FlinkRest

    rest = FlinkRest(rest_url(layout), timeout_s=2.0)
    wanted = {taskmanager_name(i) for i in range(1, layout.taskmanagers + 1)}
    deadline = time.monotonic() + timeout_s
    registered: set[str] = set()
    while time.monotonic() < deadline:
        dead = [name for name, pid in watched.items() if not pid_alive(pid)]
        if dead:
            raise InfraError(f"Flink {', '.join(dead)} exited during start-up; see {_root(settings) / 'log'}")
        try:
            registered = {str(tm.get("id")) for tm in rest.taskmanagers()}
        except InfraError:
            registered = set()
        if wanted <= registered:
            logger.info("flink cluster ready rest=%s taskmanagers=%s", rest_url(layout), len(wanted))
            return
        time.sleep(0.5)
    missing = ", ".join(sorted(wanted - registered))
    raise InfraError(
        f"the Flink cluster at {rest_url(layout)} did not register {missing} within {timeout_s:.0f} s; "
        f"see {_root(settings) / 'log'}"
    )


def _stop_taskmanager(settings: Settings, index: int, timeout_s: float = 30.0) -> bool:
    pid = _tm_pid(settings, index)
    if pid is None:
        return False
    terminate(pid, name=taskmanager_name(index), timeout_s=timeout_s)
    return True


def stop(settings: Settings, *, timeout_s: float = 60.0) -> list[str]:
    """Stop every process of the cluster (TaskManagers first, then the JobManager); return the names stopped.

    Data (checkpoints, savepoints, logs, the layout) stays; the next `start` reuses the same ports.
    """
    layout = load_layout(settings)
    if layout is None:
        return []
    stopped = [taskmanager_name(i) for i in range(1, layout.taskmanagers + 1) if _stop_taskmanager(settings, i)]
    pid = _jm_pid(settings)
    if pid is not None:
        terminate(pid, name=JOBMANAGER, timeout_s=timeout_s)
        stopped.append(JOBMANAGER)
    return stopped


def pids(settings: Settings) -> dict[str, int]:
    """The pid of every running process of the cluster, by name (what a test `kill -9`s)."""
    layout = load_layout(settings)
    if layout is None:
        return {}
    found = {JOBMANAGER: _jm_pid(settings)}
    found.update({taskmanager_name(i): _tm_pid(settings, i) for i in range(1, layout.taskmanagers + 1)})
    return {name: pid for name, pid in found.items() if pid is not None}


def status(settings: Settings) -> list[ProcessInfo]:
    """Every process of the layout: pid, port and health as the JobManager's REST API reports it."""
    from flink_pipeline.rest import FlinkRest

    layout = load_layout(settings)
    if layout is None:
        return []
    rest = FlinkRest(rest_url(layout), timeout_s=3.0)
    jm_pid = _jm_pid(settings)
    overview: dict[str, object] = {}
    registered: dict[str, dict[str, object]] = {}
    if jm_pid is not None:
        try:
            overview = rest.overview()
            registered = {str(tm.get("id")): tm for tm in rest.taskmanagers()}
        except InfraError:
            overview = {}
    jm_detail = (
        f"REST {rest_url(layout)}, {overview.get('taskmanagers', 0)} TaskManagers, "
        f"slots {overview.get('slots-available', 0)}/{overview.get('slots-total', 0)} free, "
        f"{overview.get('jobs-running', 0)} jobs running"
        if overview
        else ("REST not answering" if jm_pid is not None else "")
    )
    infos = [ProcessInfo(JOBMANAGER, jm_pid, layout.rest_port, bool(overview), jm_detail)]
    for index, port in enumerate(layout.taskmanager_ports, start=1):
        name = taskmanager_name(index)
        pid = _tm_pid(settings, index)
        tm = registered.get(name)
        detail = f"registered, {tm.get('slotsNumber')} slots" if tm else ("not registered" if pid else "")
        infos.append(ProcessInfo(name, pid, port, pid is not None and tm is not None, detail))
    return infos
