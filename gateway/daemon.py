"""The running gateway: device tasks, the publisher, and housekeeping, in one TaskGroup.

Each enabled device gets its own task that polls on a fixed-rate schedule of the
monotonic clock, turns samples into readings, runs calibration and rules, and puts
the result into the outbox — plain function calls, no waiting on the network. The
publisher is the only consumer of the outbox. A failing device backs off with
jitter and never delays another device.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import json
import logging
import math
import os
import random
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

from drivers.base import Clock, Driver, DriverError, Quality, reraise_pending_cancel, utc_now_us
from gateway.acquisition.build import build_drivers
from gateway.acquisition.clock import ClockJump, ClockMonitor, flag_if_unsynchronised
from gateway.audit.eventlog import EventLog, EventLogFull, canonical_parameters
from gateway.audit.software_id import SoftwareId, compute_software_id
from gateway.config.loader import LoadedConfig
from gateway.config.schema import Config
from gateway.delivery.outbox import DropReport, Outbox
from gateway.delivery.publisher import Publisher
from gateway.metrology.pipeline import DeviceMetrology
from gateway.ops.health import OpsServer, gateway_ops_server
from gateway.ops.reload import Reloaded, watch_sighup
from gateway.ops.sdnotify import Notifier
from gateway.ops.watchdog import Watchdog
from gateway.wire.encoding import make_sealer, topic_base
from gateway.wire.keys import PRIVATE_KEY_NAME, generate_keypair, load_signer
from gateway.wire.reading import Reading, to_wire
from gateway.wire.signing import Signer

log = logging.getLogger("metrogate.runtime")

Emit = Callable[[str, list[dict[str, Any]]], object]


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
        self.tamper_points = tamper_points(device)
        self._identity: dict[str, str] = {}
        self.rng = rng or random.Random()
        self.units = {str(p.id): getattr(p, "unit", None) for p in getattr(device, "points", [])}
        self.health = DeviceHealth(device.id, device.driver, driver.endpoint)
        self.health.requests_per_poll = len(driver.describe_plan())
        self._failures_in_row = 0

    def _backoff(self) -> float:
        """Seconds to wait after a failed poll: jittered, doubling, capped at 60 s."""
        period = float(self.device.poll)
        base = max(period, 0.5)
        cap = max(period, 60.0)
        step = min(cap, base * 2 ** min(self._failures_in_row - 1, 16))
        return float(self.rng.uniform(step / 2, step))

    async def run(self) -> None:
        """Poll forever (until cancelled)."""
        period = float(self.device.poll)
        scheduled = self.monotonic()
        while True:
            started = self.monotonic()
            self.health.progress_monotonic = started
            await self.poll_once()
            reraise_pending_cancel()
            self.health.last_duration_s = self.monotonic() - started
            now = self.monotonic()
            if self._failures_in_row:
                now += self._backoff()
            scheduled, missed = next_deadline(scheduled, now, period)
            if not self._failures_in_row:
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
        """Instrument identity and tamper counters go to the audit trail when they change."""
        identity = self.driver.identity()
        if identity and identity != self._identity and self.on_identity is not None:
            self._identity = dict(identity)
            self.on_identity(self.device.id, self._identity)
        if self.tamper_points and self.on_tamper is not None:
            counters = {
                r.point: int(r.value)
                for r in readings
                if r.point in self.tamper_points
                and r.quality is Quality.GOOD
                and isinstance(r.value, int | float)
            }
            if counters:
                self.on_tamper(self.device.id, counters)

    def _failed(self, exc: DriverError) -> None:
        self._failures_in_row += 1
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
                "device %s recovered after %d failed polls", self.device.id, self._failures_in_row
            )
        self.health.state = "ok"
        self._failures_in_row = 0
        self.health.last_ok_us = self.clock()


TAMPER_DIS = ("03300D00", "03300E00", "03300000", "03300400", "03110000")
"""DL/T 645 counters that are evidence of tampering: covers opened, programming,
clock set, power down."""


def tamper_points(device: Any) -> set[str]:
    """Points of ``device`` whose values are tamper counters (audit-trail material)."""
    return {
        str(p.id)
        for p in getattr(device, "points", [])
        if str(getattr(p, "di", "")).upper() in TAMPER_DIS
    }


def release_free_memory() -> None:
    """Hand freed heap pages back to the system (glibc ``malloc_trim``; elsewhere nothing).

    Start-up builds large short-lived objects (the parameter baseline of a big site
    is megabytes of JSON); without this the daemon would keep their pages for months.
    """
    gc.collect()  # cyclic garbage first, so its pages are free too
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def ensure_signer(config: Config) -> Signer:
    """The gateway's signing key; created at first start when allowed."""
    path = config.signing.key or config.gateway.state_dir / PRIVATE_KEY_NAME
    if not path.exists() and config.signing.create:
        generate_keypair(path.parent)
        if path.name != PRIVATE_KEY_NAME:
            os.replace(path.parent / PRIVATE_KEY_NAME, path)
        log.warning("created a new signing key %s; hand its .pub to the platform", path)
    return load_signer(path)


