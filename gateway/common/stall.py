"""How long the event loop stalls: the lateness of a periodic timer.

Everything of a gateway (every device, the publisher, the ops endpoint) shares one
event loop, so any call that blocks it delays all of them. :class:`StallMonitor`
schedules a timer every ``interval`` seconds and records how late each one fires:
a loop that is free fires it within about a millisecond (the selector's timeout
granularity); a loop busy in one long call fires it only when the call returns.

Each measurement is a lower bound of the stall that caused it, short of it by at
most ``interval`` (a stall that began just after a timer fired shows from the next
due time on); stalls shorter than ``interval`` may go unseen (one of length ``L`` is
seen with a chance of ``L / interval``, so over a minute the recurring ones show). The
timer is a plain ``call_at`` callback, not a task, but waking an otherwise idle
process is not free: at 20 ms it cost an idle gateway 0.7–0.8 % of a core, as much as
all the rest (bench_footprint.py, 20 devices at 1 s: 1.48 % against 0.72 % at
100 ms), so the daemon samples every 100 ms; a benchmark takes 1 ms.

It lives in the shared base so the ingest can use it too.
"""

from __future__ import annotations

import asyncio
import bisect
from dataclasses import dataclass, field
from typing import Final

__all__ = ["LATENESS_BUCKETS", "STALL_S", "StallMonitor", "StallStats"]

STALL_S = 0.05
"""A timer later than this counts as a stall (:attr:`StallStats.stalls`)."""
LATENESS_BUCKETS: Final = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
"""Upper bounds (s) of :attr:`StallStats.counts` (a last bucket holds what is later)."""


@dataclass
class StallStats:
    """Since the monitor started: the longest lateness, the last one, and stalls counted."""

    max_s: float = 0.0
    last_s: float = 0.0
    stalls: int = 0
    """Timers later than the threshold (:data:`STALL_S` unless given)."""
    ticks: int = 0
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENESS_BUCKETS) + 1))
    """Timers per lateness bucket (:data:`LATENESS_BUCKETS`, then one for the rest): a
    reader that takes two snapshots sees the longest stall between them."""
    total_s: float = 0.0


class StallMonitor:
    """Measures event-loop stalls while :meth:`run` runs (see the module docstring)."""

    def __init__(self, interval: float = 0.1, *, threshold: float = STALL_S) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0, not {interval}")
        self.interval = interval
        self.threshold = threshold
        self.stats = StallStats()
        self._due = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        """Measure until cancelled."""
        loop = self._loop = asyncio.get_running_loop()
        self._due = loop.time() + self.interval
        self._handle = loop.call_at(self._due, self._tick)
        try:
            await asyncio.Event().wait()  # unbounded on purpose: runs as long as the loop
        finally:
            if self._handle is not None:
                self._handle.cancel()
                self._handle = None

    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        late = max(0.0, now - self._due)
        st = self.stats
        st.ticks += 1
        st.last_s = late
        st.total_s += late
        st.counts[bisect.bisect_left(LATENESS_BUCKETS, late)] += 1
        if late > st.max_s:
            st.max_s = late
        if late >= self.threshold:
            st.stalls += 1
        self._due = now + self.interval  # from now: a stall is counted once, not caught up
        self._handle = loop.call_at(self._due, self._tick)
