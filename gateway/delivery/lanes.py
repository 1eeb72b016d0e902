"""Which stored batch goes out next: alarms and events, then live data, then the backlog.

For one broker connection, :class:`Lanes` splits the outbox into three lanes:

* **urgent**: alarm and event batches, whatever their age, oldest first. Never paced.
* **live**: data batches sealed since the connection started (``seq >= live_from``),
  oldest first.
* **backlog**: data batches sealed before it (``seq < live_from``), oldest first, with
  what the other two leave: at most ``drain_rate`` batches per second when that is set
  (``mqtt.drain_rate``), and at most ``backlog_window`` of them awaiting their PUBACK at
  once, so that a live batch or an alarm never queues behind a window full of backlog.

:meth:`Lanes.next` always looks at the urgent lane first, then the live one, then the
backlog. Each lane keeps sequence order; between lanes a newer batch overtakes older
ones. A receiver therefore sees each device's live data in order, the backlog in order,
and the backlog filling the sequence gap that live data opened (docs/wire.md).

The lanes read the outbox without changing it (settling is the publisher's), prefetch a
few rows per lane, and look at the outbox again only when it holds something newer than
what they fetched (:attr:`Outbox.last_urgent_seq`, :attr:`Outbox.last_data_seq`) or
after it dropped batches (prefetched rows may be gone then).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Collection
from enum import StrEnum
from typing import Final

from gateway.delivery.outbox import Outbox, Sealed

__all__ = ["Lane", "Lanes"]

PREFETCH: Final = 32
"""Rows read per lane and query."""


class Lane(StrEnum):
    URGENT = "urgent"
    LIVE = "live"
    BACKLOG = "backlog"


class Lanes:
    """The order in which one connection publishes the outbox (see the module docstring).

    ``live_from`` is the outbox's ``next_seq`` when the connection started. Call
    :meth:`next` for the batch to publish when a slot in the PUBACK window is free,
    :meth:`sent` when a publish from it has finished (acknowledged or failed), and
    :meth:`wait` when :meth:`next` had nothing.
    """

    def __init__(
        self,
        outbox: Outbox,
        *,
        live_from: int,
        drain_rate: float | None = None,
        backlog_window: int = 1,
        prefetch: int = PREFETCH,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if drain_rate is not None and drain_rate <= 0:
            raise ValueError(f"drain_rate must be > 0, not {drain_rate}")
        if backlog_window < 1 or prefetch < 1:
            raise ValueError("backlog_window and prefetch must be >= 1")
        self._outbox = outbox
        self.live_from = live_from
        self._interval = None if drain_rate is None else 1.0 / drain_rate
        self._window = backlog_window
        self._prefetch = prefetch
        self._monotonic = monotonic
        # the last seq handed out per lane, and the highest one read into its buffer
        self._cursor = {Lane.URGENT: 0, Lane.LIVE: live_from - 1, Lane.BACKLOG: 0}
        self._fetched = dict(self._cursor)
        self._buffer: dict[Lane, deque[Sealed]] = {lane: deque() for lane in Lane}
        self._backlog_done = live_from <= 1
        self._backlog_inflight = 0
        self._next_slot = monotonic()
        self._drops = outbox.dropped_batches
        self._waiter: asyncio.Future[None] | None = None
        self._skipped: int | None = None  # the lowest seq passed over by ``skip``
        self.handed: dict[Lane, int] = dict.fromkeys(Lane, 0)
        """Batches handed out per lane (for tests and the log)."""

    @property
    def backlog_done(self) -> bool:
        """True once every batch sealed before ``live_from`` has been handed out."""
        return self._backlog_done and not self._buffer[Lane.BACKLOG]

    def next(self, skip: Collection[str] = ()) -> tuple[Lane, Sealed] | None:
        """The batch to publish now and its lane, or None when nothing may go now.

        Batches of the kinds in ``skip`` (those the broker refuses for now) are passed
        over and left in the outbox; :meth:`rewind` offers them again.
        """
        if self._outbox.dropped_batches != self._drops:
            self._forget_prefetched()
        for lane in (Lane.URGENT, Lane.LIVE):
            row = self._pop(lane, skip)
            if row is not None:
                return lane, row
        if self._backlog_inflight >= self._window or self._pacer_wait() > 0:
            return None
        row = self._pop(Lane.BACKLOG, skip)
        if row is None:
            return None
        self._backlog_inflight += 1
        if self._interval is not None:
            # a slot taken a little late does not delay the next one (no drift below the
            # rate), an idle pacer does not save slots up (no burst above it)
            now = self._monotonic()
            self._next_slot = max(self._next_slot, now - self._interval) + self._interval
        return Lane.BACKLOG, row

    def sent(self, lane: Lane) -> None:
        """A publish of a batch from ``lane`` finished (acknowledged or not)."""
        if lane is Lane.BACKLOG:
            self._backlog_inflight -= 1
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109 - the caller's idle deadline
        """Wait until something may be sendable: a put, a backlog slot freed by
        :meth:`sent`, the pacer's next slot for the backlog, or ``timeout`` seconds."""
        if not self._backlog_done and self._backlog_inflight < self._window:
            pace = self._pacer_wait()
            if pace > 0:
                timeout = min(timeout, pace)
        put = self._outbox.next_put()
        self._waiter = freed = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait(
                (put, freed), timeout=max(timeout, 0.0), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            self._waiter = None
            put.cancel()
            freed.cancel()

    def _pacer_wait(self) -> float:
        """Seconds until ``drain_rate`` lets the next backlog batch go (0: now)."""
        if self._interval is None:
            return 0.0
        return max(0.0, self._next_slot - self._monotonic())

    def rewind(self, first: int | None) -> None:
        """Offer again every batch from ``first`` on and every batch passed over since
        the last rewind (the publisher settles what was acknowledged before calling)."""
        if self._skipped is not None:
            first = self._skipped if first is None else min(first, self._skipped)
        self._skipped = None
        if first is None:
            return
        floor = {Lane.URGENT: 0, Lane.LIVE: self.live_from - 1, Lane.BACKLOG: 0}
        for lane in Lane:
            self._buffer[lane].clear()
            self._cursor[lane] = max(floor[lane], min(self._cursor[lane], first - 1))
            self._fetched[lane] = self._cursor[lane]
        if first < self.live_from:
            self._backlog_done = False

    def _pop(self, lane: Lane, skip: Collection[str]) -> Sealed | None:
        buffer = self._buffer[lane]
        while True:
            if not buffer:
                self._fill(lane)
                if not buffer:
                    return None
            row = buffer.popleft()
            self._cursor[lane] = row.seq
            if row.kind not in skip:
                self.handed[lane] += 1
                return row
            if self._skipped is None or row.seq < self._skipped:
                self._skipped = row.seq

    def _fill(self, lane: Lane) -> None:
        after = self._fetched[lane]
        ob = self._outbox
        if lane is Lane.URGENT:
            last = ob.last_urgent_seq
            rows = ob.take_urgent(self._prefetch, after) if last > after else []
        elif lane is Lane.LIVE:
            last = ob.last_data_seq
            rows = ob.take_data(self._prefetch, after) if last > after else []
        else:
            if self._backlog_done:
                return
            last = self.live_from - 1
            rows = ob.take_data(self._prefetch, after, before_seq=self.live_from)
            if not rows:
                self._backlog_done = True
        self._buffer[lane].extend(rows)
        # fewer rows than asked for: everything up to the lane's newest seq has been read
        self._fetched[lane] = rows[-1].seq if len(rows) == self._prefetch else max(after, last)

    def _forget_prefetched(self) -> None:
        """The outbox dropped batches: prefetched rows may be among them, read again."""
        self._drops = self._outbox.dropped_batches
        if self._buffer[Lane.BACKLOG]:
            self._backlog_done = False  # what the buffer held is read again
        for lane in Lane:
            self._buffer[lane].clear()
            self._fetched[lane] = self._cursor[lane]
