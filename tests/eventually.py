"""Wait for a condition in a test: the one way tests wait, instead of sleeping blindly.

``await eventually(condition, "what")`` in async code, ``eventually_blocking(condition,
"what")`` where no event loop runs (sync tests, fixtures, service start-up, benches).
Both follow one contract, implemented once (:class:`_Deadline`):

* ``condition`` is called until it returns true; it may be a plain function or an
  async one (the awaitable it returns is awaited; async code only). A condition that
  blocks (an HTTP or SQL query) runs in a worker thread with ``thread=True``, so the
  event loop — and whatever the test runs on it — keeps going.
* Between checks it sleeps ``interval`` (small: 20 ms by default), never past the
  deadline.
* It is bounded by ``within`` seconds; a check that *starts* after the deadline is always
  made before failing, so a condition that became true during the last sleep passes.
* It fails with :class:`AssertionError` naming what was awaited and for how long. An
  exception raised by the condition propagates at once (fail fast: a process that
  died will not come back).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

__all__ = ["eventually", "eventually_blocking"]

Condition = Callable[[], object | Awaitable[object]]

INTERVAL = 0.02
"""Seconds between two checks."""


class _Deadline:
    """The schedule of one wait: when the next check comes, and when to give up."""

    def __init__(self, within: float, interval: float, what: str) -> None:
        if not (within >= 0 and interval > 0):
            raise ValueError(
                f"eventually: within {within} must be ≥ 0 s and interval {interval} > 0 s"
            )
        self.within, self.interval, self.what = within, interval, what
        self.deadline = time.monotonic() + within
        self.checks = 0
        self._started = 0.0

    def check_starts(self) -> None:
        self.checks += 1
        self._started = time.monotonic()

    def pause(self) -> float:
        """After a failed check: the sleep before the next, or AssertionError when the
        check that failed started at or after the deadline (so it is never skipped)."""
        if self._started >= self.deadline:
            raise AssertionError(
                f"timed out after {self.within:g} s waiting for {self.what} ({self.checks} checks)"
            )
        return max(0.0, min(self.interval, self.deadline - time.monotonic()))


async def eventually(
    condition: Condition,
    what: str,
    *,
    within: float = 10.0,
    interval: float = INTERVAL,
    thread: bool = False,
) -> None:
    """Return once ``condition()`` is true; AssertionError after ``within`` seconds.

    ``thread=True`` runs a blocking plain ``condition`` in a worker thread.
    """
    deadline = _Deadline(within, interval, what)
    while True:
        deadline.check_starts()
        result = await asyncio.to_thread(condition) if thread else condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        await asyncio.sleep(deadline.pause())


def eventually_blocking(
    condition: Callable[[], object],
    what: str,
    *,
    within: float = 10.0,
    interval: float = INTERVAL,
) -> None:
    """:func:`eventually` for code without an event loop: sleeps in this thread."""
    deadline = _Deadline(within, interval, what)
    while True:
        deadline.check_starts()
        result = condition()
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()  # never awaited, on purpose
            raise TypeError(f"eventually_blocking: {what}: an async condition needs eventually()")
        if result:
            return
        time.sleep(deadline.pause())
