"""A SASL password never reaches a log, at any level: not stdout, not stderr with `-v`, not any file under the home.

The commands run as real subprocesses with `-v` (DEBUG, where kafka-python logs its whole client configuration)
against a real local broker whose data directory, and so whose logs, live under the abflow home. The broker speaks
PLAINTEXT, so every SASL client is created, tries to authenticate, and fails; that is fine, only the output matters.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from experiment.runtime.config import load_settings
from experiment.runtime.processes import free_port
from tests.helpers.abflow_cli import CliRun, run_abflow

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PASSWORD = "s3cr3t-Pa55-XYZ"

COMMANDS = [
    ("kafka", "up"),
    ("kafka", "status"),
    ("collect",),
    ("experiment", "list"),
    ("pipeline", "run"),
]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """An abflow home whose local broker (`<home>/kafka`) runs; yields the home and the broker's address."""
    from experiment.kafka import broker

    home = tmp_path_factory.mktemp("secret-home") / "home"
    data_dir = home / "kafka"
    status = broker.start(load_settings(), port=free_port(), data_dir=data_dir, die_with_parent=True)
    assert status.bootstrap_servers is not None
    try:
        yield home, status.bootstrap_servers
    finally:
        broker.stop(data_dir)


@pytest.fixture(scope="module")
def runs(home: tuple[Path, str]) -> list[CliRun]:
    """Every command once, with SASL settings whose password must stay secret."""
    path, bootstrap = home
    env = {
        "ABFLOW_HOME": str(path),
        "ABFLOW_KAFKA_BOOTSTRAP": bootstrap,
        "ABFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "ABFLOW_KAFKA_SASL_MECHANISM": "PLAIN",
        "ABFLOW_KAFKA_SASL_USERNAME": "abflow",
        "ABFLOW_KAFKA_SASL_PASSWORD": PASSWORD,
        "ABFLOW_KAFKA_CONNECT_TIMEOUT_S": "3",
    }
    return [run_abflow("-v", *command, cwd=path.parent, env=env) for command in COMMANDS]


@pytest.mark.parametrize("index", range(len(COMMANDS)), ids=[" ".join(c) for c in COMMANDS])
def test_password_is_not_in_the_output_of(index: int, runs: list[CliRun]) -> None:
    run = runs[index]
    assert run.returncode != 0, run  # SASL against a PLAINTEXT broker cannot succeed
    assert PASSWORD not in run.stdout, run.args
    assert PASSWORD not in run.stderr, run.args


def test_password_was_logged_masked_not_left_out(runs: list[CliRun]) -> None:
    """Not vacuous: kafka-python did log its configuration at DEBUG, with the password replaced by `***`."""
    assert any("'sasl_plain_password': '***'" in run.stderr for run in runs)


def test_password_is_in_no_file_under_the_home(home: tuple[Path, str], runs: list[CliRun]) -> None:
    path, _ = home
    files = [f for f in path.rglob("*") if f.is_file()]
    assert any(f.name == "server.log" for f in files)  # the broker's own log was searched too
    leaking = [f for f in files if PASSWORD.encode() in f.read_bytes()]
    assert leaking == []
