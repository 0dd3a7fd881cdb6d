"""Start, find and stop the cluster's JVMs by pid file, never by name.

Each process runs in its own session (its own process group), so a test can `kill -9` exactly one of them, and its
pid file sits beside its data. A pid is only acted on when the process's command line still holds a marker that is
unique to that process (its config path or resource id), so a stale pid file whose pid was reused is never signalled.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from experiment.runtime.processes import pid_alive

__all__ = [
    "ProcessInfo",
    "command_line",
    "port_open",
    "running_pid",
    "spawn",
    "terminate",
    "terminate_all",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessInfo:
    """One cluster process as `abflow cluster status` shows it."""

    name: str
    pid: int | None
    port: int | None
    healthy: bool
    detail: str = ""

    @property
    def running(self) -> bool:
        """Whether its JVM is alive (it may still be unhealthy)."""
        return self.pid is not None

    def describe(self) -> str:
        """`taskmanager-1  pid 4242  port 40123  healthy  (registered, 2 slots)`."""
        pid = str(self.pid) if self.pid is not None else "-"
        port = str(self.port) if self.port is not None else "-"
        state = "healthy" if self.healthy else ("UNHEALTHY" if self.pid is not None else "STOPPED")
        return f"{self.name:<14} pid {pid:<8} port {port:<6} {state}" + (f"  ({self.detail})" if self.detail else "")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on `host:port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def command_line(pid: int) -> str:
    """The process's command line, '' when it cannot be read."""
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    result = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False)
    return result.stdout


def running_pid(pid_file: Path, *markers: str) -> int | None:
    """The pid in `pid_file` if that process is alive and its command line holds every marker, else None."""
    try:
        pid = int(pid_file.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None
    for _ in range(20):  # the command line reads empty while the process is in the middle of an exec
        if not pid_alive(pid):
            return None
        line = command_line(pid)
        if line.strip():
            return pid if all(marker in line for marker in markers) else None
        time.sleep(0.05)
    return None


def spawn(command: Sequence[str], *, pid_file: Path, log: Path, env: Mapping[str, str], cwd: Path) -> int:
    """Start `command` in a new session (it outlives the CLI), stdout/stderr to `log`; record and return its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
        )
    pid_file.write_text(f"{process.pid}\n", encoding="utf-8")
    return process.pid


def terminate(pid: int, *, name: str, timeout_s: float) -> None:
    """SIGTERM, wait up to `timeout_s` for a clean shutdown, then SIGKILL; returns once the process is gone."""
    terminate_all({name: pid}, timeout_s=timeout_s)


def terminate_all(processes: Mapping[str, int], *, timeout_s: float) -> None:
    """SIGTERM to all at once, wait up to `timeout_s` for their clean shutdown, then SIGKILL those left.

    At once, because the nodes of a KRaft quorum stopped one by one leave the last ones without a controller
    majority, and their controlled shutdown then waits for one that never comes.
    """
    for name, pid in processes.items():
        logger.info("stopping process=%s pid=%s", name, pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while any(pid_alive(pid) for pid in processes.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    for name, pid in processes.items():
        if pid_alive(pid):
            logger.warning("process ignored SIGTERM, killing process=%s pid=%s after_s=%s", name, pid, timeout_s)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            while pid_alive(pid):
                time.sleep(0.1)
