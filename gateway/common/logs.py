"""Structured log lines for journald and log shippers, with secrets masked.

Two formats, selected by ``log.format``:

* ``text`` — logfmt (``key=value``)::

      ts=2026-11-28T01:02:03.456Z level=error logger=metrogate.runtime msg="device dev1 failing"

* ``json`` — one JSON object per line with the same keys.

``extra={...}`` fields of a record are added as keys (``device=dev1``). When stderr
is journald's (``JOURNAL_STREAM`` is set), ``ts`` is left out: journald stamps every
line itself. :class:`SecretFilter` masks passwords, tokens, keys and URL credentials
in every message and field before any handler formats it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

__all__ = [
    "JsonFormatter",
    "KeyValueFormatter",
    "SecretFilter",
    "configure_logging",
    "mask_secrets",
]

# attributes every LogRecord has; anything else came from ``extra=``
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

_SECRET_KEYS = r"pass(?:word|wd)?|token|secret|api[_-]?key|authorization|private[_-]?key"
_KEY_VALUE = re.compile(
    rf"""(?ix)
    (?P<key>["']?\b[\w-]*(?:{_SECRET_KEYS})[\w-]*["']?\s*[:=]\s*)
    (?P<value>"[^"]*"|'[^']*'|(?:Bearer|Token|Basic)\s+\S+|[^\s,;&}}]+)
    """
)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]+):[^@/\s]+@")
MASK = "***"


def mask_secrets(text: str, literals: Iterable[str] = ()) -> str:
    """``text`` with secret-looking values and the given literal secrets replaced by ``***``."""
    for secret in literals:
        if secret:
            text = text.replace(secret, MASK)
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _KEY_VALUE.sub(lambda m: f"{m['key']}{MASK}", text)


class SecretFilter(logging.Filter):
    """Masks secrets in a record's message and ``extra`` fields (never drops a record).

    ``literals`` are known secret values (the MQTT password, the store token) masked
    wherever they appear; pattern masking catches ``password=…``, ``token: …``,
    ``Authorization: Bearer …`` and ``scheme://user:pass@host``.
    """

    def __init__(self, literals: Iterable[str] = ()) -> None:
        super().__init__()
        self.literals = [s for s in literals if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message, self.literals)
        if masked != message:
            record.msg, record.args = masked, None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, mask_secrets(value, self.literals))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_secrets(record.exc_text, self.literals)
        return True


def _fields(record: logging.LogRecord, *, with_ts: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if with_ts:
        ms = int(record.msecs)
        out["ts"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{ms:03d}Z"
    out["level"] = record.levelname.lower()
    out["logger"] = record.name
    out["msg"] = record.getMessage()
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_"):
            out[key] = value
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        out["exc"] = record.exc_text
    return out


def _logfmt_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text and not re.search(r'[\s="\\]', text):
        return text
    return json.dumps(text, ensure_ascii=False)


class KeyValueFormatter(logging.Formatter):
    """logfmt: ``key=value`` pairs, values quoted when they contain blanks or quotes."""

    def __init__(self, *, with_ts: bool = True) -> None:
        super().__init__()
        self.with_ts = with_ts

    def format(self, record: logging.LogRecord) -> str:
        items = _fields(record, with_ts=self.with_ts).items()
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in items)


class JsonFormatter(logging.Formatter):
    """One JSON object per line (``ts``, ``level``, ``logger``, ``msg``, extras, ``exc``)."""

    def __init__(self, *, with_ts: bool = True) -> None:
        super().__init__()
        self.with_ts = with_ts

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record, with_ts=self.with_ts), ensure_ascii=False, default=str)


def configure_logging(
    level: str = "info",
    fmt: str = "text",
    *,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> logging.Handler:
    """Route every log record to one stderr handler, structured and masked; returns it.

    Library loggers that chatter per request (pymodbus, amqtt, asyncio) are held at
    WARNING unless ``level`` is debug.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    with_ts = "JOURNAL_STREAM" not in os.environ
    formatter: logging.Formatter = (
        JsonFormatter(with_ts=with_ts) if fmt == "json" else KeyValueFormatter(with_ts=with_ts)
    )
    handler.setFormatter(formatter)
    handler.addFilter(SecretFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("pymodbus", "amqtt", "transitions", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level != "debug" else logging.INFO)
    return handler
