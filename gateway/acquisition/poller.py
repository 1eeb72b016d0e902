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

Containment. Whatever goes wrong in one poll costs that device's poll only, never
the gateway (the task must not end: its TaskGroup would take every device down).
Each stage is guarded: ``read`` (the driver), ``decode`` (samples → readings),
``evidence`` (the audit callbacks), ``judge`` (calibration and rules) and ``store``
(``emit``). A :class:`~drivers.base.DriverError` is the expected failure of a
device; any other exception is unexpected (a reply no parser foresaw, a bug) and is
contained the same way:

* read or decode fails: the poll yields one bad reading per configured point, with
  the error's reason (``device_failure`` for an unexpected exception), and the
  device backs off;
* judging fails: the poll's readings go out bad with ``config_error`` (its
  calibration or rules could not be applied; the raw values are kept) and no alarm
  changes are sent for that poll;
* storing fails: the readings are counted in ``DeviceHealth.lost``;
* an audit callback fails: the readings go out; the identity or counters are
  offered again next poll.

A failing device is logged once, as an error (with the traceback of an unexpected
exception, once per distinct stage and exception type), then at debug level while
it keeps failing, and one "recovered" line when a poll goes through every stage
again. ``DeviceHealth`` carries the state, the last error and unexpected
exceptions by stage, for ``/health`` and ``/metrics``.
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
from drivers.base import Clock, Driver, DriverError, Quality, Reason, utc_now_us
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
    exceptions: dict[str, int] = field(default_factory=dict)
    """Unexpected exceptions contained, by stage (read, decode, evidence, judge, store)."""
    lost: int = 0
    """Readings that could not be handed to the outbox (the store stage failed)."""


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
        self._reported: set[tuple[str, str]] = set()  # (stage, exception type) logged this episode
        self._failed_polls = 0
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
        """Poll forever (until cancelled); no failure of a poll ends this task."""
        period = float(self.device.poll)
        scheduled = self.monotonic()
        while True:
            started = self.monotonic()
            self.health.progress_monotonic = started
            if not self.active():
                self.health.paused += 1
            else:
                try:
                    await self.poll_once()
                except Exception as exc:  # poll_once contains its stages; the last guard
                    self._read_failed()
                    self._settle(*self._exception("poll", exc))
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
        """One poll, whatever happens to it; returns the readings put into the outbox.

        Never raises but :class:`asyncio.CancelledError` (see the module docstring).
        """
        dev = self.device
        failure: list[tuple[str, BaseException]] = []  # the first is the poll's problem
        try:
            samples = await self.driver.read()
        except DriverError as exc:
            failure.append((exc.message, exc))
            self._read_failed()
            readings = self._bad(exc.reason)
        except Exception as exc:
            failure.append(self._exception("read", exc))
            self._read_failed()
            readings = self._bad(Reason.DEVICE_FAILURE)
        else:
            try:
                readings = [
                    Reading.from_sample(dev.id, s, self.units.get(s.point)) for s in samples
                ]
            except Exception as exc:  # a driver handed over something that is not a sample
                failure.append(self._exception("decode", exc))
                self._read_failed()
                readings = self._bad(Reason.DEVICE_FAILURE)
            else:
                self._backoff.reset()
                try:
                    self._evidence(readings)
                except Exception as exc:
                    failure.append(self._exception("evidence", exc))
        if not self.synchronised():
            for r in readings:
                flag_if_unsynchronised(r, False)
        try:
            alarms = self.metrology.process(readings, self.clock())
        except Exception as exc:
            failure.append(self._exception("judge", exc))
            alarms = []
            for r in readings:  # half-judged values are no evidence: keep only the raw value
                r.value = r.uncertainty = r.coverage = r.verdict = None
                r.degrade(Quality.BAD, Reason.CONFIG_ERROR)
        self.health.polls += 1
        self.health.readings += len(readings)
        try:
            self._store_readings(readings)
        except Exception as exc:
            failure.append(self._exception("store", exc))
            self.health.lost += len(readings)
        if alarms:
            try:
                self.emit("alarm", alarms)
                if self.on_alarm_change is not None:
                    self.on_alarm_change(dev.id)
            except Exception as exc:
                failure.append(self._exception("store", exc))
        self._settle(*(failure[0] if failure else (None, None)))
        failure.clear()  # an exception's traceback holds this frame: no cycle through it
        return readings

    def _bad(self, reason: Reason) -> list[Reading]:
        """One bad reading per configured point: what a poll that read nothing yields."""
        now = self.clock()
        dev_id = self.device.id
        return [
            Reading(now, dev_id, pid, None, None, unit, Quality.BAD, reason)
            for pid, unit in self.units.items()
        ]

    def _store_readings(self, readings: list[Reading]) -> None:
        if readings:
            by_quality = self.health.quality
            wire = [to_wire(r) for r in readings]
            for d in wire:  # the per-quality count, by the wire's string (no enum hashing)
                q = d["quality"]
                by_quality[q] = by_quality.get(q, 0) + 1
            self.emit("data", wire)

    def _evidence(self, readings: list[Reading]) -> None:
        """Instrument identity and tamper counters go to the audit trail when they change.

        Called after each successful read. The callbacks (which write the event log)
        fire only when the identity or a counter differs from what was last handed
        over, so an unchanged poll costs two comparisons and no I/O. A counter that
        was not read well this poll keeps its last value: a failed read is no change.
        """
        identity = self.driver.identity()
        if identity and identity != self._identity and self.on_identity is not None:
            self.on_identity(self.device.id, dict(identity))
            self._identity = dict(identity)  # only once handed over: a failed call is retried
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
                self.on_tamper(self.device.id, dict(counters))
                self._tamper = counters

    def _read_failed(self) -> None:
        """Nothing usable was read: count it and back off."""
        self._backoff.next_delay()
        self.health.failures += 1

    def _exception(self, stage: str, exc: Exception) -> tuple[str, Exception]:
        """Count an unexpected exception, log its traceback once per kind and episode;
        returns the poll's problem as ``(text, exception)``."""
        counts = self.health.exceptions
        counts[stage] = counts.get(stage, 0) + 1
        key = (stage, type(exc).__qualname__)
        if key not in self._reported:
            self._reported.add(key)
            log.error(
                "device %s at %s: unexpected %s in %s; contained to this device",
                self.device.id,
                self.driver.endpoint,
                type(exc).__name__,
                stage,
                exc_info=exc,
            )
        return f"{stage}: {_describe(exc)}", exc

    def _settle(self, problem: str | None, cause: BaseException | None) -> None:
        """The poll's outcome: the state, and one log line per change of it."""
        h = self.health
        dev_id = self.device.id
        if problem is not None:
            h.last_error = problem
            self._failed_polls += 1
            if h.state != "failing":
                h.state = "failing"
                # an unexpected exception was logged, with its traceback, where it was caught
                if isinstance(cause, DriverError):  # as text: a kept record keeps no frames
                    log.error("device %s failing: %s", dev_id, str(cause))
            else:
                log.debug("device %s still failing: %s", dev_id, problem)
            return
        if h.state == "failing":
            log.info("device %s recovered after %d failed polls", dev_id, self._failed_polls)
            self._reported.clear()
        h.state = "ok"
        self._failed_polls = 0
        h.last_ok_us = self.clock()


def _describe(exc: BaseException) -> str:
    """``TypeName: message`` of an unexpected exception (for ``last_error``)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
