"""A 3-broker KRaft Kafka cluster on loopback, from the same Maven jars as the single local broker.

Why three nodes: with replication factor 3 and `min.insync.replicas=2`, any one broker can die (`kill -9`) while the
job's transactional sink and the simulator keep writing with acks=all, and no acknowledged record is lost; unclean
leader election is off, so a stale replica never becomes leader. Each node is broker and controller at once (a
three-voter quorum survives one loss). The transaction state topic and the consumer offsets topic are replicated
the same way, so the job's exactly-once commits survive a broker too.

Everything lives under `<home>/cluster/kafka/`:
    cluster.json           cluster id and each node's client and controller ports (kept across `down`/`up`: the
                           Flink job's clients and `ABFLOW_KAFKA_BOOTSTRAP` keep working after a restart)
    broker-<n>/            one node: server.properties, data/ (log.dirs), logs/server.log, console.log, broker.pid
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from experiment.cluster.procs import (
    ProcessInfo,
    port_open,
    running_pid,
    spawn,
    terminate_all,
)
from experiment.core.errors import ConfigError, InfraError
from experiment.kafka import jars
from experiment.kafka.broker import TRANSACTION_MAX_TIMEOUT_MS, metadata_answered
from experiment.runtime.config import KafkaSettings, Settings
from experiment.runtime.processes import find_java, free_port, pid_alive

__all__ = ["KafkaNode", "bootstrap_servers", "broker_name", "load_nodes", "pids", "start", "status", "stop"]

logger = logging.getLogger(__name__)

_LOG4J_CONFIG = Path(jars.__file__).with_name("log4j2.xml")
_JVM_OPTS = ["-Xms128m", "-Xmx512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true"]


@dataclass(frozen=True)
class KafkaNode:
    """One combined broker+controller: its node id and the ports it listens on."""

    node_id: int
    port: int
    controller_port: int


def broker_name(node_id: int) -> str:
    """`broker-<n>`: the node's folder, pid file and name in `cluster status`."""
    return f"broker-{node_id}"


def _root(settings: Settings) -> Path:
    return (settings.home / "cluster" / "kafka").resolve()


def _node_dir(settings: Settings, node_id: int) -> Path:
    return _root(settings) / broker_name(node_id)


def _load(settings: Settings) -> tuple[str, tuple[KafkaNode, ...]] | None:
    try:
        raw = json.loads((_root(settings) / "cluster.json").read_text(encoding="utf-8"))
        return str(raw["cluster_id"]), tuple(KafkaNode(**node) for node in raw["nodes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_nodes(settings: Settings) -> tuple[KafkaNode, ...]:
    """The nodes recorded by the first `up` (empty before it)."""
    loaded = _load(settings)
    return () if loaded is None else loaded[1]


def bootstrap_servers(nodes: tuple[KafkaNode, ...]) -> str:
    """`127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`: what `ABFLOW_KAFKA_BOOTSTRAP` must say to use the cluster."""
    return ",".join(f"127.0.0.1:{node.port}" for node in nodes)


def _new_cluster_id() -> str:
    """Kafka's base64url form of a random UUID, never starting with '-' (it would read as a flag)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _properties(settings: Settings, node: KafkaNode, nodes: tuple[KafkaNode, ...]) -> str:
    """One node's server.properties: replicated 3 ways, min ISR 2, no unclean election, long transactions."""
    replicas = str(len(nodes))
    min_isr = str(min(2, len(nodes)))
    values = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in nodes),
        "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(_node_dir(settings, node.node_id) / "data"),
        "num.partitions": "1",
        "default.replication.factor": replicas,
        "min.insync.replicas": min_isr,
        "unclean.leader.election.enable": "false",
        "offsets.topic.replication.factor": replicas,
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_isr,
        "group.initial.rebalance.delay.ms": "0",
        "transaction.max.timeout.ms": str(TRANSACTION_MAX_TIMEOUT_MS),
        "log.retention.check.interval.ms": "60000",
        "log.cleaner.backoff.ms": "1000",
        "num.network.threads": "2",
        "num.io.threads": "2",
        "num.replica.fetchers": "1",
    }
    header = "# Written by `abflow cluster up` on every start; edits are overwritten.\n"
    return header + "".join(f"{key}={value}\n" for key, value in values.items())


def _jvm(node_dir: Path) -> list[str]:
    return [
        find_java("the local cluster"),
        *_JVM_OPTS,
        f"-Dlog4j2.configurationFile={_LOG4J_CONFIG}",
        f"-Dkafka.logs.dir={node_dir / 'logs'}",
    ]


def _pid(settings: Settings, node_id: int) -> int | None:
    node_dir = _node_dir(settings, node_id)
    return running_pid(node_dir / "broker.pid", "kafka.Kafka", str(node_dir / "server.properties"))


