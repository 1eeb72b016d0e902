"""Event-log entries into the outbox: logged means published, and no fsync on the loop.

The daemon's event log is opened without ``autocommit``: recording an entry only
*stages* it (numbered, chained, signed — microseconds, no I/O) and wakes the writer.
The writer (:meth:`EventFeed.run`) commits everything staged in a worker thread
— one ``write``, one ``fsync``, then the signed head — and, back on the event loop,
puts the committed entries into the outbox as one event batch before anything else
can run. An entry therefore enters the outbox in the step that makes it durable;
one that is durable in the log but not yet sealed when the process dies (a SIGKILL
between the two) is found at the next start by :meth:`EventFeed.recover`, which
compares the log's last entry number with the highest one the outbox sealed and
puts the difference. An entry is never published before it is durable in the log,
so the platform never holds an entry the log could lose to a power cut.

When the log is full (only its lifecycle room is left) an ordinary event is not
written: it is counted (:attr:`EventFeed.refused`), one ``event_log_full`` entry
says from when, and health degrades; the gateway keeps running. When the log
cannot be written (disk full, I/O error) the entries stay staged, the writer
retries every ``retry_s``, and health degrades until it succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from gateway.audit.eventlog import EventLog, EventLogFull, EventLogWriteError, EventType
from gateway.delivery.outbox import Outbox, OutboxError

__all__ = ["EventFeed"]

log = logging.getLogger("metrogate.events")

T = TypeVar("T")


class EventFeed:
    """The gateway's event log bound to its outbox (see the module docstring).

    Every method runs on the event loop's thread, except that the commit itself
    runs in a worker thread inside :meth:`run` and :meth:`durable`.
    """

    def __init__(self, eventlog: EventLog, outbox: Outbox, *, retry_s: float = 1.0) -> None:
        self.log = eventlog
        self.outbox = outbox
        self.retry_s = retry_s
        self.refused = 0  # events not written because the log is full
        self.changes_refused = 0  # parameter changes not recorded one by one (log full)
        self.write_error: str | None = None
        self._full_noted = False
        self._commit_lock = threading.Lock()
        self._committed: list[dict[str, Any]] = []  # durable in the log, not yet sealed
        self._wake = asyncio.Event()

    # -- recording -----------------------------------------------------------------

    def record(
        self, type_: str, data: dict[str, Any], *, source: str = "gateway"
    ) -> dict[str, Any] | None:
        """Stage one entry and wake the writer; None when the log is full (counted)."""
        return self.stage(lambda: self.log.append(type_, data, source=source))

    def stage(self, write: Callable[[], T]) -> T | None:
        """Run ``write`` (an :class:`EventLog` method that stages entries) and wake the
        writer. :class:`EventLogFull` is counted and noted once, never raised."""
        try:
            result = write()
        except EventLogFull as exc:
            self._refused(exc)
            return None
        finally:
            self._wake.set()
        return result

    def _refused(self, exc: EventLogFull) -> None:
        self.refused += 1
        if self._full_noted:
            return
        self._full_noted = True
        log.error("%s; further events are counted, not written", exc)
        data = {"entries": self.log.counter, "max_entries": self.log.max_entries}
        # when not even the lifecycle room is left, the count and health say it
        with contextlib.suppress(EventLogFull):
            self.log.append(EventType.EVENT_LOG_FULL, data, source="eventlog")

    # -- writing -------------------------------------------------------------------

    def _commit(self) -> None:
        """Commit what is staged; the entries join the queue to seal, in order (any thread)."""
        with self._commit_lock:
            self._committed += self.log.commit()

    def _seal(self) -> None:
        """Put the committed entries into the outbox, one event batch (loop thread)."""
        if not self._committed:
            return
        entries, self._committed = self._committed, []
        try:
            self.outbox.put("event", entries)
        except ValueError:
            self._seal_one_by_one(entries)
        except (OutboxError, OSError):
            self._committed[:0] = entries  # retried; recover() covers a crash meanwhile
            raise

    def _seal_one_by_one(self, entries: list[dict[str, Any]]) -> None:
        """Seal each entry alone: one too large for any batch stays in the log only."""
        for i, entry in enumerate(entries):
            try:
                self.outbox.put("event", [entry])
            except ValueError as exc:
                log.error("event-log entry %s is not published: %s", entry.get("n"), exc)
            except (OutboxError, OSError):
                self._committed[:0] = entries[i:]
                raise

    def flush(self) -> None:
        """Commit and seal now, on the caller's thread (start-up and shutdown).

        Raises :class:`EventLogWriteError` or :class:`OutboxError` when that fails;
        what could not be written or sealed is kept for the next attempt.
        """
        self._commit()
        self._seal()

    async def durable(self) -> None:
        """Wait until everything staged so far is in the log and the outbox."""
        await asyncio.to_thread(self._commit)
        self._seal()

    async def run(self) -> None:
        """The writer: commit off the loop whenever something was staged; forever."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.durable()
            except (EventLogWriteError, OutboxError, OSError) as exc:
                if self.write_error is None:
                    log.error("event log not written (%s); retrying every %ss", exc, self.retry_s)
                self.write_error = str(exc)
                await asyncio.sleep(self.retry_s)
                self._wake.set()
                continue
            if self.write_error is not None:
                log.info("event log written again")
                self.write_error = None

    # -- start-up ------------------------------------------------------------------

    def reconcile_at_start(self, current: bytes | dict[str, Any], *, source: str) -> None:
        """Log the parameter changes since the last run; a full log does not stop the start.

        The gateway cannot run the old parameters, so when the changes do not fit it
        runs the new ones and says so: one ``parameter_changes_refused`` entry (count
        and the first changes), :attr:`changes_refused` for health, an error line.
        """
        try:
            self.log.reconcile_parameters(current, source=source)
        except EventLogFull:
            refused = self.stage(lambda: self.log.refuse_parameter_changes(current, source=source))
            self.changes_refused = refused[0]["data"]["count"] if refused else 1
            log.error(
                "event log full: %d parameter change(s) are not recorded one by one; "
                "archive the log (metrogate audit reinit)",
                self.changes_refused,
            )
        finally:
            self._wake.set()

    def recover(self) -> int:
        """Seal the entries a previous run logged but did not seal; returns how many.

        The outbox knows the highest entry number it sealed; when it does not (a
        file from an older version) everything logged is taken as sealed. A log whose
        numbers went back (re-initialised without a previous head) is sealed whole.
        """
        sealed = self.outbox.last_event_n
        last = self.log.counter
        if sealed is None or sealed == last:
            return 0
        missing = self.log.entries_after(0 if sealed > last else sealed)
        if missing:
            log.warning(
                "%d event-log entries (%d..%d) were not sealed for publishing; sealing them now",
                len(missing),
                missing[0]["n"],
                missing[-1]["n"],
            )
            self.outbox.put("event", missing)
        return len(missing)

    # -- observation (gateway.ops.view.EventsView) ----------------------------------

    @property
    def entries(self) -> int:
        return self.log.counter

    @property
    def max_entries(self) -> int:
        return self.log.max_entries

    @property
    def full(self) -> bool:
        return self.log.full

    @property
    def parameter_changes_allowed(self) -> bool:
        return self.log.parameter_changes_allowed

    @property
    def pending(self) -> int:
        """Entries staged or committed but not yet sealed into the outbox."""
        return self.log.pending + len(self._committed)
