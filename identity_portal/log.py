"""Logging: request ids on every record, JSON lines on demand, and redaction.

Redaction happens in the LogRecord factory, before any handler sees the
record, because oauthlib and django-oauth-toolkit log request details at
DEBUG and a handler-level filter would miss handlers added later (test
capture, a Sentry integration). The message is rendered once, scrubbed of
anything shaped like a credential, and frozen.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
from datetime import UTC, datetime

from clients.constants import SECRET_PREFIX

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

REDACTED = "[REDACTED]"

# Shapes of credentials that must never reach a log line.
_CREDENTIAL_PATTERNS = [
    # Our client secrets carry a fixed prefix (see clients.constants.SECRET_PREFIX).
    re.compile(re.escape(SECRET_PREFIX) + r"[A-Za-z0-9_\-]+"),
    # Compact JWS/JWT: three base64url segments, header starting with '{"'.
    re.compile(r"eyJ[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*"),
    # HTTP authorization values.
    re.compile(r"(?i)\b(Basic|Bearer)\s+[A-Za-z0-9+/=._~\-]+"),
    # Form or JSON parameters that carry credentials.
    re.compile(
        r"(?i)(client_secret|password|access_token|id_token|refresh_token|token|secret|assertion)"
        r"""(['"]?\s*[:=]\s*['"]?)[^&'",\s}]+"""
    ),
    # PEM blocks.
    re.compile(r"-----BEGIN [A-Z ]+-----.*?-----END [A-Z ]+-----", re.DOTALL),
]


def redact(text: str) -> str:
    for pattern in _CREDENTIAL_PATTERNS:
        if pattern.groups >= 2:
            text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
        elif pattern.groups == 1:
            text = pattern.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
        else:
            text = pattern.sub(REDACTED, text)
    return text


_base_factory = logging.getLogRecordFactory()


def _redacting_factory(*args, **kwargs) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    try:
        message = record.getMessage()
    except (TypeError, ValueError):
        message = str(record.msg)
    record.msg = redact(message)
    record.args = ()
    return record


def install_redaction() -> None:
    """Install the redacting record factory once per process."""
    if logging.getLogRecordFactory() is not _redacting_factory:
        logging.setLogRecordFactory(_redacting_factory)


def record_fields_trim() -> None:
    """Web processes: skip the record fields our two formats never print.

    For every record logging walks the stack to find the caller and asks for
    the thread, process (a getpid system call) and multiprocessing names;
    with an access line per token request that is CPU for nothing (the
    logging HOWTO's "Optimization" section names these switches). Not for
    the Celery worker, whose own format prints the process name.
    """
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", request_id_var.get()),
            "message": record.getMessage(),
        }
        if record.exc_info:
            payload["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(payload)


class TextFormatter(logging.Formatter):
    """The plain-text line; tracebacks are redacted too.

    The record factory scrubs the message, but a traceback is rendered by the
    formatter from the exception itself, and exception messages and the local
    values some libraries put there can carry a secret or a token.
    """

    def format(self, record: logging.LogRecord) -> str:
        # Another handler's formatter may already have cached an unredacted
        # traceback in record.exc_text, which the base class reuses as-is.
        line = super().format(record)
        return redact(line) if record.exc_text or record.stack_info else line

    def formatException(self, ei) -> str:
        return redact(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return redact(super().formatStack(stack_info))
