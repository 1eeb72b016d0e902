"""Argument types for the command line: a bad number is a usage error, not a traceback.

``type=float`` takes ``nan``, ``inf`` and ``-1``; passed on as a timeout they ended a
command with a ``ValueError`` or ``OverflowError`` from deep inside a library.
"""

from __future__ import annotations

import argparse
import math
from typing import Final

MAX_SECONDS: Final = 10 * 365 * 86400.0
"""The longest duration a command takes (ten years): well inside every clock's range."""


def seconds(text: str) -> float:
    """A duration in seconds: finite, above 0, at most :data:`MAX_SECONDS`."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0 or value > MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"a number of seconds above 0 and at most {MAX_SECONDS:.0f}, not {text!r}"
        )
    return value


def _integer(text: str, low: int, high: int) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"an integer from {low} to {high}, not {text!r}")
    return value


def count(text: str) -> int:
    """A positive count (at most 2**63 - 1)."""
    return _integer(text, 1, 2**63 - 1)


def number(text: str) -> int:
    """A sequence or entry number: 0 or more (at most 2**63 - 1)."""
    return _integer(text, 0, 2**63 - 1)


def port(text: str) -> int:
    """A TCP port; 0 asks for a free one."""
    return _integer(text, 0, 65535)
