"""How long the event loop stalls: a task that sleeps a short interval and measures how
late it wakes.

Every device task, the publisher and the ops endpoint share one asyncio thread, so a
callback that runs long delays them all. :class:`LoopLag` wakes every ``interval``
seconds (100 ms: ten wake-ups a second, tens of µs each) and records how much later than
asked it woke: that lag is the part of a stall that overlapped the wake-up, so over
many samples its maximum approaches the longest stall. It keeps a histogram
(``metrogate_event_loop_lag_seconds``) and the longest lag of the last minute
(``metrogate_event_loop_lag_max_seconds``), both read at scrape time.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final

__all__ = ["LAG_BUCKETS", "LoopLag"]

LAG_BUCKETS: Final = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
"""Histogram bucket bounds in seconds (the 5 ms target among them)."""


class LoopLag:
    """Samples the event loop's lag until cancelled (see the module docstring)."""

    def __init__(
        self,
        interval: float = 0.1,
        *,
        window: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.interval = interval
        self.window = window
        self._monotonic = monotonic
        self._sleep = sleep
        self.counts = [0] * (len(LAG_BUCKETS) + 1)  # per bucket, the last one is +Inf
        self.total = 0.0
        self.samples = 0
        self.max_since_start = 0.0
        self._recent: deque[tuple[float, float]] = deque()  # (at, lag), lags decreasing

    async def run(self) -> None:
        while True:
            due = self._monotonic() + self.interval
            await self._sleep(self.interval)
            now = self._monotonic()
            self.record(max(0.0, now - due), now)

    def record(self, lag: float, now: float) -> None:
        """Count one sample of ``lag`` seconds taken at ``now``."""
        i = 0
        while i < len(LAG_BUCKETS) and lag > LAG_BUCKETS[i]:
            i += 1
        self.counts[i] += 1
        self.total += lag
        self.samples += 1
        self.max_since_start = max(self.max_since_start, lag)
        recent = self._recent
        while recent and recent[-1][1] <= lag:
            recent.pop()  # a smaller lag before a larger one can never be the maximum
        recent.append((now, lag))
        self._expire(now)

    def recent_max(self, now: float | None = None) -> float:
        """The longest lag sampled within the last ``window`` seconds (0 when none)."""
        self._expire(self._monotonic() if now is None else now)
        return self._recent[0][1] if self._recent else 0.0

    def _expire(self, now: float) -> None:
        while self._recent and self._recent[0][0] < now - self.window:
            self._recent.popleft()
