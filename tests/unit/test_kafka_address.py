"""One source of truth for Kafka addresses: parsing, where `kafka up` listens, `kafka status`, the connect timeout.

No broker is started here: `kafka up` is driven into "port already in use" on a socket the test holds, which shows
which address it chose without a JVM.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from experiment.cli.main import app
from experiment.core.errors import ConfigError
from experiment.kafka.broker import listen_address
from experiment.runtime.config import load_settings, parse_bootstrap_servers


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ambient ABFLOW_* variable or abflow.toml may decide the outcome."""
    for name in list(os.environ):
        if name.startswith("ABFLOW_") and name != "ABFLOW_JARS_DIR":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ABFLOW_HOME", str(tmp_path / "home"))


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another process (this test) is listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        yield int(holder.getsockname()[1])


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("servers", "expected"),
    [
        ("127.0.0.1:9093", [("127.0.0.1", 9093)]),
        ("localhost", [("localhost", 9092)]),
        ("[::1]:19092", [("::1", 19092)]),
        ("::1", [("::1", 9092)]),
        ("a:1, b:2", [("a", 1), ("b", 2)]),
    ],
)
def test_bootstrap_servers_parse_like_kafka_python(servers: str, expected: list[tuple[str, int]]) -> None:
    assert parse_bootstrap_servers(servers) == expected


@pytest.mark.parametrize("servers", ["host:", "host:port", ":9092", "host:70000", "[::1", "[::1]x", "a:1,"])
def test_malformed_bootstrap_servers_are_config_errors(servers: str) -> None:
    with pytest.raises(ConfigError):
        parse_bootstrap_servers(servers)


@pytest.mark.parametrize(
    ("servers", "port", "expected"),
    [
        ("127.0.0.1:9092", None, ("127.0.0.1", 9092)),
        ("127.0.0.1:29092", None, ("127.0.0.1", 29092)),
        ("localhost:19092", None, ("127.0.0.1", 19092)),  # the broker binds the IPv4 loopback for "localhost"
        ("LOCALHOST", None, ("127.0.0.1", 9092)),
        ("[::1]:19093", None, ("::1", 19093)),
        ("0:0:0:0:0:0:0:1", None, ("::1", 9092)),
        ("127.0.0.1:29092", 5000, ("127.0.0.1", 5000)),  # --port wins
        ("[::1]:19093", 5000, ("::1", 5000)),
        ("broker1:9093", 5000, ("127.0.0.1", 5000)),  # --port starts a local broker even with a remote config
        ("a:1,b:2", 5000, ("127.0.0.1", 5000)),
    ],
)
def test_listen_address_follows_the_configured_bootstrap(
    servers: str, port: int | None, expected: tuple[str, int]
) -> None:
    assert listen_address(servers, port) == expected


@pytest.mark.parametrize(
    ("servers", "reason"),
    [
        ("broker1:9093", "not a loopback address"),
        ("10.0.0.5:9092", "not a loopback address"),
        ("127.0.0.2:9092", "not a loopback address"),  # loopback, but not where the broker listens
        ("127.0.0.1:9092,127.0.0.1:9093", "several servers"),
        ("localhost:9092,broker1:9092", "several servers"),
    ],
)
def test_listen_address_refuses_what_the_local_broker_cannot_serve(servers: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        listen_address(servers)


def test_up_takes_its_port_from_the_environment(held_port: int, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ABFLOW_KAFKA_BOOTSTRAP", f"127.0.0.1:{held_port}")
    result = CliRunner().invoke(app, ["kafka", "up", "--data-dir", str(tmp_path / "k")])
    assert result.exit_code == 2
    assert f"Port {held_port} on 127.0.0.1 is already in use" in result.stderr
    assert not (tmp_path / "k" / "broker.pid").exists()


def test_up_takes_its_port_from_the_config_file(held_port: int, tmp_path: Path) -> None:
    (tmp_path / "abflow.toml").write_text(f'[kafka]\nbootstrap_servers = "localhost:{held_port}"\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["kafka", "up", "--data-dir", str(tmp_path / "k")])
    assert result.exit_code == 2
    assert f"Port {held_port} on 127.0.0.1 is already in use" in result.stderr


def test_up_takes_an_ipv6_loopback_port(tmp_path: Path, monkeypatch) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as holder:
        try:
            holder.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback on this machine")
        holder.listen(1)
        port = holder.getsockname()[1]
        monkeypatch.setenv("ABFLOW_KAFKA_BOOTSTRAP", f"[::1]:{port}")
        result = CliRunner().invoke(app, ["kafka", "up", "--data-dir", str(tmp_path / "k")])
    assert result.exit_code == 2
    assert f"Port {port} on ::1 is already in use" in result.stderr


@pytest.mark.parametrize(
    ("servers", "reason"),
    [("broker1:9093", "are not a loopback address"), ("127.0.0.1:9092,127.0.0.1:9093", "list several servers")],
)
def test_up_refuses_a_bootstrap_it_cannot_serve_in_one_line(servers: str, reason: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ABFLOW_KAFKA_BOOTSTRAP", servers)
    result = CliRunner().invoke(app, ["kafka", "up", "--data-dir", str(tmp_path / "k")])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and reason in lines[0] and servers in lines[0]
    assert not (tmp_path / "k").exists()


def test_status_explains_that_nothing_answers_at_the_configured_address(tmp_path: Path, monkeypatch) -> None:
    port = _closed_port()
    monkeypatch.setenv("ABFLOW_KAFKA_BOOTSTRAP", f"127.0.0.1:{port}")
    result = CliRunner().invoke(app, ["kafka", "status"])
    assert result.exit_code == 1
    assert result.stdout.startswith("kafka: stopped")
    assert result.stderr == (
        f"error: nothing answers at 127.0.0.1:{port}; `abflow kafka up` starts the local broker there\n"
    )


def test_status_of_a_remote_cluster_gives_up_after_the_connect_timeout(monkeypatch) -> None:
    monkeypatch.setenv("ABFLOW_KAFKA_BOOTSTRAP", "nonexistent.invalid:9092")
    monkeypatch.setenv("ABFLOW_KAFKA_CONNECT_TIMEOUT_S", "1")
    result = CliRunner().invoke(app, ["kafka", "status"])
    assert result.exit_code == 1
    assert result.stdout == "kafka: nonexistent.invalid:9092 does not answer metadata requests\n"
    assert result.stderr.startswith("error: no Kafka broker answered at nonexistent.invalid:9092 within 1 s")


def test_connect_timeout_defaults_to_8_s_and_reaches_every_client() -> None:
    kafka = load_settings(env={}).kafka
    assert kafka.connect_timeout_s == 8.0
    assert kafka.client_config()["bootstrap_timeout_ms"] == 8_000


def test_connect_timeout_from_environment_and_file(tmp_path: Path) -> None:
    from_env = load_settings(env={"ABFLOW_KAFKA_CONNECT_TIMEOUT_S": "2.5"}).kafka
    assert from_env.client_config()["bootstrap_timeout_ms"] == 2_500
    config = tmp_path / "c.toml"
    config.write_text("[kafka]\nconnect_timeout_s = 4\n", encoding="utf-8")
    assert load_settings(env={"ABFLOW_CONFIG": str(config)}).kafka.connect_timeout_s == 4.0


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan", "inf"])
def test_connect_timeout_must_be_positive_seconds(value: str) -> None:
    with pytest.raises(ConfigError, match="connect_timeout_s must be a positive number of seconds"):
        load_settings(env={"ABFLOW_KAFKA_CONNECT_TIMEOUT_S": value})
