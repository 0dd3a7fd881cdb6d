"""Settings, loaded once at the edge into a frozen object.

Precedence, highest first: CLI flags (passed as `overrides`), environment variables (`ABFLOW_*`), the config file
(`abflow.toml` in the working directory, or the path in `ABFLOW_CONFIG`), then local defaults that need no setup.
Secrets are `SecretStr` so that printing or logging a `Settings` never shows them, and every secret loaded here is
registered with `experiment.runtime.redaction`, which masks it in log lines that libraries write with their own
copy of it. Kafka addresses are parsed in one place (`parse_bootstrap_servers`), so `kafka up` and every client agree on
them.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr

from experiment.core.errors import ConfigError
from experiment.runtime.redaction import register_secret

__all__ = ["DEFAULT_KAFKA_PORT", "KafkaSettings", "Settings", "load_settings", "parse_bootstrap_servers"]

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
DEFAULT_KAFKA_PORT = 9092


def parse_bootstrap_servers(servers: str) -> list[tuple[str, int]]:
    """`"a:9093,[::1]:9092,b"` → `[("a", 9093), ("::1", 9092), ("b", 9092)]`, read the way kafka-python reads it.

    A bare IPv6 address (`::1`) has no port (kafka-python's rule); write `[::1]:9092` to give one.
    """
    addresses = []
    for entry in (part.strip() for part in servers.split(",")):
        if entry.startswith("["):
            host, bracket, rest = entry[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else None
            if not bracket or (rest and port_text is None):
                raise ConfigError(f"Bad Kafka address {entry!r} in bootstrap servers {servers!r}.")
        elif entry.count(":") == 1:
            host, _, port_text = entry.partition(":")
        else:
            host, port_text = entry, None
        if not host:
            raise ConfigError(f"Bad Kafka address {entry!r} in bootstrap servers {servers!r}: no host.")
        if port_text is None:
            port = DEFAULT_KAFKA_PORT
        elif port_text.isdigit() and 0 < int(port_text) < 65536:
            port = int(port_text)
        else:
            raise ConfigError(f"Bad port in Kafka address {entry!r} (bootstrap servers {servers!r}).")
        addresses.append((host, port))
    return addresses


@dataclass(frozen=True)
class KafkaSettings:
    """How to reach Kafka: the local broker by default, any cluster by configuration."""

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    topic_prefix: str = ""
    #: Partitions of the keyed topics (sessions, outcomes, assignments, attributed-outcomes) when abflow creates
    #: them. The sessions topic's count is the job's parallelism ceiling; sessions and outcomes always get the same.
    partitions: int = 4
    # How long a client waits for the first broker to answer before abflow gives up with one error line.
    connect_timeout_s: float = 8.0

    def topic(self, name: str) -> str:
        """The physical topic name of a logical topic (a prefix lets several test runs share one broker)."""
        return f"{self.topic_prefix}{name}"

    def client_config(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python clients (address, security, and how long to wait for a first answer)."""
        config: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.security_protocol,
            "bootstrap_timeout_ms": int(self.connect_timeout_s * 1000),
        }
        if self.sasl_mechanism:
            config["sasl_mechanism"] = self.sasl_mechanism
            config["sasl_plain_username"] = self.sasl_username
            config["sasl_plain_password"] = self.sasl_password.get_secret_value() if self.sasl_password else None
        if self.ssl_cafile:
            config["ssl_cafile"] = self.ssl_cafile
        return config

    def java_properties(self) -> dict[str, str]:
        """Client properties for Java clients (the Flink Kafka connector)."""
        props = {"bootstrap.servers": self.bootstrap_servers, "security.protocol": self.security_protocol}
        if self.sasl_mechanism:
            password = self.sasl_password.get_secret_value() if self.sasl_password else ""
            props["sasl.mechanism"] = self.sasl_mechanism
            module = (
                "org.apache.kafka.common.security.scram.ScramLoginModule"
                if self.sasl_mechanism.upper().startswith("SCRAM")
                else "org.apache.kafka.common.security.plain.PlainLoginModule"
            )
            props["sasl.jaas.config"] = f'{module} required username="{self.sasl_username}" password="{password}";'
        if self.ssl_cafile:
            props["ssl.truststore.type"] = "PEM"
            props["ssl.truststore.location"] = self.ssl_cafile
        return props


