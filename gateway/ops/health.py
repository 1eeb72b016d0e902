"""The operations endpoint: ``/metrics`` (Prometheus) and ``/health`` (JSON) over plain HTTP.

A deliberately tiny HTTP/1.1 server on :func:`asyncio.start_server` — GET only, one
request per connection, bounded header size and read time — so the daemon needs
no web framework. Bind it to loopback (the default ``127.0.0.1:9108``): it has no
authentication.

``/health`` answers 200 with ``"status": "ok"`` when every device polls, the broker
is connected and accepts what is published, the clock is synchronised, the event
log is written and has room, the outbox can be written, and nothing was dropped from
the outbox or lost on the way into it since start; otherwise 503 with ``"status":
"degraded"`` and the reasons in ``"problems"`` (docs/operations.md lists every field).
``/metrics`` is always 200.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry

from gateway.common.opsserver import OpsServer
from gateway.ops.metrics import GatewayCollector, RateMeter
from gateway.ops.view import GatewayView

__all__ = ["gateway_health", "gateway_ops_server", "iso_us"]

log = logging.getLogger("metrogate.ops")

MAX_HEADER_BYTES = 8192
READ_TIMEOUT_S = 5.0
SAMPLE_EVERY_S = 5.0

HealthFn = Callable[[], dict[str, Any]]


def iso_us(us: int | None) -> str | None:
    """UTC µs → ISO 8601 with a ``Z`` (None stays None)."""
    if us is None:
        return None
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def gateway_health(
    gw: GatewayView,
    *,
    meter: RateMeter | None = None,
    dropped_at_start: int = 0,
    wall_us: Callable[[], int] = lambda: time.time_ns() // 1000,
) -> dict[str, Any]:
    """The ``/health`` document of a running gateway (see docs/operations.md)."""
    cfg = gw.loaded.config
    now_us = wall_us()
    problems: list[str] = []
    devices = []
    for dev_id, poller in gw.pollers.items():
        h = poller.health
        if h.state != "ok":
            problems.append(
                f"device {dev_id} {h.state}" + (f": {h.last_error}" if h.last_error else "")
            )
        devices.append(
            {
                "id": dev_id,
                "driver": h.driver,
                "endpoint": h.endpoint,
                "state": h.state,
                "polls": h.polls,
                "failures": h.failures,
                "missed": h.missed,
                "readings": h.readings,
                "requests_per_poll": h.requests_per_poll,
                "last_ok": iso_us(h.last_ok_us),
                "last_error": h.last_error,
                "last_duration_s": h.last_duration_s,
                "poll_s": float(getattr(poller.device, "poll", 0) or 0),
                "exceptions": dict(h.exceptions),
                "lost": h.lost,
            }
        )
        if h.lost:
            problems.append(f"device {dev_id}: {h.lost} reading(s) could not be stored")
    doc: dict[str, Any] = {
        "status": "ok",
        "problems": problems,
        "gateway": cfg.gateway.id,
        "site": cfg.gateway.site,
        "topic": gw.base_topic,
        "up_since": iso_us(gw.started_us),
        "uptime_s": round(max(0, now_us - gw.started_us) / 1e6, 3),
        "config": {"path": str(gw.loaded.path), "sha256": gw.loaded.sha256},
        "software": gw.software.as_dict(),
        "devices": devices,
        "outbox": _outbox(gw, meter, dropped_at_start, now_us, problems),
        "broker": _broker(gw, problems),
        "events": _events(gw, problems),
        "clock": {
            "state": str(gw.clock_monitor.state),
            "synchronised": gw.clock_monitor.synchronised,
        },
        "loop": {
            "max_stall_s": round(gw.stalls.stats.max_s, 4),
            "stalls": gw.stalls.stats.stalls,
        },
    }
    if not gw.clock_monitor.synchronised:
        problems.append("clock not synchronised")
    doc["status"] = "ok" if not problems else "degraded"
    return doc


def _outbox(
    gw: GatewayView,
    meter: RateMeter | None,
    dropped_at_start: int,
    now_us: int,
    problems: list[str],
) -> dict[str, Any] | None:
    if gw.outbox is None:
        return None
    s = gw.outbox.stats()
    max_bytes = int(gw.loaded.config.outbox.max_bytes)
    max_age = gw.loaded.config.outbox.max_age
    out: dict[str, Any] = {
        "batches": s.batches,
        "records": s.records,
        "bytes": s.bytes,
        "max_bytes": max_bytes,
        "max_age_s": max_age,
        "fill_ratio": round(s.bytes / max_bytes, 6) if max_bytes else None,
        "oldest": iso_us(s.oldest_sealed_us),
        "oldest_age_s": None
        if s.oldest_sealed_us is None
        else round(max(0, now_us - s.oldest_sealed_us) / 1e6, 3),
        "dropped_batches": s.dropped_batches,
        "dropped_records": s.dropped_records,
        "next_seq": s.next_seq,
        "readings_per_s": None,
        "bytes_per_s": None,
        "capacity_s": None,
        "remaining_s": None,
        "rate_estimated": True,
    }
    if meter is not None:
        rate = meter.readings_per_s()
        capacity, remaining = meter.forecast(max_bytes, s.bytes)
        if max_age is not None:
            # the age bound drops data sooner than the byte bound when it is shorter
            capacity = max_age if capacity is None else min(capacity, max_age)
        out.update(
            readings_per_s=None if rate is None else round(rate, 3),
            bytes_per_s=None if rate is None else round(rate * meter.bytes_per_reading, 1),
            capacity_s=None if capacity is None else round(capacity, 1),
            remaining_s=None if remaining is None else round(remaining, 1),
            rate_estimated=meter.estimated,
        )
    if s.dropped_batches > dropped_at_start:
        problems.append(f"outbox dropped {s.dropped_batches - dropped_at_start} batch(es)")
    writer = gw.writer
    if writer is not None:
        w = writer.stats
        out.update(
            writable=not w.failing,
            write_failures=w.failures,
            write_error=w.last_error,
            held_records=w.held_records,
            lost_records=dict(w.lost),
        )
        if w.failing:
            problems.append(
                f"outbox not writable since {iso_us(w.failing_since_us)}: {w.last_error};"
                f" {w.held_records} record(s) held in memory"
            )
        if w.lost_records:
            problems.append(f"outbox: {w.lost_records} record(s) lost while it was not writable")
    return out


def _broker(gw: GatewayView, problems: list[str]) -> dict[str, Any] | None:
    mqtt = gw.loaded.config.mqtt
    if gw.publisher is None:
        return None
    st = gw.publisher.stats
    if not st.connected:
        problems.append(
            f"broker {mqtt.host}:{mqtt.port} not connected"
            + (f": {st.last_error}" if st.last_error else "")
        )
    for kind, episode in sorted(st.refusing.items()):
        problems.append(
            f"broker {mqtt.host}:{mqtt.port} refuses {kind} batches: {episode.reason} "
            f"(0x{episode.code:02X}) since {iso_us(episode.since_us)}, "
            f"{episode.batches} refused; kept in the outbox"
        )
    return {
        "url": mqtt.url,
        "connected": st.connected,
        "connected_since": iso_us(st.connected_since_us),
        "connects": st.connects,
        "published": st.published,
        "failures": st.failures,
        "last_error": st.last_error,
        "refused": [
            {"kind": kind, "reason": reason, "count": n}
            for (kind, reason), n in sorted(st.refused.items())
        ],
        "refusing": {
            kind: {
                "reason": e.reason,
                "code": e.code,
                "since": iso_us(e.since_us),
                "batches": e.batches,
                "first_seq": e.first_seq,
            }
            for kind, e in sorted(st.refusing.items())
        },
    }


def _events(gw: GatewayView, problems: list[str]) -> dict[str, Any] | None:
    ev = gw.events
    if ev is None:
        return None
    if ev.write_error is not None:
        problems.append(f"event log cannot be written: {ev.write_error}")
    if ev.full:
        problems.append(
            f"event log full ({ev.entries} of {ev.max_entries} entries): "
            f"{ev.refused} event(s) not recorded, parameter changes refused"
        )
    elif not ev.parameter_changes_allowed:
        problems.append(
            f"event log nearly full ({ev.entries} of {ev.max_entries} entries): "
            "parameter changes refused"
        )
    if ev.changes_refused:
        problems.append(
            f"{ev.changes_refused} parameter change(s) at start-up not recorded one by one "
            "(event log full)"
        )
    return {
        "entries": ev.entries,
        "max_entries": ev.max_entries,
        "pending": ev.pending,
        "refused": ev.refused,
        "parameter_changes_allowed": ev.parameter_changes_allowed,
        "changes_refused": ev.changes_refused,
        "write_error": ev.write_error,
    }


def gateway_ops_server(gw: GatewayView, listen_host: str, listen_port: int) -> OpsServer:
    """The ops endpoint of a gateway: its collector on a fresh registry, its health, rates."""
    registry = CollectorRegistry(auto_describe=False)
    meter = RateMeter(gw)
    registry.register(GatewayCollector(gw, meter=meter))
    dropped = gw.outbox.stats().dropped_batches if gw.outbox is not None else 0
    return OpsServer(
        listen_host,
        listen_port,
        registry,
        lambda: gateway_health(gw, meter=meter, dropped_at_start=dropped),
        on_tick=meter.sample,
    )
