"""The configuration's shared base: model base, field types and common sections.

Both sides — the gateway's file (:mod:`gateway.config`) and the ingest's
(:mod:`supervision.config`) — build their models from these, so a key means the
same thing, with the same checks and messages, wherever it appears:

* :class:`Strict` is the base of every config model: unknown keys are errors
  (``extra="forbid"``), so ``scael:`` is reported, not ignored.
* :data:`Duration` accepts a non-negative number of seconds or a string with a unit
  (``"500ms"``, ``"30s"``, ``"5m"``, ``"2h"``, ``"7d"``; a bare number string means
  seconds) and always yields ``float`` seconds.
* :data:`Ident` (a gateway, site, device, point or bus id) and :data:`Name` (an
  alarm or expression name) are safe as one MQTT topic level and one tag value.
* :func:`finite`, :func:`non_negative` and :func:`positive` constrain a number field
  and name it in the message (``Annotated[float, finite("b")]``); model validators
  that check several fields at once use :func:`require_finite` and its siblings.
* :class:`TlsConfig` and :class:`OpsEndpoint` are the TLS settings of a broker
  connection and the ``/metrics`` + ``/health`` endpoint of a process.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

__all__ = [
    "ID_CHARS",
    "ID_MAX_LENGTH",
    "ID_PATTERN",
    "Duration",
    "Ident",
    "ListenAddress",
    "Listening",
    "Name",
    "OpsEndpoint",
    "Strict",
    "TlsConfig",
    "finite",
    "non_negative",
    "parse_duration",
    "positive",
    "require_finite",
    "require_non_negative",
    "require_positive",
    "secret_values",
    "shorten",
]


class Strict(BaseModel):
    """The base of every configuration model: an unknown key is an error, with its location."""

    model_config = ConfigDict(extra="forbid")


ID_CHARS = "A-Za-z0-9_.-"
"""What an id may be made of (a regex character class): letters, digits, '_', '.', '-'."""
ID_MAX_LENGTH = 64
ID_PATTERN = rf"^[{ID_CHARS}]+$"

Ident = Annotated[
    str, StringConstraints(pattern=ID_PATTERN, min_length=1, max_length=ID_MAX_LENGTH)
]
"""An id that is safe as one MQTT topic level and one InfluxDB tag value."""

Name = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
"""An alarm or expression name: the characters of an :data:`Ident` (one level of an alarm id)."""

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")


def shorten(text: str, limit: int = 40) -> str:
    """``text`` as a message shows it: cut to ``limit`` characters and marked "…"."""
    return text if len(text) <= limit else text[:limit] + "…"


def parse_duration(value: Any) -> float:
    """Turn a number of seconds or a string such as ``"5m"`` into float seconds.

    Raises :class:`ValueError` (which pydantic reports at the key's location) for
    anything else, negative or non-finite values included.
    """
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '30s', not a boolean")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an integer past the floats: refused as not finite below
            seconds = math.inf
    elif isinstance(value, str):
        m = _PATTERN.match(value)
        if m is None:
            raise ValueError(
                f"invalid duration {value!r}: use seconds or a number with a unit "
                "ms, s, m, h or d (e.g. '500ms', '30s', '5m', '2h', '7d')"
            )
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    else:
        raise ValueError(f"a duration is a number of seconds or a string like '30s', not {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(
            f"a duration must be a finite number of seconds ≥ 0, not {shorten(repr(value))}"
        )
    return seconds


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?|\.\d+)\s*(ms|s|m|h|d)?\s*$"},
            ],
            "description": "seconds, or a number with a unit: ms, s, m, h, d",
        }
    ),
]
"""Float seconds; accepts ``30``, ``"30s"``, ``"500ms"``, ``"5m"``, ``"2h"``, ``"7d"``."""


def secret_values(model: BaseModel) -> list[str]:
    """Every :class:`~pydantic.SecretStr` value set in ``model`` and the models it holds.

    What the log setup masks as literals (``configure_logging(secrets=...)``), so a
    password or token never shows in a log line whatever the message that carries it.
    """
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            if value.get_secret_value():
                found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(model)
    return found


def require_finite(value: Any, what: str, *, with_value: bool = True) -> Any:
    """``value`` unless it is inf or NaN (``None`` passes: an unset optional).

    ``with_value=False`` leaves the value out of the message, for field constraints:
    the config loader adds ``(got …)`` to those itself.
    """
    if value is not None and not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number" + _shown(value, with_value, "not"))
    return value


def require_non_negative(value: Any, what: str, *, with_value: bool = True) -> Any:
    """``value`` if it is finite and ≥ 0 (``None`` passes: an unset optional)."""
    if require_finite(value, what, with_value=with_value) is not None and value < 0:
        raise ValueError(f"{what} must be ≥ 0" + _shown(value, with_value))
    return value


def require_positive(value: Any, what: str, *, with_value: bool = True) -> Any:
    """``value`` if it is finite and > 0 (``None`` passes: an unset optional)."""
    if value is not None and (not math.isfinite(value) or value <= 0):
        raise ValueError(f"{what} must be > 0" + _shown(value, with_value))
    return value


def _shown(value: Any, with_value: bool, word: str = "got") -> str:
    return f", {word} {value}" if with_value else ""


def finite(what: str) -> AfterValidator:
    """Field constraint: a finite number (:func:`require_finite`), named ``what`` in errors."""
    return AfterValidator(lambda value: require_finite(value, what, with_value=False))


def non_negative(what: str) -> AfterValidator:
    """Field constraint: a finite number ≥ 0 (:func:`require_non_negative`)."""
    return AfterValidator(lambda value: require_non_negative(value, what, with_value=False))


def positive(what: str) -> AfterValidator:
    """Field constraint: a finite number > 0 (:func:`require_positive`)."""
    return AfterValidator(lambda value: require_positive(value, what, with_value=False))


class TlsConfig(Strict):
    """TLS settings of the connection to the MQTT broker; giving them turns TLS on."""

    ca: Path | None = Field(None, description="CA certificate file (PEM) to verify the broker.")
    cert: Path | None = Field(None, description="Client certificate (PEM), for mutual TLS.")
    key: Path | None = Field(None, description="Client private key (PEM), for mutual TLS.")
    insecure: bool = Field(False, description="Skip host name verification (testing only).")

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together")
        return self


ListenAddress = Annotated[
    str,
    StringConstraints(pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}$"),
    Field(
        description="host:port of the metrics and health endpoint. Loopback by default: "
        "the endpoint has no authentication, expose it only on a trusted network."
    ),
]
"""``host:port`` (``[v6]:port`` for IPv6) of an HTTP endpoint."""


class Listening(Strict):
    """A section with a ``listen`` address (``host:port``, ``[v6]:port``), split here."""

    listen: str

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


class OpsEndpoint(Listening):
    """Where a process serves ``/metrics`` (Prometheus) and ``/health`` (JSON).

    Each side sets its own default ``listen`` (the gateway 9108, the ingest 9109) and
    adds what is its own (the gateway's systemd ``watchdog``).
    """

    listen: ListenAddress
    enabled: bool = Field(True, description="Serve /metrics and /health.")
