"""Keep secrets out of every log line and error message.

Why more than `SecretStr`: libraries log their own copies of the secret. kafka-python's admin client logs its whole
configuration at DEBUG, plain password included, and the Java-style `sasl.jaas.config` string embeds the password
too. So redaction works on the text itself, by two rules:
- every secret value that `experiment.runtime.config.load_settings` loaded is masked wherever it appears (also in its
  `repr`/JSON-escaped form);
- the value after a secret-looking key (`password`, `sasl_plain_password`, `sasl.jaas.config`, `*_secret`, ...) is
  masked even when the value is not a known secret.

`install_log_redaction()` applies this to every log record of every logger, whatever handler prints it.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from typing import Any

__all__ = ["MASK", "SecretRedactingFilter", "install_log_redaction", "redact", "register_secret"]

MASK = "***"

_KEY = r"[\w.\-]*(?:password|passwd|secret|jaas[._]config)[\w.\-]*"
_VALUE = r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s,;'"})\]]+"""
_PAIR = re.compile(rf"""(?P<key>['"]?(?i:{_KEY})['"]?\s*[:=]\s*)(?P<value>{_VALUE})""")

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()
_installed = False


def register_secret(value: str | None) -> None:
    """Remember a secret value so that `redact` masks it from now on (empty values are ignored)."""
    global _secrets
    if not value:
        return
    forms = {value, repr(value)[1:-1], json.dumps(value)[1:-1]}
    with _lock:
        # Longest first, so a secret that contains another is masked whole.
        _secrets = tuple(sorted(set(_secrets) | forms, key=len, reverse=True))


def redact(text: str) -> str:
    """`text` with every known secret value and every value of a secret-looking key replaced by `***`."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return _PAIR.sub(_mask_pair, text)


def _mask_pair(match: re.Match[str]) -> str:
    value = match.group("value")
    quote = value[0] if value[0] in "'\"" else ""
    return f"{match.group('key')}{quote}{MASK}{quote}"


class SecretRedactingFilter(logging.Filter):
    """Rewrites a record in place so that its message, exception and stack text carry no secret; never drops it.

    The message is formatted here (then `args` is emptied), because a secret usually hides in the arguments.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact `record` and let it through."""
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: logging would print msg and args raw, so redact those instead
            message = f"{record.msg} (unformattable arguments {record.args!r})"
        record.msg = redact(message)
        record.args = ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_log_redaction() -> None:
    """Redact every log record from now on, from any logger to any handler (idempotent; call once per process).

    Why the record factory rather than a filter on the root logger: logger filters do not see records that propagate
    from child loggers (`kafka.admin.client`, ...), and handler filters miss handlers added later (PyFlink's, pytest's).
    Records below a logger's level are never created, so the cost falls only on lines that are printed.
    """
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    redactor = SecretRedactingFilter()
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        redactor.filter(record)
        return record

    logging.setLogRecordFactory(factory)
