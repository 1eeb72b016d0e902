"""Prometheus metrics of the gateway, computed at scrape time.

Nothing here runs per reading: :class:`GatewayCollector` reads the counters the
runtime already keeps (each poller's ``health``, ``outbox.stats()``,
``publisher.stats``) when Prometheus scrapes, so a gateway nobody scrapes pays
nothing. docs/operations.md lists every metric; :data:`GATEWAY_METRICS` is that list
in code (a test keeps them in step; the ingest's are in :mod:`supervision.metrics`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gateway.common.opsserver import counter, gauge
from gateway.common.stall import LATENESS_BUCKETS, StallStats
from gateway.ops.view import GatewayView, RatesView

__all__ = [
    "DEVICE_STATES",
    "GATEWAY_METRICS",
    "GatewayCollector",
    "RateMeter",
]

DEVICE_STATES = ("starting", "ok", "failing")

GATEWAY_METRICS: dict[str, str] = {
    "metrogate_info": "Software identity and gateway (value 1).",
    "metrogate_start_time_seconds": "Unix time the gateway started.",
    "metrogate_config_info": "Configuration file and its SHA-256 (value 1).",
    "metrogate_readings_total": "Readings put into the outbox, by device and quality.",
    "metrogate_device_polls_total": "Polls made, by device.",
    "metrogate_device_poll_failures_total": "Polls that failed, by device.",
    "metrogate_device_polls_missed_total": "Poll slots skipped because a poll overran.",
    "metrogate_device_polls_paused_total": "Poll slots skipped while the outbox was nearly full.",
    "metrogate_device_poll_duration_seconds": "Duration of the last poll, by device.",
    "metrogate_device_last_ok_timestamp_seconds": "Unix time of the last good poll.",
    "metrogate_device_state": "1 for the device's current state (starting, ok, failing).",
    "metrogate_device_requests_per_poll": "Protocol requests one poll of the device makes.",
    "metrogate_device_exceptions_total": (
        "Unexpected exceptions contained to the device, by stage of the poll."
    ),
    "metrogate_device_readings_lost_total": "Readings of the device that could not be stored.",
    "metrogate_requests_per_cycle": "Protocol requests of one poll of every device.",
    "metrogate_bus_utilisation_ratio": "Share of time a serial bus is busy (from poll times).",
    "metrogate_outbox_batches": "Sealed batches waiting in the outbox.",
    "metrogate_outbox_records": "Records (readings, alarms, events) waiting in the outbox.",
    "metrogate_outbox_bytes": "Payload bytes waiting in the outbox.",
    "metrogate_outbox_max_bytes": "The configured bound on outbox bytes.",
    "metrogate_outbox_oldest_age_seconds": "Age of the oldest waiting batch (0 when empty).",
    "metrogate_outbox_dropped_batches_total": "Batches dropped unsent because a bound was hit.",
    "metrogate_outbox_dropped_records_total": "Records dropped unsent because a bound was hit.",
    "metrogate_outbox_drops_total": "Batches dropped unsent since start, by reason and kind.",
    "metrogate_noncritical_paused": "1 while non-critical devices are paused (outbox full).",
    "metrogate_outbox_capacity_seconds": "How long an empty outbox holds data at the current rate.",
    "metrogate_outbox_remaining_seconds": "Time until the outbox drops data at the current rate.",
    "metrogate_batches_signed_total": "Batches sealed and signed (the last sequence number).",
    "metrogate_outbox_writable": "1 while the outbox accepts writes.",
    "metrogate_outbox_write_failures_total": "Writes the outbox refused (disk full, I/O error).",
    "metrogate_outbox_held_records": "Records held in memory until the outbox accepts them.",
    "metrogate_outbox_lost_records_total": "Records given up while the outbox was not writable.",
    "metrogate_mqtt_connected": "1 while connected to the broker.",
    "metrogate_mqtt_connects_total": "Successful broker connections.",
    "metrogate_mqtt_published_total": "Batches the broker accepted (PUBACK, success code).",
    "metrogate_mqtt_failures_total": "Broker connection failures and losses.",
    "metrogate_mqtt_refused_total": "Messages the broker refused (PUBACK reason >= 0x80).",
    "metrogate_clock_synchronised": "1 when the kernel reports the clock synchronised.",
    "metrogate_eventlog_entries": "Entries in the event log (the last entry number).",
    "metrogate_eventlog_max_entries": "The event log's capacity in entries.",
    "metrogate_eventlog_refused_total": "Events not written because the event log is full.",
    "metrogate_eventlog_write_ok": "0 while the event log cannot be written, else 1.",
    "metrogate_loop_stall_max_seconds": "Longest event-loop stall since start (100 ms timer).",
    "metrogate_loop_lag_seconds": "How late the event loop ran its last 100 ms timer.",
    "metrogate_loop_stalls_total": "Event-loop stalls of 50 ms or more.",
    "metrogate_loop_lateness_seconds": "How late the event loop ran its 100 ms timer, each time.",
    "metrogate_commands_total": "Operator commands, by outcome (accepted, unchanged, or the "
    "reason of a refusal).",
}


def _gauge(name: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return gauge(name, GATEWAY_METRICS[name], labels)


def _counter(name: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    return counter(name, GATEWAY_METRICS[name], labels)


def _lateness(stats: StallStats) -> Metric:
    name = "metrogate_loop_lateness_seconds"
    hist = HistogramMetricFamily(name, GATEWAY_METRICS[name])
    running = 0
    buckets: list[tuple[str, float]] = []
    for bound, n in zip((*LATENESS_BUCKETS, float("inf")), stats.counts, strict=True):
        running += n
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
    hist.add_metric([], buckets, stats.total_s)
    return hist


@dataclass(frozen=True, slots=True)
class _Sample:
    at: float
    readings: int


class RateMeter:
    """The gateway's data rate, sampled periodically: readings/s and outbox bytes/s.

    ``sample()`` is called every few seconds (the ops server does it); rates are
    taken over the last ``window`` seconds. Bytes per reading are learnt from the
    outbox whenever it holds records; until then ``default_bytes_per_reading`` is
    assumed and :attr:`estimated` says so.
    """

    def __init__(
        self,
        gateway: RatesView,
        *,
        window: float = 300.0,
        default_bytes_per_reading: float = 200.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gateway = gateway
        self.window = window
        self.bytes_per_reading = default_bytes_per_reading
        self.estimated = True
        self._now = monotonic
        self._samples: deque[_Sample] = deque()

    def sample(self) -> None:
        now = self._now()
        total = sum(p.health.readings for p in self.gateway.pollers.values())
        self._samples.append(_Sample(now, total))
        while len(self._samples) > 2 and self._samples[1].at <= now - self.window:
            self._samples.popleft()
        outbox = self.gateway.outbox
        if outbox is not None:
            stats = outbox.stats()
            if stats.records > 0:
                self.bytes_per_reading = stats.bytes / stats.records
                self.estimated = False

    def readings_per_s(self) -> float | None:
        """Readings per second over the window, or None before two samples."""
        if len(self._samples) < 2:
            return None
        first, last = self._samples[0], self._samples[-1]
        if last.at <= first.at:
            return None
        return max(0, last.readings - first.readings) / (last.at - first.at)

    def bytes_per_s(self) -> float | None:
        rate = self.readings_per_s()
        return None if rate is None else rate * self.bytes_per_reading

    def forecast(self, max_bytes: int, used_bytes: int) -> tuple[float | None, float | None]:
        """(capacity_s, remaining_s): how long the outbox holds an outage at this rate."""
        rate = self.bytes_per_s()
        if not rate:
            return None, None
        return max_bytes / rate, max(0, max_bytes - used_bytes) / rate


class GatewayCollector(Collector):
    """Builds every gateway metric from a running gateway at scrape time.

    Register it on a :class:`prometheus_client.CollectorRegistry`; it holds no
    state of its own beyond the optional :class:`RateMeter`.
    """

    def __init__(
        self,
        gateway: GatewayView,
        *,
        meter: RateMeter | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.gateway = gateway
        self.meter = meter
        self._wall = wall

    def describe(self) -> list[Metric]:
        # no describe-time collection: the gateway may not be running yet
        return []

    def collect(self) -> Iterator[Metric]:
        gw = self.gateway
        cfg = gw.loaded.config
        info = _gauge("metrogate_info", ["gateway", "site", "version", "sha256"])
        info.add_metric(
            [cfg.gateway.id, cfg.gateway.site, gw.software.version, gw.software.sha256], 1
        )
        yield info
        start = _gauge("metrogate_start_time_seconds")
        start.add_metric([], gw.started_us / 1e6)
        yield start
        conf = _gauge("metrogate_config_info", ["path", "sha256"])
        conf.add_metric([str(gw.loaded.path), gw.loaded.sha256], 1)
        yield conf
        yield from self._devices()
        yield from self._outbox(int(cfg.outbox.max_bytes))
        yield from self._publisher()
        yield from self._events()
        clock = _gauge("metrogate_clock_synchronised")
        clock.add_metric([], 1.0 if gw.clock_monitor.synchronised else 0.0)
        yield clock
        loop = gw.stalls.stats
        worst = _gauge("metrogate_loop_stall_max_seconds")
        worst.add_metric([], loop.max_s)
        lag = _gauge("metrogate_loop_lag_seconds")
        lag.add_metric([], loop.last_s)
        stalls = _counter("metrogate_loop_stalls_total")
        stalls.add_metric([], loop.stalls)
        yield from (worst, lag, stalls, _lateness(loop))
        commands = _counter("metrogate_commands_total", ["outcome"])
        for outcome, n in sorted(gw.command_counts().items()):
            commands.add_metric([outcome], n)
        yield commands

    def _devices(self) -> Iterator[Metric]:
        dev = ["device"]
        readings = _counter("metrogate_readings_total", ["device", "quality"])
        polls = _counter("metrogate_device_polls_total", dev)
        failures = _counter("metrogate_device_poll_failures_total", dev)
        missed = _counter("metrogate_device_polls_missed_total", dev)
        paused = _counter("metrogate_device_polls_paused_total", dev)
        duration = _gauge("metrogate_device_poll_duration_seconds", dev)
        last_ok = _gauge("metrogate_device_last_ok_timestamp_seconds", dev)
        state = _gauge("metrogate_device_state", ["device", "state"])
        requests = _gauge("metrogate_device_requests_per_poll", dev)
        exceptions = _counter("metrogate_device_exceptions_total", ["device", "stage"])
        lost = _counter("metrogate_device_readings_lost_total", dev)
        cycle = _gauge("metrogate_requests_per_cycle")
        bus = _gauge("metrogate_bus_utilisation_ratio", ["bus"])
        busy: dict[str, float] = {}
        total_requests = 0
        for dev_id, poller in self.gateway.pollers.items():
            h = poller.health
            by_quality: Mapping[str, int] | None = getattr(h, "quality", None)
            if by_quality:
                for quality, n in sorted(by_quality.items()):
                    readings.add_metric([dev_id, str(quality)], n)
            else:
                # a runtime without per-quality counts reports its total under "all"
                readings.add_metric([dev_id, "all"], h.readings)
            polls.add_metric([dev_id], h.polls)
            failures.add_metric([dev_id], h.failures)
            missed.add_metric([dev_id], h.missed)
            paused.add_metric([dev_id], getattr(h, "paused", 0))
            if h.last_duration_s is not None:
                duration.add_metric([dev_id], h.last_duration_s)
            if h.last_ok_us is not None:
                last_ok.add_metric([dev_id], h.last_ok_us / 1e6)
            for s in DEVICE_STATES:
                state.add_metric([dev_id, s], 1.0 if h.state == s else 0.0)
            requests.add_metric([dev_id], h.requests_per_poll)
            for stage, n in sorted(getattr(h, "exceptions", {}).items()):
                exceptions.add_metric([dev_id, stage], n)
            lost.add_metric([dev_id], getattr(h, "lost", 0))
            total_requests += h.requests_per_poll
            bus_id = getattr(poller.device, "bus", None)
            period = float(getattr(poller.device, "poll", 0) or 0)
            if isinstance(bus_id, str) and period > 0:
                share = min(1.0, (h.last_duration_s or 0.0) / period)
                busy[bus_id] = busy.get(bus_id, 0.0) + share
        cycle.add_metric([], total_requests)
        for bus_id, share in sorted(busy.items()):
            bus.add_metric([bus_id], min(1.0, share))
        yield from (readings, polls, failures, missed, paused, duration, last_ok, state, requests)
        yield from (exceptions, lost, cycle, bus)

    def _outbox(self, max_bytes: int) -> Iterator[Metric]:
        outbox = self.gateway.outbox
        if outbox is None:
            return
        s = outbox.stats()
        now = self._wall()
        for name, value in (
            ("metrogate_outbox_batches", s.batches),
            ("metrogate_outbox_records", s.records),
            ("metrogate_outbox_bytes", s.bytes),
            ("metrogate_outbox_max_bytes", max_bytes),
            (
                "metrogate_outbox_oldest_age_seconds",
                0.0 if s.oldest_sealed_us is None else max(0.0, now - s.oldest_sealed_us / 1e6),
            ),
        ):
            g = _gauge(name)
            g.add_metric([], value)
            yield g
        for name, value in (
            ("metrogate_outbox_dropped_batches_total", s.dropped_batches),
            ("metrogate_outbox_dropped_records_total", s.dropped_records),
            ("metrogate_batches_signed_total", max(0, s.next_seq - 1)),
        ):
            c = _counter(name)
            c.add_metric([], value)
            yield c
        drops = _counter("metrogate_outbox_drops_total", ["reason", "kind"])
        by_reason: Mapping[tuple[str, bool], int] = getattr(outbox, "drop_counts", {})
        for (reason, urgent), n in sorted(by_reason.items()):
            drops.add_metric([reason, "urgent" if urgent else "data"], n)
        yield drops
        held = _gauge("metrogate_noncritical_paused")
        held.add_metric([], 1.0 if getattr(self.gateway, "noncritical_paused", False) else 0.0)
        yield held
        yield from self._writer()
        if self.meter is not None:
            capacity, remaining = self.meter.forecast(max_bytes, s.bytes)
            for name, seconds in (
                ("metrogate_outbox_capacity_seconds", capacity),
                ("metrogate_outbox_remaining_seconds", remaining),
            ):
                if seconds is not None:
                    g = _gauge(name)
                    g.add_metric([], seconds)
                    yield g

    def _writer(self) -> Iterator[Metric]:
        writer = self.gateway.writer
        if writer is None:
            return
        w = writer.stats
        writable = _gauge("metrogate_outbox_writable")
        writable.add_metric([], 0.0 if w.failing else 1.0)
        held = _gauge("metrogate_outbox_held_records")
        held.add_metric([], w.held_records)
        failures = _counter("metrogate_outbox_write_failures_total")
        failures.add_metric([], w.failures)
        lost = _counter("metrogate_outbox_lost_records_total", ["kind"])
        for kind in ("data", "alarm", "event"):
            lost.add_metric([kind], w.lost.get(kind, 0))
        yield from (writable, held, failures, lost)

    def _publisher(self) -> Iterator[Metric]:
        publisher = self.gateway.publisher
        if publisher is None:
            return
        st = publisher.stats
        g = _gauge("metrogate_mqtt_connected")
        g.add_metric([], 1.0 if st.connected else 0.0)
        yield g
        for name, value in (
            ("metrogate_mqtt_connects_total", st.connects),
            ("metrogate_mqtt_published_total", st.published),
            ("metrogate_mqtt_failures_total", st.failures),
        ):
            c = _counter(name)
            c.add_metric([], value)
            yield c
        refused = _counter("metrogate_mqtt_refused_total", ["kind", "reason"])
        for (kind, reason), n in sorted(st.refused.items()):
            refused.add_metric([kind, reason], n)
        yield refused

    def _events(self) -> Iterator[Metric]:
        ev = self.gateway.events
        if ev is None:
            return
        for name, value in (
            ("metrogate_eventlog_entries", ev.entries),
            ("metrogate_eventlog_max_entries", ev.max_entries),
            ("metrogate_eventlog_write_ok", 0 if ev.write_error else 1),
        ):
            g = _gauge(name)
            g.add_metric([], value)
            yield g
        c = _counter("metrogate_eventlog_refused_total")
        c.add_metric([], ev.refused)
        yield c
