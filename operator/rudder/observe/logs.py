"""Logging setup: JSON lines for machines, or text for people (`--log-format`).

A JSON line carries `time` (RFC 3339, UTC, milliseconds), `level`, `logger` and `message`,
`error` (the formatted traceback) when an exception is logged, and every field passed with
`extra=`, e.g.::

    log.info("upgraded", extra={"release": "podinfo", "namespace": "apps", "revision": 3,
                                "duration": 4.2, "result": "success"})

    {"time": "2025-01-01T12:00:00.000Z", "level": "info", "logger": "rudder.reconcile",
     "message": "upgraded", "release": "podinfo", "namespace": "apps", "revision": 3,
     "duration": 4.2, "result": "success"}

The text format appends the same fields as `key=value` after the message.

**What is never printed.** Both formatters drop any `extra` field — at any depth of a
dict passed as one — whose key is `values`, or contains `secret`, `password`, `token`,
`credential` or `authorization` (case-insensitive), so chart values and Secret data cannot
reach a log even by mistake. Only the extra fields are filtered: the message text is the
caller's responsibility (rudder's own messages never include values or Secret data). kopf's
internal extras (`settings`, `k8s_skip`) are left out too; its `k8s_ref` (the object's
identity) is kept.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from collections.abc import Mapping
from typing import Any, Final

FORMATS: Final = ("json", "text")
LEVELS: Final = ("debug", "info", "warning", "error", "critical")
REDACTED_NAMES: Final = frozenset({"values"})
REDACTED_PARTS: Final = ("secret", "password", "token", "credential", "authorization")
IGNORED_EXTRAS: Final = frozenset({"settings", "k8s_skip", "message", "asctime", "taskName"})

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD: Final = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__
) | {"message", "asctime"}


def is_sensitive(key: str) -> bool:
    """True for a field name that may hold chart values or credentials."""
    lowered = key.lower()
    return lowered in REDACTED_NAMES or any(part in lowered for part in REDACTED_PARTS)


def _scrub(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _scrub(v) for k, v in value.items() if not is_sensitive(str(k))}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(item) for item in value]
    return value


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """The record's `extra=` fields, without the sensitive ones and kopf's internals."""
    found: dict[str, Any] = {}
    for key, value in record.__dict__.items():
        if key in _STANDARD or key in IGNORED_EXTRAS or key.startswith("_"):
            continue
        if is_sensitive(key):
            continue
        found[key] = _scrub(value)
    return found


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line; see the module's docstring for the fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extras(record).items():
            line.setdefault(key, value)  # an extra never overrides the fixed fields
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["error"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...` plus the traceback, if any."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        fields = extras(record)
        if not fields:
            return text
        pairs = " ".join(f"{key}={_text_value(value)}" for key, value in fields.items())
        return f"{text} {pairs}"


def _text_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False) if (" " in value or not value) else value
    return json.dumps(value, default=str, ensure_ascii=False)


def configure_logging(
    format: str = "text",  # "json" or "text"
    level: str = "info",
    *,
    stream: Any = None,
) -> logging.Handler:
    """Send every log record at `level` or above to stderr (or `stream`) in `format`.

    Replaces the root logger's handlers, so calling it again reconfigures rather than
    duplicating lines. Returns the handler (tests read from its stream).
    """
    if format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {format!r}")
    if level.lower() not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return handler
