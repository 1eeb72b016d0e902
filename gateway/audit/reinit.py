"""Deliberate re-initialisation of the event log (``metrogate audit reinit``).

The gateway never starts a new log by itself once it has run (docs/trust.md). When a
person decides one is needed — the log is full and archived, or damaged, or lost
with its counter — this retires the old files (renamed, never deleted) and writes a
new log whose first entry is ``log_reinitialised``: it names the previous head
(``n`` and line hash, and where they were learnt), the reason, and the files
retired. The new log continues the numbering (its first entry is ``n + 1`` and its
``prev`` is the previous head's hash), so a verifier sees where it attaches; when
no previous head is known it starts at 1 and says ``previous: null``.

The outbox's sequence mark is carried over from a verified head (or raised to
``min_seq``), so batch sequence numbers keep going up across the re-initialisation.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from drivers.base import Clock, utc_now_us
from gateway.audit.eventlog import (
    EventLog,
    EventLogLocked,
    EventType,
    check_chain,
    counter_path_for,
)
from gateway.audit.head import HeadError, SeqMark, read_head
from gateway.wire.signing import Signer

__all__ = ["PreviousHead", "ReinitReport", "reinitialise"]


@dataclass(frozen=True, slots=True)
class PreviousHead:
    """The head a new log continues: entry ``n`` with line hash ``hash``.

    ``source``: ``counter`` (the verified signed head), ``log`` (the last entry of
    the retired log, which did not verify as a whole), ``operator`` (given on the
    command line, e.g. from the platform's copy of the events).
    """

    n: int
    hash: str
    source: str

    def as_json(self) -> dict[str, Any]:
        return {"n": self.n, "hash": self.hash, "source": self.source}


@dataclass(slots=True)
class ReinitReport:
    """What :func:`reinitialise` did."""

    entry: dict[str, Any]
    previous: PreviousHead | None
    retired: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _stamp(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y%m%dT%H%M%SZ")


def _retired_name(path: Path, us: int) -> Path:
    base = path.with_name(f"{path.name}.retired-{_stamp(us)}")
    candidate, i = base, 1
    while candidate.exists() or counter_path_for(candidate).exists():
        candidate, i = base.with_name(f"{base.name}-{i}"), i + 1
    return candidate


def _newest_retired(path: Path) -> Path | None:
    found = [
        p
        for p in path.parent.glob(path.name + ".retired-*")
        if not p.name.endswith((".counter", ".tmp"))
    ]
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


def reinitialise(
    path: Path,
    signer: Signer,
    *,
    software_id: str,
    reason: str,
    previous: PreviousHead | None = None,
    min_seq: int | None = None,
    trusted_keys: Mapping[str, Ed25519PublicKey] | None = None,
    clock_us: Clock = utc_now_us,
) -> ReinitReport:
    """Retire the log at ``path`` (and its counter) and start a new one continuing it.

    The previous head is ``previous`` when given, else the old counter when its
    signature verifies, else the last entry of the old log (or of the newest
    retired one when the log itself is gone). Raises :class:`EventLogLocked` while
    a gateway holds the log open, ``ValueError`` for an empty ``reason``.
    """
    if not reason.strip():
        raise ValueError("a reason is required")
    keys = dict(trusted_keys or {})
    keys[signer.kid] = signer.private_key.public_key()
    counter = counter_path_for(path)
    notes: list[str] = []
    now = clock_us()
    lock_fd = os.open(path, os.O_RDONLY) if path.exists() else None
    try:
        if lock_fd is not None:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise EventLogLocked(path, "event log is in use (stop the gateway first)") from None
        mark: SeqMark | None = None
        local: PreviousHead | None = None
        try:
            head = read_head(counter, keys)
        except HeadError as exc:
            head = None
            notes.append(f"counter not used: {exc.message}")
        if head is not None:
            mark = head.seq
            local = PreviousHead(head.n, head.last, "counter")
        source = path if path.exists() else _newest_retired(path)
        if source is not None and (local is None or local.n == 0):
            report = check_chain(source.read_bytes(), keys)
            if report.last_n > 0:
                local = PreviousHead(report.last_n, report.last_hash, "log")
                if not report.ok:
                    notes.append(f"{source.name} has {len(report.problems)} problem(s)")
        chosen = previous or local
        if (
            previous is not None
            and local is not None
            and (local.n, local.hash)
            != (
                previous.n,
                previous.hash,
            )
        ):
            notes.append(f"local head was entry {local.n} ({local.source})")
        if min_seq is not None:
            base = mark or SeqMark(min_seq, min_seq, 0, False)
            mark = SeqMark(max(base.next, min_seq), max(base.reserved, min_seq), base.events, False)

        fresh = path.with_name(path.name + ".new")
        for stale in (fresh, counter_path_for(fresh)):
            stale.unlink(missing_ok=True)
        retired: list[Path] = []
        target = _retired_name(path, now)
        data: dict[str, Any] = {
            "reason": reason,
            "previous": None if chosen is None else chosen.as_json(),
            "retired": target.name if path.exists() else None,
        }
        with EventLog(fresh, signer, software_id=software_id, clock_us=clock_us) as log:
            log.start_from(None if chosen is None else (chosen.n, chosen.hash), mark)
            entry = log.append(EventType.LOG_REINITIALISED, data, source="operator")
        # the old files keep their names' stem; the new ones move in last
        if counter.exists():
            os.replace(counter, counter_path_for(target))
            retired.append(counter_path_for(target))
        if path.exists():
            os.replace(path, target)
            retired.append(target)
        os.replace(fresh, path)
        os.replace(counter_path_for(fresh), counter)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    finally:
        if lock_fd is not None:
            os.close(lock_fd)
    return ReinitReport(entry, chosen, retired, notes)