@dataclass(frozen=True)
class Settings:
    """Everything abflow needs to know about its surroundings."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    home: Path = Path(".abflow")
    jars_dir: Path = Path.home() / ".cache" / "abflow" / "jars"
    store_path: Path = Path(".abflow") / "results.duckdb"

    @property
    def kafka_data_dir(self) -> Path:
        """Where the local broker keeps its log segments and KRaft metadata."""
        return self.home / "kafka"


_ENV = {
    "ABFLOW_KAFKA_BOOTSTRAP": ("kafka", "bootstrap_servers"),
    "ABFLOW_KAFKA_SECURITY_PROTOCOL": ("kafka", "security_protocol"),
    "ABFLOW_KAFKA_SASL_MECHANISM": ("kafka", "sasl_mechanism"),
    "ABFLOW_KAFKA_SASL_USERNAME": ("kafka", "sasl_username"),
    "ABFLOW_KAFKA_SASL_PASSWORD": ("kafka", "sasl_password"),
    "ABFLOW_KAFKA_SSL_CAFILE": ("kafka", "ssl_cafile"),
    "ABFLOW_KAFKA_TOPIC_PREFIX": ("kafka", "topic_prefix"),
    "ABFLOW_KAFKA_PARTITIONS": ("kafka", "partitions"),
    "ABFLOW_KAFKA_CONNECT_TIMEOUT_S": ("kafka", "connect_timeout_s"),
    "ABFLOW_HOME": ("", "home"),
    "ABFLOW_JARS_DIR": ("", "jars_dir"),
    "ABFLOW_STORE": ("", "store_path"),
}


def _read_file(path: Path) -> dict[str, dict[str, Any]]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"Cannot read config file '{path}': {exc}") from exc
    top = {k: v for k, v in raw.items() if not isinstance(v, dict)}
    return {"": top, "kafka": dict(raw.get("kafka", {}))}


def _positive_seconds(name: str, value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = 0.0
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigError(f"kafka {name} must be a positive number of seconds. Got {value!r}.")
    return seconds


def _positive_int(name: str, value: Any) -> int:
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
        raise ConfigError(f"kafka {name} must be a whole number >= 1. Got {value!r}.")
    return int(text)


def load_settings(overrides: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> Settings:
    """Build the settings from defaults, the config file, the environment and `overrides` (`"kafka.x"` or `"x"`)."""
    env = dict(os.environ) if env is None else env
    layers: dict[str, dict[str, Any]] = {"": {}, "kafka": {}}
    config_path = Path(env.get("ABFLOW_CONFIG", "abflow.toml"))
    if config_path.is_file():
        for section, values in _read_file(config_path).items():
            layers[section].update(values)
    elif "ABFLOW_CONFIG" in env:
        raise ConfigError(f"ABFLOW_CONFIG points at '{config_path}', which does not exist.")
    for var, (section, key) in _ENV.items():
        if env.get(var):
            layers[section][key] = env[var]
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.rpartition(".")
        layers.setdefault(section, {})[key] = value

    kafka_fields = {f.name for f in fields(KafkaSettings)}
    unknown = set(layers["kafka"]) - kafka_fields
    if unknown:
        raise ConfigError(f"Unknown kafka setting(s): {', '.join(sorted(unknown))}.")
    kafka_values = dict(layers["kafka"])
    if kafka_values.get("sasl_password") is not None and not isinstance(kafka_values["sasl_password"], SecretStr):
        kafka_values["sasl_password"] = SecretStr(str(kafka_values["sasl_password"]))
    protocol = str(kafka_values.get("security_protocol", "PLAINTEXT")).upper()
    if protocol not in _PROTOCOLS:
        raise ConfigError(f"security_protocol must be one of {', '.join(_PROTOCOLS)}. Got '{protocol}'.")
    kafka_values["security_protocol"] = protocol
    if "connect_timeout_s" in kafka_values:
        kafka_values["connect_timeout_s"] = _positive_seconds("connect_timeout_s", kafka_values["connect_timeout_s"])
    if "partitions" in kafka_values:
        kafka_values["partitions"] = _positive_int("partitions", kafka_values["partitions"])
    kafka = KafkaSettings(**kafka_values)
    if kafka.sasl_password is not None:
        register_secret(kafka.sasl_password.get_secret_value())

    top_fields = {f.name for f in fields(Settings)} - {"kafka"}
    unknown = set(layers[""]) - top_fields
    if unknown:
        raise ConfigError(f"Unknown setting(s): {', '.join(sorted(unknown))}.")
    settings = Settings(kafka=kafka)
    top: dict[str, Any] = {k: Path(v).expanduser() for k, v in layers[""].items()}
    if "home" in top and "store_path" not in top:
        top["store_path"] = top["home"] / "results.duckdb"
    return replace(settings, **top)