_NOT_LEGAL = {"description", "enabled", "poll", "timeout", "sim", "profile"}
"""Keys that do not change a measurement result (how often, not what or how)."""


def _pruned(value: Any) -> Any:
    """Drop unset (None) and empty values, so the audit trail holds what is configured."""
    if isinstance(value, dict):
        out = {k: _pruned(v) for k, v in value.items() if k not in _NOT_LEGAL}
        return {k: v for k, v in out.items() if v is not None and v != [] and v != {}}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


ALWAYS_LOGGED = ("table", "address", "type", "order", "scale", "offset", "unit", "di")
"""Point settings the audit trail always states, default or not: how a number on the
wire becomes a measured value. Other settings appear only when not at their default."""


def legal_parameters(config: Config) -> dict[str, Any]:
    """The legally relevant parameters: instruments, and per point where and how it is read.

    Addresses, data types, byte order, scale, offset, units, calibration, limits and
    rules are in; poll periods, timeouts, descriptions and simulator settings are not.
    Apart from :data:`ALWAYS_LOGGED`, settings left at their documented default are
    not listed (a big site's baseline stays small): a parameter that appears in (or
    disappears from) the audit trail changed from (or back to) its default.
    """
    params: dict[str, Any] = {
        "instruments": {
            i.id: _pruned(i.model_dump(mode="json", exclude_defaults=True))
            for i in config.instruments
        }
    }
    for dev in config.devices:
        d = _pruned(dev.model_dump(mode="json", exclude_defaults=True, exclude={"points"}))
        d["driver"] = dev.driver
        points: dict[str, Any] = {}
        for point in getattr(dev, "points", []):
            p = _pruned(point.model_dump(mode="json", exclude_defaults=True))
            for key in ALWAYS_LOGGED:
                value = getattr(point, key, None)
                if value is not None:
                    p[key] = value.value if hasattr(value, "value") else value
            points[str(p.pop("id", point.id))] = p
        d["points"] = points
        params[f"device:{dev.id}"] = d
    return params


def parameters_json(config: Config) -> bytes:
    """:func:`legal_parameters` as the audit trail compares them (canonical flat JSON).

    ``metrogate run`` has the config loader compute this in its loading child.
    """
    return canonical_parameters(legal_parameters(config))


