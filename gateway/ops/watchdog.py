"""systemd watchdog: ping ``WATCHDOG=1`` only while the gateway's loops make progress.

A stuck process is worse than a dead one: systemd restarts a dead one. With
``WatchdogSec=`` set, :class:`Watchdog` pings every ``WatchdogSec/2`` — but only if

* every device poller started a poll recently: within ``max(3 × poll, 10 s)``, plus
  the longest back-off (60 s) while the device is failing, since a failing device
  is retried slowly on purpose and must not get the process restarted;
* ``alive()`` says the other long-lived tasks (the publisher) are running.

A hung loop therefore stops the pings and systemd restarts the service; a blocked
event loop stops them too, since this task cannot run either.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.acquisition.poller import BACKOFF_CAP_S
from gateway.ops.sdnotify import Notifier
from gateway.ops.view import PollersView

__all__ = ["FAILING_ALLOWANCE_S", "MIN_STALL_S", "Verdict", "Watchdog"]

log = logging.getLogger("metrogate.watchdog")

MIN_STALL_S = 10.0
"""A poller is stalled when it started no poll for max(3 × poll, this)."""
FAILING_ALLOWANCE_S = BACKOFF_CAP_S
"""Added for a failing device: the poller's back-off is capped at 60 s (or one period)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether the gateway is making progress, and if not, what is stuck."""

    healthy: bool
    stuck: tuple[str, ...] = ()


class Watchdog:
    """Feeds systemd's watchdog from the progress of a gateway's loops.

    ``monotonic`` must be the clock the pollers stamp ``progress_monotonic`` with;
    ``sleep`` is injectable so tests drive it without waiting on wall time.
    """

    def __init__(
        self,
        gateway: PollersView,
        notifier: Notifier,
        *,
        interval: float,
        alive: Callable[[], bool] = lambda: True,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"watchdog interval must be > 0, not {interval}")
        self.gateway = gateway
        self.notifier = notifier
        self.interval = interval
        self.alive = alive
        self._now = monotonic
        self._sleep = sleep
        self._was_healthy = True
        self.pings = 0

    def check(self) -> Verdict:
        """Judge progress now (pure apart from reading the clock)."""
        now = self._now()
        stuck: list[str] = []
        for dev_id, poller in self.gateway.pollers.items():
            h = poller.health
            limit = max(3.0 * float(poller.device.poll), MIN_STALL_S)
            if h.state == "failing":
                limit += FAILING_ALLOWANCE_S
            idle = now - h.progress_monotonic
            if idle > limit:
                stuck.append(f"device {dev_id}: no poll for {idle:.0f} s (limit {limit:.0f} s)")
        if not self.alive():
            stuck.append("publisher task not running")
        return Verdict(not stuck, tuple(stuck))

    def tick(self) -> Verdict:
        """One check; pings when healthy. Logs only when the verdict changes."""
        verdict = self.check()
        if verdict.healthy:
            self.notifier.watchdog()
            self.pings += 1
            if not self._was_healthy:
                log.warning("watchdog: progress resumed; pinging again")
        elif self._was_healthy:
            log.error(
                "watchdog: withholding pings, systemd will restart: %s", "; ".join(verdict.stuck)
            )
        self._was_healthy = verdict.healthy
        return verdict

    async def run(self) -> None:
        """Tick every ``interval`` seconds until cancelled."""
        while True:
            self.tick()
            await self._sleep(self.interval)
