"""A single-node Apache Kafka broker (KRaft: broker and controller in one JVM) on loopback, run from Maven jars.

Why a real broker and not a mock: the Flink job's transactional sink, read_committed consumers and log compaction of
the `experiments` topic are exactly what needs testing, and only a real broker does them.

The broker's whole state lives in one data directory (`Settings.kafka_data_dir` unless told otherwise):
    server.properties   written on every start (the client port may change between starts)
    data/               log.dirs: KRaft metadata and topic partitions, formatted on first start
    logs/server.log     the broker's own log (log4j2, see log4j2.xml beside this module)
    console.log         the JVM's stdout/stderr (startup failures land here)
    broker.pid          the JVM's pid, and broker.json with its pid, host and port
Where it listens comes from the configured bootstrap servers (`listen_address`), the one address every other command
uses too; it must be a single loopback address (127.0.0.1, localhost or ::1). `start` is idempotent (a running broker
on the same port is reused), `stop` sends SIGTERM and waits for a clean shutdown. Several brokers may run at once from
different data directories (the test fixture uses its own).
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from experiment.core.errors import ConfigError, InfraError
from experiment.kafka import jars
from experiment.runtime.config import DEFAULT_KAFKA_PORT, KafkaSettings, Settings, parse_bootstrap_servers
from experiment.runtime.processes import find_java, free_port, pid_alive

__all__ = [
    "DEFAULT_PORT",
    "TRANSACTION_MAX_TIMEOUT_MS",
    "BrokerStatus",
    "listen_address",
    "metadata_answered",
    "start",
    "status",
    "stop",
    "wait_ready",
]

logger = logging.getLogger(__name__)

DEFAULT_PORT = DEFAULT_KAFKA_PORT
DEFAULT_HOST = "127.0.0.1"
# Flink's exactly-once Kafka sink sets transaction.timeout.ms (ours: 15 min); the broker refuses any producer whose
# timeout exceeds transaction.max.timeout.ms, so the broker allows up to one hour.
TRANSACTION_MAX_TIMEOUT_MS = 3_600_000
_LOG4J_CONFIG = Path(__file__).with_name("log4j2.xml")
_JVM_OPTS = ["-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true"]


@dataclass(frozen=True)
class BrokerStatus:
    """What is known about the local broker of one data directory."""

    data_dir: Path
    running: bool
    pid: int | None = None
    port: int | None = None
    ready: bool = False
    host: str = DEFAULT_HOST

    @property
    def bootstrap_servers(self) -> str | None:
        """`127.0.0.1:<port>` (or `[::1]:<port>`) when a broker is running, else None."""
        return _address(self.host, self.port) if self.running and self.port else None

    def describe(self) -> str:
        """One human line for `abflow kafka status`."""
        if not self.running:
            return f"kafka: stopped (data dir {self.data_dir})"
        state = "ready" if self.ready else "not answering metadata requests"
        return f"kafka: running pid={self.pid} bootstrap={self.bootstrap_servers} {state} (data dir {self.data_dir})"


def listen_address(bootstrap_servers: str, port: int | None = None) -> tuple[str, int]:
    """Where the local broker listens, as (host, port): the configured bootstrap address, or `port` when given.

    Without `port`, a bootstrap that is not exactly one loopback address raises `ConfigError`: a broker started
    anywhere else would never be reached by the commands that read that same setting. With `port`, the host is the
    configured loopback host (so `::1` stays IPv6), else 127.0.0.1.
    """
    addresses = parse_bootstrap_servers(bootstrap_servers)
    local = _loopback_host(addresses[0][0]) if len(addresses) == 1 else None
    if port is not None:
        return local or DEFAULT_HOST, port
    if len(addresses) > 1:
        raise ConfigError(
            f"The configured Kafka bootstrap servers '{bootstrap_servers}' (ABFLOW_KAFKA_BOOTSTRAP or abflow.toml) "
            "list several servers, but the local broker is one: configure a single 127.0.0.1:<port>, or pass --port."
        )
    if local is None:
        raise ConfigError(
            f"The configured Kafka bootstrap servers '{bootstrap_servers}' (ABFLOW_KAFKA_BOOTSTRAP or abflow.toml) are "
            "not a loopback address (127.0.0.1, localhost or ::1), so `kafka up` has nothing to start: use that "
            "cluster as is, or pass --port to start a local broker anyway."
        )
    return local, addresses[0][1]


def _loopback_host(host: str) -> str | None:
    """The address the broker binds for a configured loopback host (localhost → 127.0.0.1), or None if not loopback."""
    if host.lower() == "localhost":
        return DEFAULT_HOST
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if address == ipaddress.ip_address("127.0.0.1"):
        return DEFAULT_HOST
    return "::1" if address == ipaddress.ip_address("::1") else None


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def status(data_dir: Path, *, probe: bool = True) -> BrokerStatus:
    """The state of the broker whose data lives in `data_dir`; `probe` also asks it for metadata."""
    data_dir = data_dir.resolve()
    state = _read_state(data_dir)
    if state is None or not _is_our_broker(state.pid, data_dir):
        return BrokerStatus(data_dir=data_dir, running=False)
    address = _address(state.host, state.port)
    ready = probe and metadata_answered(KafkaSettings(bootstrap_servers=address), timeout_s=5.0)
    return BrokerStatus(data_dir=data_dir, running=True, pid=state.pid, port=state.port, ready=ready, host=state.host)


def start(
    settings: Settings,
    *,
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    data_dir: Path | None = None,
    timeout_s: float = 90.0,
    die_with_parent: bool = False,
) -> BrokerStatus:
    """Start the broker (formatting its storage on first use) and return once it answers a metadata request.

    `host` is 127.0.0.1 or ::1 (see `listen_address`). A broker already running from the same data directory on the same
    address is simply reported; a different address, or a port that another process holds, raises `InfraError` with the
    fix. `die_with_parent` (for test sessions) asks Linux to SIGTERM the broker if the starting process dies without
    stopping it (needs util-linux `setpriv`).
    """
    data_dir = (data_dir or settings.kafka_data_dir).resolve()
    current = status(data_dir, probe=False)
    if current.running:
        if (current.host, current.port) != (host, port):
            raise InfraError(
                f"A Kafka broker is already running from '{data_dir}' on port {current.port} (pid {current.pid}, "
                f"{current.bootstrap_servers}); run `abflow kafka down` before starting it on {_address(host, port)}."
            )
        logger.info("broker already running pid=%s port=%s", current.pid, port)
        wait_ready(current.pid, data_dir, port, timeout_s, host=host)
        return status(data_dir)
    _clear_state(data_dir)
    _ensure_port_free(host, port)

    if not jars.jars_installed(settings):
        jars.install_jars(settings)
    java = find_java("the Kafka broker")
    classpath = jars.kafka_classpath(settings)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "logs").mkdir(exist_ok=True)
    properties = data_dir / "server.properties"
    properties.write_text(_server_properties(data_dir, host, port, free_port()), encoding="utf-8")
    jvm = [java, *_JVM_OPTS, f"-Dlog4j2.configurationFile={_LOG4J_CONFIG}", f"-Dkafka.logs.dir={data_dir / 'logs'}"]

    if not (data_dir / "data" / "meta.properties").is_file():
        _format_storage(jvm, classpath, properties)

    console = data_dir / "console.log"
    with console.open("ab") as out:
        setpriv = shutil.which("setpriv") if die_with_parent else None
        guard = [setpriv, "--pdeathsig", "TERM"] if setpriv else []
        process = subprocess.Popen(
            [*guard, *jvm, "-cp", classpath, "kafka.Kafka", str(properties)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=data_dir,
            start_new_session=True,  # survives the CLI that started it; Ctrl-C in a test run does not kill it mid-write
        )
    _write_state(data_dir, process.pid, host, port)
    logger.info("broker starting pid=%s host=%s port=%s data_dir=%s", process.pid, host, port, data_dir)
    try:
        wait_ready(process.pid, data_dir, port, timeout_s, host=host)
    except InfraError:
        stop(data_dir, timeout_s=10.0)
        raise
    return BrokerStatus(data_dir=data_dir, running=True, pid=process.pid, port=port, ready=True, host=host)


def stop(data_dir: Path, *, timeout_s: float = 60.0) -> bool:
    """Stop the broker of `data_dir`: SIGTERM, then wait for its controlled shutdown. False if none was running.

    Only a process whose command line names this data directory is signalled, so a stale pid file whose pid was
    reused by another program is never acted on.
    """
    data_dir = data_dir.resolve()
    state = _read_state(data_dir)
    if state is None or not _is_our_broker(state.pid, data_dir):
        _clear_state(data_dir)
        return False
    pid = state.pid
    logger.info("stopping broker pid=%s data_dir=%s", pid, data_dir)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if pid_alive(pid):
        logger.warning("broker ignored SIGTERM for %ss, killing pid=%s", timeout_s, pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while pid_alive(pid):
            time.sleep(0.1)
    _clear_state(data_dir)
    return True


def metadata_answered(kafka: KafkaSettings, *, timeout_s: float = 5.0) -> bool:
    """Whether the cluster answers a metadata request (the readiness criterion) within about `timeout_s`."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaConfigurationError, KafkaError

    timeout_ms = int(timeout_s * 1000)
    try:
        admin = KafkaAdminClient(
            **{
                **kafka.client_config(),
                "request_timeout_ms": timeout_ms,
                "bootstrap_timeout_ms": timeout_ms,
                "client_id": "abflow-readiness",
            }
        )
    except KafkaConfigurationError:
        raise  # a programming error, not "not ready yet"
    except (KafkaError, OSError):
        return False
    try:
        admin.describe_cluster()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def wait_ready(pid: int | None, data_dir: Path, port: int, timeout_s: float, *, host: str = DEFAULT_HOST) -> None:
    """Block until the broker on `port` answers a metadata request; fail fast with its log tail if the JVM dies."""
    kafka = KafkaSettings(bootstrap_servers=_address(host, port))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pid is not None and not pid_alive(pid):
            raise InfraError(f"The Kafka broker exited during startup. Last lines: {_log_tail(data_dir)}")
        if port_open(host, port) and metadata_answered(kafka, timeout_s=3.0):
            logger.info("broker ready port=%s", port)
            return
        time.sleep(0.3)
    raise InfraError(
        f"The Kafka broker on {_address(host, port)} did not answer a metadata request within {timeout_s:.0f}s. "
        f"Last lines: {_log_tail(data_dir)}"
    )


