"""Small reusable pydantic field types for the configuration.

:data:`Duration` accepts a non-negative number of seconds or a string with a unit
(``"500ms"``, ``"30s"``, ``"5m"``, ``"2h"``, ``"7d"``; a bare number string means
seconds) and always yields ``float`` seconds.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, SecretStr, WithJsonSchema

__all__ = ["Duration", "parse_duration", "secret_values"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(value: Any) -> float:
    """Turn a number of seconds or a string such as ``"5m"`` into float seconds.

    Raises :class:`ValueError` (which pydantic reports at the key's location) for
    anything else, negative or non-finite values included.
    """
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '30s', not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
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
        raise ValueError(f"a duration must be a finite number of seconds ≥ 0, not {value!r}")
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