def _format(settings: Settings, node_dir: Path, classpath: str, cluster_id: str) -> None:
    """Format one node's KRaft storage with the cluster's id (once; the id ties the three nodes together)."""
    command = [
        *_jvm(node_dir),
        "-cp",
        classpath,
        "kafka.tools.StorageTool",
        "format",
        "-t",
        cluster_id,
        "-c",
        str(node_dir / "server.properties"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()[-10:]
        raise InfraError(
            f"Formatting Kafka storage in '{node_dir}' failed (exit {result.returncode}): " + " | ".join(output)
        )


def start(settings: Settings, *, brokers: int = 3, timeout_s: float = 120.0) -> tuple[KafkaNode, ...]:
    """Start every node that is not running (idempotent) and wait until the cluster reports all of them.

    The number of nodes is fixed by the first `up` (the quorum's voters are written into their storage).
    """
    if brokers < 1:
        raise ConfigError(f"a Kafka cluster needs >= 1 broker, got {brokers}")
    loaded = _load(settings)
    if loaded is None:
        nodes = tuple(KafkaNode(i, free_port(), free_port()) for i in range(1, brokers + 1))
        cluster_id = _new_cluster_id()
        root = _root(settings)
        root.mkdir(parents=True, exist_ok=True)
        record = {"cluster_id": cluster_id, "nodes": [asdict(node) for node in nodes]}
        (root / "cluster.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    else:
        cluster_id, nodes = loaded
        if len(nodes) != brokers:
            raise ConfigError(
                f"the Kafka cluster under '{_root(settings)}' has {len(nodes)} brokers, not {brokers}; its quorum "
                "is fixed when it is first formatted (delete that folder to start over with another size)"
            )
    if not jars.jars_installed(settings):
        jars.install_jars(settings)
    classpath = jars.kafka_classpath(settings)
    started: dict[str, int] = {}
    try:
        for node in nodes:
            if _pid(settings, node.node_id) is not None:
                continue
            started[broker_name(node.node_id)] = _start_node(settings, node, nodes, classpath, cluster_id)
        _wait_ready(settings, nodes, {**pids(settings), **started}, timeout_s)
    except InfraError:
        terminate_all(started, timeout_s=10.0)
        raise
    return nodes


def _start_node(
    settings: Settings, node: KafkaNode, nodes: tuple[KafkaNode, ...], classpath: str, cluster_id: str
) -> int:
    node_dir = _node_dir(settings, node.node_id)
    (node_dir / "logs").mkdir(parents=True, exist_ok=True)
    for port in (node.port, node.controller_port):
        if port_open(port):
            raise InfraError(
                f"port {port} of {broker_name(node.node_id)} is taken by another process; stop it, or delete "
                f"'{_root(settings)}' to start a new cluster on new ports"
            )
    properties = node_dir / "server.properties"
    properties.write_text(_properties(settings, node, nodes), encoding="utf-8")
    if not (node_dir / "data" / "meta.properties").is_file():
        _format(settings, node_dir, classpath, cluster_id)
    pid = spawn(
        [*_jvm(node_dir), "-cp", classpath, "kafka.Kafka", str(properties)],
        pid_file=node_dir / "broker.pid",
        log=node_dir / "console.log",
        env=dict(os.environ),
        cwd=node_dir,
    )
    logger.info("broker starting name=%s pid=%s port=%s", broker_name(node.node_id), pid, node.port)
    return pid


def _wait_ready(settings: Settings, nodes: tuple[KafkaNode, ...], watched: dict[str, int], timeout_s: float) -> None:
    """Until every node answers a metadata request and the cluster lists all of them; fail fast if a JVM exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        dead = [name for name, pid in watched.items() if not pid_alive(pid)]
        if dead:
            raise InfraError(f"Kafka {', '.join(dead)} exited during start-up; see {_root(settings)}/broker-*/logs")
        if _cluster_size(bootstrap_servers(nodes)) == len(nodes):
            logger.info("kafka cluster ready bootstrap=%s", bootstrap_servers(nodes))
            return
        time.sleep(0.5)
    raise InfraError(
        f"the Kafka cluster at {bootstrap_servers(nodes)} did not report {len(nodes)} brokers within "
        f"{timeout_s:.0f} s; see {_root(settings)}/broker-*/logs/server.log"
    )


def _cluster_size(bootstrap: str) -> int:
    """How many brokers the cluster's metadata lists (0 when nothing answers)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), request_timeout_ms=3000, client_id="abflow-cl")
    except (KafkaError, OSError):
        return 0
    try:
        return len(admin.describe_cluster().get("brokers", []))
    except (KafkaError, OSError):
        return 0
    finally:
        admin.close()


def stop(settings: Settings, *, timeout_s: float = 60.0) -> list[str]:
    """Stop every node (SIGTERM, controlled shutdown); data stays. Return the names stopped."""
    running = pids(settings)
    terminate_all(running, timeout_s=timeout_s)
    return list(running)


def pids(settings: Settings) -> dict[str, int]:
    """The pid of every running node, by name (what a test `kill -9`s)."""
    found = {broker_name(n.node_id): _pid(settings, n.node_id) for n in load_nodes(settings)}
    return {name: pid for name, pid in found.items() if pid is not None}


def status(settings: Settings) -> list[ProcessInfo]:
    """Every node: pid, client port, and whether it answers a metadata request on its own address."""
    infos = []
    for node in load_nodes(settings):
        pid = _pid(settings, node.node_id)
        healthy = (
            pid is not None
            and port_open(node.port)
            and metadata_answered(KafkaSettings(bootstrap_servers=f"127.0.0.1:{node.port}"), timeout_s=3.0)
        )
        detail = f"controller port {node.controller_port}, data {_node_dir(settings, node.node_id) / 'data'}"
        infos.append(ProcessInfo(broker_name(node.node_id), pid, node.port, healthy, detail))
    return infos