def _server_properties(data_dir: Path, host: str, port: int, controller_port: int) -> str:
    """Combined broker+controller settings tuned for one node: replication 1, no rebalance delay, long transactions."""
    values = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://{_address(host, port)},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{_address(host, port)}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir / "data"),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "transaction.max.timeout.ms": str(TRANSACTION_MAX_TIMEOUT_MS),
        "log.retention.check.interval.ms": "60000",
        "log.cleaner.backoff.ms": "1000",
        "num.network.threads": "2",
        "num.io.threads": "4",
    }
    header = "# Written by abflow on every `kafka up`; edits are overwritten.\n"
    return header + "".join(f"{key}={value}\n" for key, value in values.items())


def _format_storage(jvm: list[str], classpath: str, properties: Path) -> None:
    """Format KRaft storage once, with a fresh cluster id (Kafka's base64url form of a random UUID)."""
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    while cluster_id.startswith("-"):  # Kafka never hands out ids that look like command-line flags
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    command = [*jvm, "-cp", classpath, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(properties)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()[-10:]
        raise InfraError(f"Formatting Kafka storage failed (exit {result.returncode}): " + " | ".join(output))
    logger.info("formatted kafka storage cluster_id=%s", cluster_id)


def _ensure_port_free(host: str, port: int) -> None:
    # The JVM binds its listeners with SO_REUSEADDR, so connections of a just-stopped broker lingering in TIME_WAIT
    # do not block a restart; the check must use the same option or it would refuse a port Kafka can take.
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise InfraError(
                f"Port {port} on {host} is already in use by another process; "
                f"stop it, or choose another port (ABFLOW_KAFKA_BOOTSTRAP, or --port)."
            ) from exc


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on `host:port` (a quick check before a Kafka client's long wait)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _command_line(pid: int) -> str:
    proc = Path(f"/proc/{pid}/cmdline")
    if proc.is_file():
        with contextlib.suppress(OSError):
            return proc.read_bytes().replace(b"\0", b" ").decode(errors="replace")
    result = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False)
    return result.stdout


def _is_our_broker(pid: int, data_dir: Path) -> bool:
    if not pid_alive(pid):
        return False
    command = _command_line(pid)
    return "kafka.Kafka" in command and str(data_dir / "server.properties") in command


class _State(NamedTuple):
    pid: int
    host: str
    port: int


def _read_state(data_dir: Path) -> _State | None:
    path = data_dir / "broker.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        # Brokers started before the host was recorded listen on 127.0.0.1.
        return _State(int(state["pid"]), str(state.get("host", DEFAULT_HOST)), int(state["port"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write_state(data_dir: Path, pid: int, host: str, port: int) -> None:
    (data_dir / "broker.pid").write_text(f"{pid}\n", encoding="utf-8")
    (data_dir / "broker.json").write_text(json.dumps({"pid": pid, "host": host, "port": port}), encoding="utf-8")


def _clear_state(data_dir: Path) -> None:
    for name in ("broker.pid", "broker.json"):
        with contextlib.suppress(FileNotFoundError):
            (data_dir / name).unlink()


def _log_tail(data_dir: Path, lines: int = 8) -> str:
    texts = []
    for name in ("console.log", "logs/server.log"):
        path = data_dir / name
        if path.is_file():
            content = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            errors = [line for line in content if "ERROR" in line or "Exception" in line]
            texts.extend((errors or content)[-lines:])
    return " | ".join(texts[-lines:]) or f"(no log in {data_dir})"
