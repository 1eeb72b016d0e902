"""Verification of an event-log file (``metrogate verify``): signatures, counter, hash chain."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.audit.eventlog import (
    LogProblem,
    check_chain,
    check_counter,
    counter_path_for,
    read_counter,
)

__all__ = ["EventLogReport", "looks_like_event_log", "verify_event_log"]


@dataclass(slots=True)
class EventLogReport:
    """What :func:`verify_event_log` found; ``ok`` when there is no problem."""

    path: Path
    entries: int
    last_n: int
    problems: list[LogProblem]
    counter_checked: bool

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_event_log(
    path: Path, keys: Mapping[str, Ed25519PublicKey], *, counter_path: Path | None = None
) -> EventLogReport:
    """Verify an event-log file: every line's signature, the counter, the hash chain.

    The counter file (default ``<log>.counter`` beside it) is used when present, to
    detect entries deleted from the end (``truncated``). Problem kinds are those of
    :func:`gateway.audit.eventlog.check_chain` plus ``truncated`` and ``counter_mismatch``.
    Never modifies anything.
    """
    data = path.read_bytes()
    report = check_chain(data, keys)
    problems = list(report.problems)
    cpath = counter_path_for(path) if counter_path is None else counter_path
    try:
        counter = read_counter(cpath)
    except ValueError as exc:
        counter = None
        problems.append(LogProblem(0, None, "counter_mismatch", str(exc)))
    problems.extend(check_counter(report, counter))
    problems.sort(key=lambda p: p.line)
    return EventLogReport(path, len(report.entries), report.last_n, problems, counter is not None)


def looks_like_event_log(data: bytes) -> bool:
    """True when the first line is an event-log entry (``<body with n and prev>\\t<sig>``)."""
    first = data.split(b"\n", 1)[0]
    cut = first.rfind(b"\t")
    if cut < 0:
        return False
    try:
        obj = json.loads(first[:cut])
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(obj, dict) and "n" in obj and "prev" in obj
