"""What starting and watching local processes needs: a free port, the Java to run, and whether a pid still lives.

Every engine abflow starts on this machine (the broker, the local cluster's brokers, JobManager and TaskManagers, the
detached Flink job) needs the same three answers, so they live here once. Liveness: the processes are tracked by
pid files, and a plain `kill(pid, 0)` is not enough, because an exited child that nobody reaped (a zombie) still
answers it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from pathlib import Path

from experiment.core.errors import InfraError

__all__ = ["find_java", "free_port", "pid_alive"]


def free_port() -> int:
    """An unused TCP port on 127.0.0.1 chosen by the OS (tests and listeners never use fixed ports)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_java(purpose: str) -> str:
    """`$JAVA_HOME/bin/java`, else `java` on PATH; Kafka and Flink both need Java 17. `purpose` names who asks."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    java = str(candidate) if candidate and candidate.is_file() else shutil.which("java")
    if java is None:
        raise InfraError(f"Java 17 or newer is needed to run {purpose}, and `java` is not on PATH (nor JAVA_HOME).")
    return java


def pid_alive(pid: int) -> bool:
    """Whether `pid` is running; reaps it when it is our own exited child, and counts zombies as dead."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.is_file():
        with contextlib.suppress(OSError):
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True
