"""The daemon: composition only — the pieces of ``metrogate run`` wired in one TaskGroup.

Device tasks (:mod:`gateway.acquisition.poller`) put readings into the outbox
(:mod:`gateway.delivery.outbox`), the publisher is its only consumer, housekeeping
runs clock checks, calibration warnings and bounds; operator commands and the
retained alarm set are :mod:`gateway.operator`'s; the audit trail is
:mod:`gateway.audit`'s. This module decides what runs together, not how each works.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import asdict
from typing import Any

from drivers.base import Clock, Driver, utc_now_us
from gateway.acquisition.build import build_drivers
from gateway.acquisition.clock import ClockJump, ClockMonitor
from gateway.acquisition.poller import DevicePoller
from gateway.acquisition.rulestate import RuleStore
from gateway.audit.eventlog import EventLog, EventLogFull, EventLogWriteError, EventType
from gateway.audit.parameters import parameters_json
from gateway.audit.software_id import SoftwareId, compute_software_id
from gateway.common.opsserver import OpsServer
from gateway.common.stall import StallMonitor
from gateway.config.loader import LoadedConfig
from gateway.delivery.events import EventFeed
from gateway.delivery.outbox import DropReport, Outbox, OutboxError
from gateway.delivery.publisher import Publisher
from gateway.delivery.ticks import TickBatcher
from gateway.delivery.writer import OutboxWriter
from gateway.metrology.pipeline import DeviceMetrology
from gateway.operator import AlarmDesk, CommandGuard, Operator
from gateway.ops.health import gateway_ops_server
from gateway.ops.memory import (
    freeze_long_lived,
    release_free_memory,
    release_free_memory_async,
    thaw,
)
from gateway.ops.reload import Reloaded, watch_sighup
from gateway.ops.sdnotify import Notifier
from gateway.ops.watchdog import Watchdog
from gateway.wire.encoding import make_sealer, topic_base
from gateway.wire.keys import ensure_signer
from gateway.wire.signing import Signer

log = logging.getLogger("metrogate.runtime")

PAUSE_AT = 0.95
"""``outbox.overflow: stop_noncritical``: non-critical devices stop at this outbox fill…"""
RESUME_AT = 0.90
"""…and poll again once it is down to this."""

BuildDrivers = Callable[..., Awaitable[dict[str, Driver]]]
"""``build(loaded, stack, *, clock) -> {device id: driver}``: how the device tasks get
their drivers (:func:`gateway.acquisition.build.build_drivers`, entered on ``stack``)."""


class Gateway:
    """The daemon: everything ``metrogate run`` does, as one async call.

    ``build`` makes the drivers of the device tasks (the default opens every enabled
    device's driver by its kind; tests pass a wrapper around it).
    """

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        clock: Clock = utc_now_us,
        clock_monitor: ClockMonitor | None = None,
        software: SoftwareId | None = None,
        eventlog_max_entries: int = 100_000,
        build: BuildDrivers = build_drivers,
    ) -> None:
        self.loaded = loaded
        self._build = build
        self.config = loaded.config
        self.clock = clock
        self.clock_monitor = clock_monitor or ClockMonitor()
        self.software = software or compute_software_id()
        self.eventlog_max_entries = eventlog_max_entries
        self.pollers: dict[str, DevicePoller] = {}
        self.metrology: dict[str, DeviceMetrology] = {}
        self.publisher: Publisher | None = None
        self.outbox: Outbox | None = None
        self.writer: OutboxWriter | None = None  # every put goes through it (never raises)
        self.started_us = clock()
        self.ready = asyncio.Event()
        self.events: EventFeed | None = None  # the audit trail, bound to the outbox
        self._eventlog: EventLog | None = None
        self._signer: Signer | None = None
        self._devices_up = asyncio.Event()
        self.ops: OpsServer | None = None  # the ops endpoint while running (its .port)
        self._reload_devices = asyncio.Event()
        self.rules = RuleStore(self.config.gateway.state_dir / "rules")
        self.desk: AlarmDesk | None = None  # operator commands, once the publisher exists
        self.stalls = StallMonitor()  # how long the event loop blocks (/metrics)
        self.noncritical_paused = False  # stop_noncritical: the outbox is nearly full
        self._drops: dict[tuple[str, bool], DropReport] = {}  # since the last report
        self.ticks: TickBatcher | None = None  # data of one tick, sealed as one batch

    @property
    def base_topic(self) -> str:
        cfg = self.config
        return topic_base(cfg.mqtt.prefix, cfg.gateway.site, cfg.gateway.id)

    def command_counts(self) -> dict[str, int]:
        """Operator commands so far by outcome (the ops endpoint's ``metrogate_commands_total``)."""
        return self.desk.counts() if self.desk is not None else {}

    def record_event(self, type_: str, data: dict[str, Any], *, source: str = "gateway") -> None:
        """Append to the audit trail; the entry is published once durable (EventFeed).

        Never raises for a full log: the event is then counted and health degrades.
        """
        assert self.events is not None
        self.events.record(type_, data, source=source)

    def _flush_events(self) -> None:
        """Commit and seal the trail now (start-up, shutdown); a failure is the writer's
        to retry (or the next start's to recover), never the end of the gateway."""
        assert self.events is not None
        try:
            self.events.flush()
        except (EventLogWriteError, OutboxError) as exc:
            log.error("event log not flushed: %s", exc)

    def _on_drop(self, report: DropReport) -> None:
        """Collect what the outbox dropped; :meth:`_report_drops` writes it down.

        A full outbox drops at every put: one event per drop would fill it with drop
        events. So the drops of one housekeeping tick (1 s) become one ``outbox_drop``
        event (and one warning) per reason, with their total and sequence range.
        """
        key = (report.reason, report.urgent)
        seen = self._drops.get(key)
        if seen is not None:
            report = DropReport(
                seen.batches + report.batches,
                seen.records + report.records,
                min(seen.first_seq, report.first_seq),
                max(seen.last_seq, report.last_seq),
                report.reason,
                report.urgent,
            )
        self._drops[key] = report

    def _report_drops(self) -> None:
        drops, self._drops = self._drops, {}
        for report in sorted(drops.values(), key=lambda r: r.first_seq):
            data = asdict(report)
            log.warning("outbox full: dropped %s", data)
            self.record_event(EventType.OUTBOX_DROP, data, source="outbox")

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; then cancel everything and close cleanly."""
        cfg = self.config
        state = cfg.gateway.state_dir
        state.mkdir(parents=True, exist_ok=True)
        signer = ensure_signer(cfg.signing_key, create=cfg.signing.create)
        self._signer = signer
        outbox_path = cfg.outbox.path or state / "outbox.db"
        with (
            # the log first: it refuses to start afresh where the outbox shows a past run
            EventLog(
                state / "events.log",
                signer,
                software_id=self.software.short,
                clock_us=self.clock,
                max_entries=self.eventlog_max_entries,
                history=[outbox_path, self.rules.directory],
                autocommit=False,  # committed off the event loop by the EventFeed
            ) as eventlog,
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
                overflow="thin" if cfg.outbox.overflow == "thin" else "drop_oldest",
                thin_keep=cfg.outbox.thin_keep,
                seq_store=eventlog,  # sequence numbers survive the loss of outbox.db
            ) as outbox,
        ):
            self.outbox, self._eventlog = outbox, eventlog
            self.events = EventFeed(eventlog, outbox)
            self.events.recover()  # what a killed run logged but did not seal
            self.writer = writer = OutboxWriter(outbox, clock_us=self.clock)
            self.ticks = ticks = TickBatcher(
                self._put_data,
                linger=cfg.mqtt.batch.linger,
                max_records=cfg.mqtt.batch.max_readings,
            )
            self._startup_events()
            self._flush_events()
            release_free_memory()
            freeze_long_lived()  # the config, the event log's state: they live as long as we do
            async with AsyncExitStack() as stack:
                self.publisher = Publisher(
                    cfg.mqtt,
                    base_topic=self.base_topic,
                    client_id=cfg.mqtt.client_id
                    or f"metrogate-{cfg.gateway.site}-{cfg.gateway.id}",
                    outbox=outbox,
                    birth=self.birth(signer),
                    on_command=self._on_command,
                    # one entry per episode: the broker refuses a kind of batch
                    on_refusal=lambda data: self.record_event(
                        "publish_refused", data, source="mqtt"
                    ),
                )
                self.desk = AlarmDesk(
                    gateway=cfg.gateway.id,
                    site=cfg.gateway.site,
                    metrology=lambda: self.metrology,
                    record_event=self.record_event,
                    emit=self._emit,
                    save_state=self._save_rule_state_of,
                    retain=self.publisher.set_retained,
                    signer=signer,
                    clock=self.clock,
                    guard=CommandGuard(
                        gateway=cfg.gateway.id,
                        site=cfg.gateway.site,
                        operators=[Operator.from_config(o) for o in cfg.operators],
                        settings=cfg.commands,
                        clock=self.clock,
                        record_event=self.record_event,
                    ),
                )
                notifier = Notifier.from_env()
                try:
                    async with asyncio.TaskGroup() as tg:
                        stalls = tg.create_task(self.stalls.run(), name="loop-stall")
                        publisher = tg.create_task(self.publisher.run(), name="publisher")
                        devices = tg.create_task(self._devices(), name="devices")
                        housekeeping = tg.create_task(self._housekeeping(), name="housekeeping")
                        reserve = tg.create_task(outbox.keep_reserved(), name="outbox-seq")
                        trail = tg.create_task(self.events.run(), name="eventlog-writer")
                        batcher = tg.create_task(ticks.run(), name="ticks")
                        tasks = [stalls, publisher, devices, housekeeping, reserve, trail, batcher]
                        async with asyncio.timeout(60):
                            await self._devices_up.wait()
                        self.desk.retain_set()  # restored alarms are active again
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
                    ticks.flush()  # the last polls' readings, sealed before the end
                    self._save_rule_state()
                    self.desk.tick_final(self.clock())
                    self._report_drops()
                    self.record_event(
                        "shutdown", {"uptime_s": (self.clock() - self.started_us) / 1e6}
                    )
                    self._flush_events()
                    writer.retry(now=True)
                    writer.abandon()
                    thaw()

    async def _devices(self) -> None:
        """The device tasks; rebuilt with reopened drivers when a reload is applied."""
        while True:
            async with AsyncExitStack() as stack:
                drivers = await self._build(self.loaded, stack, clock=self.clock)
                self.pollers, self.metrology = {}, {}
                await self._build_pollers(drivers)
                self._devices_up.set()
                async with asyncio.TaskGroup() as tg:
                    tasks = [
                        tg.create_task(p.run(), name=f"device-{d}") for d, p in self.pollers.items()
                    ]
                    await self._reload_devices.wait()  # unbounded: waits for an operator
                    self._reload_devices.clear()
                    for t in tasks:
                        t.cancel()
            await self.rules.save_all(list(self.metrology.values()))
            # the replaced devices, drivers and configuration are garbage now: collected
            # once here, and the collector kept off the new configuration from now on
            del drivers, tasks, tg, stack
            self.pollers, self.metrology = {}, {}
            freeze_long_lived()

    async def _apply_reload(self, result: Reloaded) -> None:
        """A valid, changed configuration: new device tasks with it (see gateway.ops.reload).

        Changes of legally relevant parameters are written to the audit trail first;
        when the event log is full they are refused and the running config is kept.
        """
        assert self._eventlog is not None and self.events is not None
        # computed in the loading child, as at start-up (not here, on the event loop)
        current = result.loaded.parameters
        if current is None:
            current = parameters_json(result.loaded.config)
        try:
            # comparing a big site's parameter sets takes a while: the log is thread-safe
            await asyncio.to_thread(
                self._eventlog.reconcile_parameters, current, source=str(result.loaded.path)
            )
        except EventLogFull:
            log.error("reload refused: the event log is full, parameter changes are refused")
            return
        self.record_event(
            "config_loaded",
            {"path": str(result.loaded.path), "sha256": result.loaded.sha256, "reload": True},
        )
        try:
            await self.events.durable()  # the changes are in the trail before they apply
        except (EventLogWriteError, OutboxError) as exc:
            # staged all the same, and derived again at the next start should they be lost
            log.error("parameter changes not yet durable in the event log: %s", exc)
        self.loaded, self.config = result.loaded, result.loaded.config
        self._reload_devices.set()

    async def _build_pollers(self, drivers: dict[str, Driver]) -> None:
        """One poller per driver; the loop runs between two devices (a big site's
        metrology and saved rule states take a while to build at a reload).

        Every device starts on the same grid. Spreading the first polls over
        the period (device ``i`` of ``n`` ``i / n`` late) was measured to more than
        double the gateway's CPU per reading (10 × 10 points at 100 ms: 0.057 → 0.126
        CPU-s per 1,000 readings, bench/bench_e2e.py): polls that end together are
        stored and published in one wake-up of the loop, spread ones each pay it.
        """
        cfg = self.config
        instruments = {i.id: i for i in cfg.instruments}
        enabled = [dev for dev in cfg.devices if dev.id in drivers]
        for dev in enabled:
            await asyncio.sleep(0)
            points = [(str(p.id), p, getattr(p, "unit", None)) for p in getattr(dev, "points", [])]
            metro = DeviceMetrology(dev.id, points, dev, instruments, self.clock)
            self.rules.restore(metro)
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
                active=self._may_poll(dev.critical),
            )

    def _identity_seen(self, device: str, identity: dict[str, str]) -> None:
        assert self._eventlog is not None and self.events is not None
        log_ = self._eventlog
        self.events.stage(lambda: log_.record_instrument_identity(device, identity, source=device))

    def _tamper_seen(self, device: str, counters: dict[str, int]) -> None:
        assert self._eventlog is not None and self.events is not None
        log_ = self._eventlog
        self.events.stage(lambda: log_.record_tamper_counters(device, counters, source=device))

    def _emit(self, kind: str, records: list[dict[str, Any]]) -> None:
        """What a device task produced: data waits for the tick's batch, alarms go now."""
        assert self.writer is not None and self.ticks is not None
        if kind == "data":
            if records:
                self.ticks.add(records, str(records[0].get("device")))
            return
        self.writer.put(kind, records)
        self._check_room()

    def _put_data(self, records: list[dict[str, Any]], stream: str | None) -> None:
        assert self.writer is not None
        self.writer.put("data", records, stream=stream)
        self._check_room()

    def _may_poll(self, critical: bool) -> Callable[[], bool]:
        if critical:
            return lambda: True
        return lambda: not self.noncritical_paused

    def _check_room(self) -> None:
        """``outbox.overflow: stop_noncritical``: pause non-critical devices near the bound,
        resume them once there is room again; both are events of the audit trail."""
        if self.config.outbox.overflow != "stop_noncritical" or self.outbox is None:
            return
        fill = self.outbox.fill_ratio
        if fill > RESUME_AT if self.noncritical_paused else fill < PAUSE_AT:
            return  # no change
        self.noncritical_paused = not self.noncritical_paused
        devices = [d.id for d in self.config.devices if not d.critical]
        data: dict[str, Any] = {"fill": round(fill, 4), "devices": devices}
        if self.noncritical_paused:
            log.warning("outbox %.0f %% full: non-critical devices paused: %s", fill * 100, devices)
            self.record_event(EventType.NONCRITICAL_PAUSED, data, source="outbox")
        else:
            data["paused_polls"] = {
                d: self.pollers[d].health.paused for d in devices if d in self.pollers
            }
            log.warning("outbox has room again (%.0f %%): non-critical devices resumed", fill * 100)
            self.record_event(EventType.NONCRITICAL_RESUMED, data, source="outbox")

    def _startup_events(self) -> None:
        assert self._eventlog is not None and self.events is not None
        log_, events = self._eventlog, self.events
        started = events.stage(
            lambda: log_.record_startup(
                self.software.as_dict(),
                config_path=str(self.loaded.path),
                config_sha256=self.loaded.sha256,
            )
        )
        if started is None:
            log.error("event log full: this start-up is not recorded")
        if self.outbox is not None and self.outbox.resumed is not None:
            self.record_event("sequence_resumed", self.outbox.resumed.event_data(), source="outbox")
        # computed while loading when the loader was asked to (less to build here)
        current = self.loaded.parameters
        if current is None:
            current = parameters_json(self.config)
        events.reconcile_at_start(current, source=str(self.loaded.path))

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

    async def _on_command(self, name: str, payload: bytes) -> None:
        assert self.desk is not None
        await self.desk.on_command(name, payload)

    def _alarms_changed(self, dev_id: str) -> None:
        if self.desk is not None:
            self.desk.changed(dev_id)

    def _save_rule_state_of(self, dev_id: str) -> None:
        metro = self.metrology.get(dev_id)
        if metro is not None:
            self.rules.save(metro)

    def _save_rule_state(self) -> None:
        for metro in self.metrology.values():
            self.rules.save(metro)

    async def _housekeeping(self) -> None:
        """Once a second: clock checks, calibration warnings, queued events, outbox retries.

        A tick that fails is logged (its traceback once per kind of failure) and the
        next one runs: housekeeping must not end the gateway either.
        """
        last_rules_save = time.monotonic()
        trimmed = False
        reported: set[str] = set()
        while True:
            try:
                last_rules_save, trimmed = await self._tick(last_rules_save, trimmed)
            except Exception as exc:
                kind = type(exc).__qualname__
                if kind not in reported:
                    reported.add(kind)
                    log.error("housekeeping failed: %s", exc, exc_info=exc)
                else:
                    log.debug("housekeeping failed again: %s", exc)
            await asyncio.sleep(1.0)

    async def _tick(self, last_rules_save: float, trimmed: bool) -> tuple[float, bool]:
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
        if self.desk is not None:
            self.desk.tick(now)  # the summary of refused commands, at most once a period
        if self.writer is not None:
            self.writer.retry()
            self.writer.enforce_bounds()  # ages batches out while nothing new comes
            self._check_room()  # settled batches make room without a put
        self._report_drops()
        if time.monotonic() - last_rules_save > 60:
            last_rules_save = time.monotonic()
            await self.rules.save_all(list(self.metrology.values()))
            await release_free_memory_async()
        elif not trimmed and self.publisher is not None and self.publisher.stats.published:
            await release_free_memory_async()  # the start-up batches are out: their memory too
            trimmed = True
        return last_rules_save, trimmed
