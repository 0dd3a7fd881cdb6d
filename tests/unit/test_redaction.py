"""Secrets never reach a log line: known secret values and values of secret-looking keys are masked in any record."""

from __future__ import annotations

import io
import json
import logging

import pytest

from experiment.runtime.config import load_settings
from experiment.runtime.redaction import MASK, SecretRedactingFilter, install_log_redaction, redact, register_secret

SECRET = "s3cr3t-Pa55-XYZ"


def test_a_loaded_password_is_masked_wherever_it_appears(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no abflow.toml
    load_settings(env={"ABFLOW_KAFKA_SASL_PASSWORD": SECRET})
    assert redact(f"connecting with {SECRET} as the password") == f"connecting with {MASK} as the password"
    assert SECRET not in redact(f"url=sasl://bob:{SECRET}@broker:9093")


def test_escaped_forms_of_a_secret_are_masked() -> None:
    tricky = "pa'ss\\wo\"rd-9f8e"
    register_secret(tricky)
    for text in (repr({"x": tricky}), repr(tricky), json.dumps({"x": tricky}), f"raw {tricky} text"):
        assert "9f8e" not in redact(text), text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "config: {'sasl_plain_username': 'bob', 'sasl_plain_password': 'unknown-1', 'acks': 'all'}",
            "config: {'sasl_plain_username': 'bob', 'sasl_plain_password': '***', 'acks': 'all'}",
        ),
        ('{"password": "unknown-2", "user": "bob"}', '{"password": "***", "user": "bob"}'),
        ("ABFLOW_KAFKA_SASL_PASSWORD=unknown-3 next", "ABFLOW_KAFKA_SASL_PASSWORD=*** next"),
        (
            'sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="bob" '
            'password="unknown-4";',
            'sasl.jaas.config=*** required username="bob" password="***";',
        ),
        (
            "{'sasl.jaas.config': 'PlainLoginModule required username=\"bob\" password=\"unknown-5\";'}",
            "{'sasl.jaas.config': '***'}",
        ),
        ("ssl_password: unknown-6", "ssl_password: ***"),
        ("Sending username and password in the clear", "Sending username and password in the clear"),
    ],
)
def test_values_of_secret_looking_keys_are_masked(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_filter_redacts_arguments_exception_and_stack() -> None:
    register_secret(SECRET)
    try:
        raise ValueError(f"auth failed for {SECRET}")
    except ValueError as exc:
        exc_info = (type(exc), exc, exc.__traceback__)
    record = logging.LogRecord("kafka.admin.client", logging.DEBUG, __file__, 1, "config: %s", None, exc_info)
    record.args = ({"sasl_plain_password": SECRET},)
    record.stack_info = f"stack with {SECRET}"
    assert SecretRedactingFilter().filter(record) is True
    text = logging.Formatter("%(message)s").format(record)
    assert SECRET not in text and "ValueError: auth failed for ***" in text
    assert record.getMessage() == "config: {'sasl_plain_password': '***'}"


def test_installed_redaction_covers_child_loggers_and_handlers_added_later() -> None:
    install_log_redaction()
    install_log_redaction()  # idempotent
    register_secret(SECRET)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)  # added after install, directly on a library's child logger
    child = logging.getLogger("kafka.admin.client.redaction-test")
    child.addHandler(handler)
    child.setLevel(logging.DEBUG)
    try:
        child.debug("Starting KafkaAdminClient with configuration: %s", {"sasl_plain_password": SECRET})
        child.warning("broken format %s %s", SECRET)  # logging would print msg and args raw
    finally:
        child.removeHandler(handler)
        child.setLevel(logging.NOTSET)
    assert SECRET not in stream.getvalue()
    assert "'sasl_plain_password': '***'" in stream.getvalue()
