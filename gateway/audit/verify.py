"""Verification of an event-log file (``metrogate verify``): signatures, counter, hash chain."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.audit.eventlog import LogProblem, check_chain, check_head, counter_path_for
from gateway.audit.head import HeadError, LogHead, read_head

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
    """Verify an event-log file: every line's signature, the signed head, the hash chain.

    The head (counter file, default ``<log>.counter`` beside it) is used when present,
    to detect entries deleted from the end (``truncated``, also for an emptied log);
    its own signature must verify (``counter_unsigned``, ``counter_forged``,
    ``counter_malformed``). Problem kinds are those of
    :func:`gateway.audit.eventlog.check_chain` plus these and ``counter_mismatch``.
    Never modifies anything.
    """
    data = path.read_bytes()
    cpath = counter_path_for(path) if counter_path is None else counter_path
    problems: list[LogProblem] = []
    head: LogHead | None = None
    present = cpath.exists()
    try:
        head = read_head(cpath, keys)
    except HeadError as exc:
        problems.append(LogProblem(0, None, exc.kind, exc.message))
    report = check_chain(data, keys, remember=None if head is None else head.n)
    problems += report.problems
    problems.extend(check_head(report, head))
    problems.sort(key=lambda p: p.line)
    return EventLogReport(path, len(report.entries), report.last_n, problems, present)


def looks_like_event_log(data: bytes) -> bool:
    """True when some line is an event-log entry (``<body with n and prev>\\t<sig>``).

    Every line is looked at, so a log whose first lines were damaged is still
    verified as a log (and its damage reported) rather than taken for a capture.
    """
    for line in data.split(b"\n"):
        cut = line.rfind(b"\t")
        if cut < 0:
            continue
        try:
            obj = json.loads(line[:cut])
        except (ValueError, UnicodeDecodeError, RecursionError):
            continue
        if isinstance(obj, dict) and "n" in obj and "prev" in obj:
            return True
    return False
