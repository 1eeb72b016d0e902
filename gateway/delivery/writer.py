"""Putting records into the outbox when the outbox cannot always take them.

Every producer of the daemon (device tasks, alarms, the audit trail's events) puts
through one :class:`OutboxWriter`. It never raises: a full disk or a damaged file
must cost the records written meanwhile at most, never the gateway (an exception
in a device task would end every task beside it).

While :meth:`Outbox.put` fails with an :class:`~gateway.delivery.outbox.OutboxError`
(SQLite's "database or disk is full", an I/O error), the writer is *failing*:

* the records of each put are **held in memory**, in order, up to
  :data:`HELD_RECORDS` records in all;
* a write is tried again at most once per back-off period (1 s, doubling to 30 s;
  :meth:`retry` is called once a second by the daemon, and every put checks too),
  so a full disk costs one failed transaction per period, not one per put, and
  never a crash loop;
* held records are written first, oldest first, then new ones: the order of the
  outbox stays the order of the readings;
* beyond the bound the oldest held **data** records are given up first (alarms
  and events while data remains, as the outbox's own drop policy has it), and
  counted as **lost** by kind — never silently;
* it is logged once as an error when writes start failing, at debug level while
  they keep failing, once as a warning when records start to be lost, and once
  as "recovered" with what was stored and lost; ``/health`` is degraded and the
  metrics count failures, held and lost records (docs/operations.md).

A put that fails for a reason retrying cannot cure (``ValueError``: a record that
alone seals larger than a batch may be) loses that put's records at once, counted
and logged with its traceback. Records held in memory are gone if the process
ends before the outbox takes them: that is the price of not stopping; the event
log keeps its own entries durably meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from drivers.backoff import Backoff
from drivers.base import utc_now_us
from gateway.delivery.outbox import DropReport, OutboxError

__all__ = ["HELD_RECORDS", "OutboxWriter", "WriterStats"]

log = logging.getLogger("metrogate.outbox")

HELD_RECORDS = 10_000
"""Most records held in memory while the outbox cannot be written (≈ 10 MB)."""
RETRY_INITIAL_S = 1.0
RETRY_MAX_S = 30.0
_MERGE_RECORDS = 1000  # held puts of one kind are written together, up to this many records
_Held = tuple[str, list[dict[str, Any]], str | None]  # kind, records, stream


class Puts(Protocol):
    """What the writer needs of the outbox."""

    def put(
        self, kind: str, records: list[dict[str, Any]], *, stream: str | None = None
    ) -> list[int]: ...

    def enforce_bounds(self) -> list[DropReport]: ...


@dataclass
class WriterStats:
    """What health and metrics show of the writer."""

    failing: bool = False
    failing_since_us: int | None = None
    failures: int = 0
    """Write attempts that failed (each put or retry that the outbox refused)."""
    last_error: str | None = None
    held_records: int = 0
    lost: dict[str, int] = field(default_factory=dict)
    """Records given up, by kind (``data``, ``alarm``, ``event``), since start."""

    @property
    def lost_records(self) -> int:
        return sum(self.lost.values())


class OutboxWriter:
    """The one way into the outbox for the daemon's producers (see the module docstring)."""

    def __init__(
        self,
        outbox: Puts,
        *,
        max_held: int = HELD_RECORDS,
        monotonic: Callable[[], float] = time.monotonic,
        clock_us: Callable[[], int] = utc_now_us,
    ) -> None:
        if max_held < 1:
            raise ValueError(f"max_held must be >= 1, not {max_held}")
        self.outbox = outbox
        self.max_held = max_held
        self._clock_us = clock_us
        self.stats = WriterStats()
        self._held: deque[_Held] = deque()
        self._backoff = Backoff(RETRY_INITIAL_S, RETRY_MAX_S, jitter=0, clock=monotonic)
        self._losing = False  # the overflow warning was logged this episode
        self._lost_at_failure = 0
        self._attempts = 0  # failed attempts this episode

    def put(self, kind: str, records: list[dict[str, Any]], *, stream: str | None = None) -> None:
        """Store ``records`` now, or hold them until the outbox takes them again.

        ``stream`` is the outbox's (where data comes from, for its ``thin`` policy).
        """
        if not records:
            return
        if self.stats.failing:
            self._hold(kind, records, stream)
            self.retry()
            return
        try:
            self.outbox.put(kind, records, stream=stream)
        except OutboxError as exc:
            self._failed(exc)
            self._hold(kind, records, stream)
        except Exception as exc:  # not curable by retrying: these records are lost now
            self._give_up(kind, records, exc)

    def retry(self, *, now: bool = False) -> bool:
        """Write what is held, if a retry is due (or ``now``: the last chance at shutdown);
        True when nothing is held any more."""
        if not self.stats.failing:
            return True
        if self._backoff.remaining() > 0 and not now:
            return False
        while self._held:
            kind, records, stream = self._merged()
            try:
                self.outbox.put(kind, records, stream=stream)
            except OutboxError as exc:
                self._held.appendleft((kind, records, stream))
                self._failed(exc)
                return False
            except Exception as exc:
                self._give_up(kind, records, exc)
            self.stats.held_records -= len(records)
        self._recovered()
        return True

    def abandon(self) -> int:
        """At shutdown: count what is still held as lost (and log it); returns how many."""
        held = list(self._held)
        self._held.clear()
        self.stats.held_records = 0
        for kind, records, _ in held:
            self.stats.lost[kind] = self.stats.lost.get(kind, 0) + len(records)
        n = sum(len(records) for _, records, _ in held)
        if n:
            log.error("outbox still not writable at shutdown: %d held records are lost", n)
        return n

    def enforce_bounds(self) -> None:
        """The outbox's age bound, applied now; a failing write is reported like a put's."""
        try:
            self.outbox.enforce_bounds()
        except OutboxError as exc:
            if not self.stats.failing:
                self._failed(exc)

    # -- internals ------------------------------------------------------------------

    def _merged(self) -> _Held:
        kind, records, stream = self._held.popleft()
        records = list(records)
        while self._held and self._held[0][0] == kind and self._held[0][2] == stream:
            if len(records) + len(self._held[0][1]) > _MERGE_RECORDS:
                break
            records += self._held.popleft()[1]
        return kind, records, stream

    def _hold(self, kind: str, records: list[dict[str, Any]], stream: str | None) -> None:
        self._held.append((kind, records, stream))
        self.stats.held_records += len(records)
        while self.stats.held_records > self.max_held:
            victim = next((i for i, (k, _, _) in enumerate(self._held) if k == "data"), 0)
            lost_kind, lost, _ = self._held[victim]
            del self._held[victim]
            self.stats.held_records -= len(lost)
            self.stats.lost[lost_kind] = self.stats.lost.get(lost_kind, 0) + len(lost)
            if not self._losing:
                self._losing = True
                log.warning(
                    "outbox still not writable: %d records held in memory (the bound);"
                    " the oldest data is given up and counted as lost",
                    self.max_held,
                )

    def _failed(self, exc: OutboxError) -> None:
        st = self.stats
        st.failures += 1
        st.last_error = exc.message
        self._attempts += 1
        self._backoff.next_delay()
        if not st.failing:
            st.failing = True
            st.failing_since_us = self._clock_us()
            self._lost_at_failure = st.lost_records
            log.error(
                "outbox %s not writable: %s; holding records in memory (at most %d),"
                " retrying every %g-%g s",
                exc.path,
                exc.message,
                self.max_held,
                RETRY_INITIAL_S,
                RETRY_MAX_S,
            )
        else:
            log.debug("outbox %s still not writable: %s", exc.path, exc.message)

    def _recovered(self) -> None:
        st = self.stats
        now = self._clock_us()
        since = st.failing_since_us or now
        lost = st.lost_records - self._lost_at_failure
        log.info(
            "outbox writable again after %.1f s (%d failed attempts); held records stored, %d lost",
            (now - since) / 1e6,
            self._attempts,
            lost,
        )
        st.failing, st.failing_since_us = False, None
        self._backoff.reset()
        self._losing = False
        self._attempts = 0

    def _give_up(self, kind: str, records: list[dict[str, Any]], exc: Exception) -> None:
        self.stats.lost[kind] = self.stats.lost.get(kind, 0) + len(records)
        log.error("%d %s record(s) cannot be stored and are lost", len(records), kind,
                  exc_info=exc)  # fmt: skip
