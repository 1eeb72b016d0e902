"""One device's loop: poll on a fixed-rate schedule, build readings, judge them, emit them.

Each enabled device gets its own :class:`DevicePoller` task that polls on the
monotonic clock, turns samples into readings, runs calibration and rules (plain
function calls), and hands the result to ``emit`` — the daemon's outbox put. No
waiting on the network; a failing device backs off with jitter and never delays
another device. While ``active()`` says no (the daemon's outbox is nearly full and
the device is not critical), the poller skips its slots, counting them as paused.
Instrument identity and tamper counters (the points the device's
driver kind declares as evidence) go to the audit trail through the
``on_identity``/``on_tamper`` callbacks when they change.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from drivers.backoff import Backoff
from drivers.base import Clock, Driver, DriverError, Quality, utc_now_us
from drivers.cancel import reraise_pending_cancel
from gateway.acquisition.clock import flag_if_unsynchronised
from gateway.config.models.registry import KINDS
from gateway.metrology.pipeline import DeviceMetrology
from gateway.wire.reading import Reading, to_wire

log = logging.getLogger("metrogate.runtime")

Emit = Callable[[str, list[dict[str, Any]]], object]

BACKOFF_CAP_S = 60.0
"""Longest wait of a failing device whose poll period is shorter (docs/architecture.md)."""


def next_deadline(scheduled: float, now: float, period: float) -> tuple[float, int]:
    """The next poll slot after ``scheduled`` on a fixed-rate grid, and slots missed.

    Slots that already passed are skipped, not made up in a burst: a poll that
    overran (or a stalled loop) costs the slots it overlapped, counted as missed.
    """
    nxt = scheduled + period
    if nxt >= now:
        return nxt, 0
    missed = math.floor((now - nxt) / period) + 1
    return nxt + missed * period, missed


@dataclass
class DeviceHealth:
    """What health, metrics and ``status`` show per device."""

    id: str
    driver: str
    endpoint: str
    state: str = "starting"
    polls: int = 0
    failures: int = 0
    missed: int = 0
    paused: int = 0  # poll slots skipped because ``active()`` said no
    readings: int = 0
    requests_per_poll: int = 0
    last_ok_us: int | None = None
    last_error: str | None = None
    last_duration_s: float | None = None
    progress_monotonic: float = field(default_factory=time.monotonic)
    quality: dict[str, int] = field(default_factory=dict)  # readings by quality, for metrics


class DevicePoller:
    """One device's loop: poll, build readings, apply metrology, put into the outbox."""

    def __init__(
        self,
        device: Any,
        driver: Driver,
        metrology: DeviceMetrology,
        emit: Emit,
        *,
        clock: Clock = utc_now_us,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        synchronised: Callable[[], bool] = lambda: True,
        on_alarm_change: Callable[[str], None] | None = None,
        on_identity: Callable[[str, dict[str, str]], None] | None = None,
        on_tamper: Callable[[str, dict[str, int]], None] | None = None,
        rng: random.Random | None = None,
        active: Callable[[], bool] = lambda: True,
    ) -> None:
        self.device = device
        self.driver = driver
        self.metrology = metrology
        self.emit = emit
        self.clock = clock
        self.monotonic = monotonic
        self.sleep = sleep
        self.synchronised = synchronised
        self.on_alarm_change = on_alarm_change
        self.on_identity = on_identity
        self.on_tamper = on_tamper
        self.active = active
        self.tamper_points = KINDS[device.driver].evidence(device)
        self._identity: dict[str, str] = {}
        self._tamper: dict[str, int] = {}  # the counters last handed to ``on_tamper``
        self.units = {str(p.id): getattr(p, "unit", None) for p in getattr(device, "points", [])}
        self.health = DeviceHealth(device.id, device.driver, driver.endpoint)
        self.health.requests_per_poll = len(driver.describe_plan())
        # after a failed poll: jittered, doubling from one period (≥ 0.5 s) up to 60 s
        # (or the period, when that is longer); the schedule then rejoins the grid
        period = float(device.poll)
        self._backoff = Backoff(
            max(period, 0.5), max(period, BACKOFF_CAP_S), rng=rng, clock=monotonic
        )

    async def run(self) -> None:
        """Poll forever (until cancelled)."""
        period = float(self.device.poll)
        scheduled = self.monotonic()
        while True:
            started = self.monotonic()
            self.health.progress_monotonic = started
            if self.active():
                await self.poll_once()
            else:
                self.health.paused += 1
            reraise_pending_cancel()
            self.health.last_duration_s = self.monotonic() - started
            now = self.monotonic()
            failing = self._backoff.failures > 0
            if failing:
                now += self._backoff.delay
            scheduled, missed = next_deadline(scheduled, now, period)
            if not failing:
                self.health.missed += missed
            await self.sleep(max(0.0, scheduled - self.monotonic()))

    async def poll_once(self) -> list[Reading]:
        """One poll, whatever happens to it; returns the readings put into the outbox."""
        dev = self.device
        try:
            samples = await self.driver.read()
        except DriverError as exc:
            self._failed(exc)
            now = self.clock()
            readings = [
                Reading(now, dev.id, pid, None, None, unit, Quality.BAD, exc.reason)
                for pid, unit in self.units.items()
            ]
        else:
            self._succeeded()
            readings = [Reading.from_sample(dev.id, s, self.units.get(s.point)) for s in samples]
            self._evidence(readings)
        if not self.synchronised():
            for r in readings:
                flag_if_unsynchronised(r, False)
        alarms = self.metrology.process(readings, self.clock())
        self.health.polls += 1
        self.health.readings += len(readings)
        if readings:
            by_quality = self.health.quality
            wire = []
            for r in readings:  # one pass: wire form and the per-quality count
                by_quality[r.quality.value] = by_quality.get(r.quality.value, 0) + 1
                wire.append(to_wire(r))
            self.emit("data", wire)
        if alarms:
            self.emit("alarm", alarms)
            if self.on_alarm_change is not None:
                self.on_alarm_change(dev.id)
        return readings

    def _evidence(self, readings: list[Reading]) -> None:
        """Instrument identity and tamper counters go to the audit trail when they change.

        Called after each successful read. The callbacks (which write the event log)
        fire only when the identity or a counter differs from what was last handed
        over, so an unchanged poll costs two comparisons and no I/O. A counter that
        was not read well this poll keeps its last value: a failed read is no change.
        """
        identity = self.driver.identity()
        if identity and identity != self._identity and self.on_identity is not None:
            self._identity = dict(identity)
            self.on_identity(self.device.id, dict(identity))
        if self.tamper_points and self.on_tamper is not None:
            counters = dict(self._tamper)
            for r in readings:
                if (
                    r.point in self.tamper_points
                    and r.quality is Quality.GOOD
                    and isinstance(r.value, int | float)
                ):
                    counters[r.point] = int(r.value)
            if counters != self._tamper:
                self._tamper = counters
                self.on_tamper(self.device.id, dict(counters))

    def _failed(self, exc: DriverError) -> None:
        self._backoff.next_delay()
        self.health.failures += 1
        self.health.last_error = exc.message
        if self.health.state != "failing":
            log.error("device %s failing: %s", self.device.id, exc)
            self.health.state = "failing"
        else:
            log.debug("device %s still failing: %s", self.device.id, exc)

    def _succeeded(self) -> None:
        if self.health.state == "failing":
            log.info(
                "device %s recovered after %d failed polls", self.device.id, self._backoff.failures
            )
        self.health.state = "ok"
        self._backoff.reset()
        self.health.last_ok_us = self.clock()
