"""A Kafka that is down costs one line on stderr within 10 s (an 8 s connect timeout), and no library noise.

Each command runs as a real subprocess against a closed port on 127.0.0.1 (connections are refused), with the
default `connect_timeout_s`; no broker is needed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.abflow_cli import closed_port, run_abflow

pytestmark = pytest.mark.slow

MAX_ELAPSED_S = 10.0  # the promise: the 8 s default connect timeout plus start-up stays within 10 s


@pytest.mark.parametrize(
    "command",
    [
        ("collect",),
        ("experiment", "list"),
        ("experiment", "launch", "no-such-experiment"),
        ("kafka", "status"),
        ("simulate", "--experiment", "no-such-experiment", "--customers", "10"),
    ],
    ids=lambda command: " ".join(command[:2]),
)
def test_unreachable_kafka_fails_fast_with_one_line(command: tuple[str, ...], tmp_path: Path) -> None:
    bootstrap = f"127.0.0.1:{closed_port()}"
    env = {"ABFLOW_HOME": str(tmp_path / "home"), "ABFLOW_KAFKA_BOOTSTRAP": bootstrap}
    run = run_abflow(*command, cwd=tmp_path, env=env)
    assert run.returncode != 0, run
    assert run.elapsed_s <= MAX_ELAPSED_S, run
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), run
    assert lines[0].startswith("error: ") and bootstrap in lines[0], run
    assert "ERROR" not in run.stderr and "kafka.net" not in run.stderr, run


def test_verbose_shows_what_kafka_python_did(tmp_path: Path) -> None:
    """The library's lines are hidden, not lost: `-v` shows them (here with a short timeout to keep the test quick)."""
    env = {
        "ABFLOW_HOME": str(tmp_path / "home"),
        "ABFLOW_KAFKA_BOOTSTRAP": f"127.0.0.1:{closed_port()}",
        "ABFLOW_KAFKA_CONNECT_TIMEOUT_S": "1",
    }
    run = run_abflow("-v", "experiment", "list", cwd=tmp_path, env=env)
    assert run.returncode == 2, run
    assert "kafka.net" in run.stderr and "within 1 s" in run.stderr.splitlines()[-1], run
