"""Run `abflow` as a real subprocess, the way a user does: its own interpreter, logging set-up and stderr."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from experiment.runtime.config import KafkaSettings

__all__ = ["CliRun", "abflow_in_home", "closed_port", "run_abflow"]

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class CliRun:
    """What one `abflow` run produced."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    elapsed_s: float


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connections are refused at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_abflow(*args: str, cwd: Path, env: dict[str, str], timeout_s: float = 120.0) -> CliRun:
    """`abflow ARGS` in `cwd` with only `env` as ABFLOW_* settings (ambient ABFLOW_* variables are dropped)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ABFLOW_") or k == "ABFLOW_JARS_DIR"}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    full_env.update(env)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", "from experiment.cli.main import main; main()", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    return CliRun(tuple(args), result.returncode, result.stdout, result.stderr, time.monotonic() - started)


def abflow_in_home(
    home: Path, kafka: KafkaSettings, *args: str, timeout_s: float = 180.0
) -> subprocess.CompletedProcess[str]:
    """The installed `abflow` script with this test's home, broker and topic prefix (ambient settings kept)."""
    env = {
        **os.environ,
        "ABFLOW_HOME": str(home),
        "ABFLOW_KAFKA_BOOTSTRAP": kafka.bootstrap_servers,
        "ABFLOW_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
    }
    return subprocess.run(
        [str(Path(sys.executable).parent / "abflow"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