class Gateway:
    """The daemon: everything ``metrogate run`` does, as one async call."""

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        clock: Clock = utc_now_us,
        clock_monitor: ClockMonitor | None = None,
        software: SoftwareId | None = None,
    ) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.clock = clock
        self.clock_monitor = clock_monitor or ClockMonitor()
        self.software = software or compute_software_id()
        self.pollers: dict[str, DevicePoller] = {}
        self.metrology: dict[str, DeviceMetrology] = {}
        self.publisher: Publisher | None = None
        self.outbox: Outbox | None = None
        self.started_us = clock()
        self.ready = asyncio.Event()
        self._pending_events: list[dict[str, Any]] = []
        self._eventlog: EventLog | None = None
        self._signer: Signer | None = None
        self._devices_up = asyncio.Event()
        self.ops: OpsServer | None = None  # the ops endpoint while running (its .port)
        self._reload_devices = asyncio.Event()

    @property
    def base_topic(self) -> str:
        cfg = self.config
        return topic_base(cfg.mqtt.prefix, cfg.gateway.site, cfg.gateway.id)

    def record_event(self, type_: str, data: dict[str, Any], *, source: str = "gateway") -> None:
        """Append to the audit trail and queue the entry for the outbox."""
        assert self._eventlog is not None
        self._pending_events.append(self._eventlog.append(type_, data, source=source))

    def _flush_events(self) -> None:
        if self._pending_events and self.outbox is not None:
            events, self._pending_events = self._pending_events, []
            self.outbox.put("event", events)

    def _on_drop(self, report: DropReport) -> None:
        data = asdict(report) if hasattr(report, "__dataclass_fields__") else dict(vars(report))
        log.warning("outbox full: dropped %s", data)
        self.record_event("outbox_drop", data, source="outbox")

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; then cancel everything and close cleanly."""
        cfg = self.config
        state = cfg.gateway.state_dir
        state.mkdir(parents=True, exist_ok=True)
        signer = ensure_signer(cfg)
        self._signer = signer
        outbox_path = cfg.outbox.path or state / "outbox.db"
        with (
            Outbox(
                outbox_path,
                seal=make_sealer(cfg.gateway.id, cfg.gateway.site, signer),
                max_bytes=int(cfg.outbox.max_bytes),
                max_age_s=cfg.outbox.max_age,
                durability=cfg.outbox.durability,
                max_records=cfg.mqtt.batch.max_readings,
                max_payload_bytes=cfg.mqtt.batch.max_bytes,
                clock_us=self.clock,
                on_drop=self._on_drop,
            ) as outbox,
            EventLog(
                state / "events.log", signer, software_id=self.software.short, clock_us=self.clock
            ) as eventlog,
        ):
            self.outbox, self._eventlog = outbox, eventlog
            self._startup_events()
            self._flush_events()
            release_free_memory()
            async with AsyncExitStack() as stack:
                self.publisher = Publisher(
                    cfg.mqtt,
                    base_topic=self.base_topic,
                    client_id=cfg.mqtt.client_id
                    or f"metrogate-{cfg.gateway.site}-{cfg.gateway.id}",
                    outbox=outbox,
                    birth=self.birth(signer),
                    on_command=self.on_command,
                )
                notifier = Notifier.from_env()
                try:
                    async with asyncio.TaskGroup() as tg:
                        publisher = tg.create_task(self.publisher.run(), name="publisher")
                        devices = tg.create_task(self._devices(), name="devices")
                        housekeeping = tg.create_task(self._housekeeping(), name="housekeeping")
                        tasks = [publisher, devices, housekeeping]
                        async with asyncio.timeout(60):
                            await self._devices_up.wait()
                        self._retain_alarm_set()  # restored alarms are active again
                        if cfg.ops.enabled:
                            try:
                                self.ops = await stack.enter_async_context(
                                    gateway_ops_server(self, cfg.ops.host, cfg.ops.port)
                                )
                            except OSError as exc:  # metrics must never stop data collection
                                log.error("ops endpoint %s not served: %s", cfg.ops.listen, exc)
                        interval = notifier.watchdog_interval
                        if cfg.ops.watchdog and interval is not None:
                            dog = Watchdog(
                                self,
                                notifier,
                                interval=interval,
                                alive=lambda: not publisher.done(),
                            )
                            tasks.append(tg.create_task(dog.run(), name="watchdog"))
                        tasks.append(
                            tg.create_task(
                                watch_sighup(
                                    lambda: self.loaded,
                                    self.record_event,
                                    self._apply_reload,
                                    notifier=notifier,
                                ),
                                name="sighup",
                            )
                        )
                        self.ready.set()
                        notifier.ready(f"{len(self.pollers)} devices")
                        log.info(
                            "gateway %s running: %d devices", cfg.gateway.id, len(self.pollers)
                        )
                        await stop.wait()
                        notifier.stopping()
                        for t in tasks:
                            t.cancel()
                finally:
                    self._save_rule_state()
                    self.record_event(
                        "shutdown", {"uptime_s": (self.clock() - self.started_us) / 1e6}
                    )
                    self._flush_events()

    async def _devices(self) -> None:
        """The device tasks; rebuilt with reopened drivers when a reload is applied."""
        while True:
            async with AsyncExitStack() as stack:
                drivers = await build_drivers(self.config, stack, clock=self.clock)
                self.pollers, self.metrology = {}, {}
                self._build_pollers(drivers)
                self._devices_up.set()
                async with asyncio.TaskGroup() as tg:
                    tasks = [
                        tg.create_task(p.run(), name=f"device-{d}") for d, p in self.pollers.items()
                    ]
                    await self._reload_devices.wait()  # unbounded: waits for an operator
                    self._reload_devices.clear()
                    for t in tasks:
                        t.cancel()
            self._save_rule_state()

    async def _apply_reload(self, result: Reloaded) -> None:
        """A valid, changed configuration: new device tasks with it (see gateway.ops.reload).

        Changes of legally relevant parameters are written to the audit trail first;
        when the event log is full they are refused and the running config is kept.
        """
        assert self._eventlog is not None
        try:
            entries = self._eventlog.reconcile_parameters(
                legal_parameters(result.loaded.config), source=str(result.loaded.path)
            )
        except EventLogFull:
            log.error("reload refused: the event log is full, parameter changes are refused")
            return
        self._pending_events += entries
        self.record_event(
            "config_loaded",
            {"path": str(result.loaded.path), "sha256": result.loaded.sha256, "reload": True},
        )
        self._flush_events()
        self.loaded, self.config = result.loaded, result.loaded.config
        self._reload_devices.set()

    def _build_pollers(self, drivers: dict[str, Driver]) -> None:
        cfg = self.config
        instruments = {i.id: i for i in cfg.instruments}
        rule_dir = cfg.gateway.state_dir / "rules"
        for dev in cfg.devices:
            if dev.id not in drivers:
                continue
            points = [(str(p.id), p, getattr(p, "unit", None)) for p in getattr(dev, "points", [])]
            metro = DeviceMetrology(dev.id, points, dev, instruments, self.clock)
            saved = rule_dir / f"{dev.id}.json"
            if saved.exists():
                try:
                    metro.load_state(json.loads(saved.read_text()))
                except (ValueError, KeyError, TypeError) as exc:
                    log.error("rule state of %s unreadable (%s); starting fresh", dev.id, exc)
            self.metrology[dev.id] = metro
            driver = drivers[dev.id]
            self.pollers[dev.id] = DevicePoller(
                dev,
                driver,
                metro,
                self._emit,
                clock=self.clock,
                synchronised=lambda: self.clock_monitor.synchronised,
                on_alarm_change=self._alarms_changed,
                on_identity=self._identity_seen,
                on_tamper=self._tamper_seen,
            )

    def _identity_seen(self, device: str, identity: dict[str, str]) -> None:
        assert self._eventlog is not None
        entry = self._eventlog.record_instrument_identity(device, identity, source=device)
        if entry is not None:
            self._pending_events.append(entry)

    def _tamper_seen(self, device: str, counters: dict[str, int]) -> None:
        assert self._eventlog is not None
        entry = self._eventlog.record_tamper_counters(device, counters, source=device)
        if entry is not None:
            self._pending_events.append(entry)

    def _emit(self, kind: str, records: list[dict[str, Any]]) -> None:
        assert self.outbox is not None
        self.outbox.put(kind, records)

    def _startup_events(self) -> None:
        assert self._eventlog is not None
        log_ = self._eventlog
        self._pending_events += log_.record_startup(
            self.software.as_dict(),
            config_path=str(self.loaded.path),
            config_sha256=self.loaded.sha256,
        )
        # computed while loading when the loader was asked to (less to build here)
        current = self.loaded.parameters
        if current is None:
            current = parameters_json(self.config)
        try:
            self._pending_events += log_.reconcile_parameters(current, source=str(self.loaded.path))
        except EventLogFull:
            raise SystemExit(
                "event log is full: changes of legally relevant parameters are refused"
            ) from None

    def birth(self, signer: Signer) -> dict[str, Any]:
        cfg = self.config
        return {
            "v": 1,
            "state": "online",
            "gateway": cfg.gateway.id,
            "site": cfg.gateway.site,
            "since": self.started_us,
            "software": self.software.as_dict(),
            "kid": signer.kid,
        }

    async def on_command(self, name: str, payload: bytes) -> None:
        """``cmd/ack`` and ``cmd/shelve`` with ``{"alarm": id, "user": ..., "duration": s}``."""
        try:
            body = json.loads(payload or b"{}")
        except ValueError:
            log.warning("command %s: payload is not JSON", name)
            return
        records = self.alarm_command(name, body)
        if records is None:
            log.warning("command %s: unknown command or alarm", name)

    def alarm_command(self, name: str, body: dict[str, Any]) -> list[dict[str, Any]] | None:
        alarm = str(body.get("alarm", ""))
        user = str(body.get("user", "mqtt"))
        metro = self.metrology.get(alarm.split("/", 1)[0])
        if metro is None or name not in ("ack", "shelve"):
            return None
        now = self.clock()
        if name == "ack":
            records = metro.acknowledge(alarm, user, now)
        else:
            records = metro.shelve(alarm, float(body.get("duration", 3600)), user, now)
        self.record_event(f"alarm_{name}", {"alarm": alarm, "user": user}, source=user)
        if records:
            self._emit("alarm", records)
            self._alarms_changed(alarm.split("/", 1)[0])
        self._flush_events()
        return records

    def _alarms_changed(self, dev_id: str) -> None:
        """Persist the device's rule state and retain the gateway's active alarm set."""
        self._save_rule_state_of(dev_id)
        self._retain_alarm_set()

    def _retain_alarm_set(self) -> None:
        """The active alarms, signed, retained on ``{base}/alarms`` (docs/wire.md)."""
        if self.publisher is None or self._signer is None:
            return
        active = [a for metro in self.metrology.values() for a in metro.active_alarms()]
        body = {
            "v": 1,
            "type": "alarm_set",
            "gateway": self.config.gateway.id,
            "site": self.config.gateway.site,
            "ts": self.clock(),
            "alarms": active,
        }
        raw = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        self.publisher.set_retained("alarms", self._signer.sign_payload(raw))

    def _save_rule_state_of(self, dev_id: str) -> None:
        metro = self.metrology.get(dev_id)
        if metro is None:
            return
        directory = self.config.gateway.state_dir / "rules"
        directory.mkdir(exist_ok=True)
        tmp = directory / f"{dev_id}.json.tmp"
        tmp.write_text(json.dumps(metro.to_state()))
        os.replace(tmp, directory / f"{dev_id}.json")

    def _save_rule_state(self) -> None:
        for dev_id in self.metrology:
            self._save_rule_state_of(dev_id)

    async def _housekeeping(self) -> None:
        """Once a second: clock checks, calibration warnings, queued events."""
        last_rules_save = time.monotonic()
        trimmed = False
        while True:
            for event in self.clock_monitor.check():
                kind = "clock_jump" if isinstance(event, ClockJump) else "clock_sync"
                self.record_event(kind, event.event_data(), source="clock")
            now = self.clock()
            for metro in self.metrology.values():
                for entry in metro.events(now):
                    self.record_event(str(entry["event"]), entry, source="calibration")
                alarms = metro.tick(now)
                if alarms:
                    self._emit("alarm", alarms)
                    self._alarms_changed(metro.device)
            if self.outbox is not None:
                self.outbox.enforce_bounds()  # ages batches out while nothing new comes
            self._flush_events()
            if time.monotonic() - last_rules_save > 60:
                self._save_rule_state()
                last_rules_save = time.monotonic()
                release_free_memory()
            elif not trimmed and self.publisher is not None and self.publisher.stats.published:
                release_free_memory()  # the start-up batches are out: their memory too
                trimmed = True
            await asyncio.sleep(1.0)
