"""Liveness of the background processes abflow starts (the local broker, the detached Flink job).

Both are tracked by pid files, so the same question comes up twice: is that pid still a running process? A plain
`kill(pid, 0)` is not enough, because an exited child that nobody reaped (a zombie) still answers it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["pid_alive"]


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
