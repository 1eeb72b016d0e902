"""The ops endpoint over a real socket: ingest metrics parsed, rates, bad requests."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gateway.acquisition.poller import DeviceHealth
from gateway.common.opsserver import MAX_CONNECTIONS, OpsServer
from gateway.ops.metrics import RateMeter
from gateway.ops.view import OutboxView
from gateway.wire.verify import SequenceTracker
from supervision.metrics import INGEST_METRICS, IngestCollector
from tests.eventually import eventually


async def request(port: int, raw: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        writer.write_eof()  # a request cut short ends here instead of timing out
        await writer.drain()
        async with asyncio.timeout(10):
            data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def ingest_registry(counts: Counter[str], tracker: SequenceTracker) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(IngestCollector(counts, tracker=tracker, gateways=lambda: ["gw1", "gw2"]))
    return registry


async def test_ingest_metrics_scraped_and_parsed() -> None:
    counts: Counter[str] = Counter(
        received=120, acked=118, duplicate=3, gap_fill=1, verified=110, writes=7,
        readings_written=1000, write_failures=2, dead_letter=4, unacknowledged=1,
        **{"dead_letter.bad_signature": 3, "dead_letter.unknown_gateway": 1,
           "refused.not_authorized": 1, "dropped.qos0": 7, "dropped.status_unregistered": 2,
           "security.conflict": 1, "security.event_gap": 2},
    )  # fmt: skip
    tracker = SequenceTracker()
    for seq in (1, 2, 5, 6, 9):  # 3-4 and 7-8 missing
        tracker.record("gw1", seq, digest=bytes([seq]))
    tracker.record("gw2", 1, digest=b"x")
    async with OpsServer("127.0.0.1", 0, ingest_registry(counts, tracker), lambda: {}) as srv:
        status, body = await request(srv.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        counts["received"] += 5  # read at scrape time, not when registered
        _, again = await request(srv.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(body.decode())
        for s in fam.samples
    }
    assert samples[("metrogate_ingest_messages_total", (("outcome", "received"),))] == 120
    assert samples[("metrogate_ingest_messages_total", (("outcome", "duplicate"),))] == 3
    assert samples[("metrogate_ingest_messages_total", (("outcome", "replay"),))] == 0
    assert samples[("metrogate_ingest_verified_total", ())] == 110
    assert samples[("metrogate_ingest_readings_written_total", ())] == 1000
    assert samples[("metrogate_ingest_dead_letters_total", (("reason", "bad_signature"),))] == 3
    assert samples[("metrogate_ingest_messages_total", (("outcome", "unacknowledged"),))] == 1
    refused = ("metrogate_ingest_dead_letters_refused_total", (("reason", "not_authorized"),))
    assert samples[refused] == 1
    assert samples[("metrogate_ingest_dropped_total", (("reason", "qos0"),))] == 7
    assert samples[("metrogate_ingest_dropped_total", (("reason", "status_unregistered"),))] == 2
    assert samples[("metrogate_ingest_security_events_total", (("kind", "conflict"),))] == 1
    assert samples[("metrogate_ingest_security_events_total", (("kind", "event_gap"),))] == 2
    assert samples[("metrogate_ingest_gap_batches", (("gateway", "gw1"),))] == 4
    assert samples[("metrogate_ingest_gap_batches", (("gateway", "gw2"),))] == 0
    assert samples[("metrogate_ingest_high_seq", (("gateway", "gw1"),))] == 9
    names = {n.removesuffix("_created") for n, _ in samples} | {
        f.name + "_total" for f in text_string_to_metric_families(body.decode())
        if f.type == "counter"
    }  # fmt: skip
    assert set(INGEST_METRICS) <= names
    assert b'outcome="received"} 125.0' in again


async def test_bad_requests_get_http_errors_and_the_server_stays_up() -> None:
    health_calls = 0

    def health() -> dict[str, object]:
        nonlocal health_calls
        health_calls += 1
        if health_calls == 2:
            raise RuntimeError("broken health source")
        return {"status": "ok"}

    async with OpsServer("127.0.0.1", 0, CollectorRegistry(), health) as srv:
        assert (await request(srv.port, b"POST /metrics HTTP/1.1\r\n\r\n"))[0] == 405
        assert (await request(srv.port, b"GET /nope HTTP/1.1\r\n\r\n"))[0] == 404
        assert (await request(srv.port, b"\xff\xfe garbage\r\n\r\n"))[0] == 400
        assert (await request(srv.port, b"GET /health HTTP/1.1\r\n"))[0] == 400  # cut short
        assert (await request(srv.port, b"GET /health HTTP/1.1\r\n\r\n")) == (
            200,
            b'{\n "status": "ok"\n}\n',
        )
        assert (await request(srv.port, b"GET /health HTTP/1.1\r\n\r\n"))[0] == 500
        assert (await request(srv.port, b"GET /health HTTP/1.1\r\n\r\n"))[0] == 200


async def test_server_samples_on_its_own_tick() -> None:
    ticks = 0

    def tick() -> None:
        nonlocal ticks
        ticks += 1

    async with OpsServer("127.0.0.1", 0, CollectorRegistry(), dict, on_tick=tick, tick_s=0.01):
        await eventually(lambda: ticks >= 3, "three ticks", within=5)
    settled = ticks
    await asyncio.sleep(0.05)
    assert ticks == settled  # the ticker stopped with the server


class _Poller:
    def __init__(self, dev_id: str) -> None:
        self.health = DeviceHealth(dev_id, "modbus_tcp", "tcp://test")
        self.device: Any = None


class _Gw:
    """Pollers and no outbox: what RateMeter reads."""

    def __init__(self) -> None:
        self.pollers = {"d1": _Poller("d1"), "d2": _Poller("d2")}
        self.outbox: OutboxView | None = None


def test_rate_meter_forecasts_outbox_capacity(tmp_path: Path) -> None:
    now = [0.0]
    gw = _Gw()
    meter = RateMeter(gw, window=60, default_bytes_per_reading=100, monotonic=lambda: now[0])
    meter.sample()
    assert meter.readings_per_s() is None and meter.forecast(1000, 0) == (None, None)
    for _ in range(20):  # 10 s at 50 readings/s in total
        now[0] += 0.5
        for p in gw.pollers.values():
            p.health.readings += 25
        meter.sample()
    assert meter.readings_per_s() == 100.0
    assert meter.bytes_per_s() == 10_000.0 and meter.estimated
    assert meter.forecast(1_000_000, 400_000) == (100.0, 60.0)
    for _ in range(200):  # 100 s idle: the window forgets the old rate
        now[0] += 0.5
        meter.sample()
    assert meter.readings_per_s() == 0.0
    assert meter.forecast(1_000_000, 0) == (None, None)


async def test_a_flood_of_idle_connections_is_bounded_and_the_endpoint_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """More idle connections than MAX_CONNECTIONS: the extra ones are closed at once
    (the daemon keeps its file descriptors), logged once per flood, and once the flood
    ends /health answers."""
    caplog.set_level(logging.WARNING, logger="metrogate.ops")
    async with OpsServer("127.0.0.1", 0, CollectorRegistry(), lambda: {"status": "ok"}) as srv:
        idle = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(40)]
        await eventually(lambda: srv.refused >= 40 - MAX_CONNECTIONS, "refused", within=5)
        assert srv.refused == 40 - MAX_CONNECTIONS
        assert srv.open_connections == MAX_CONNECTIONS
        for _, w in idle:
            w.close()
        await eventually(
            lambda: srv.open_connections == 0, "the flood's connections closed", within=10
        )
        assert (await request(srv.port, b"GET /health HTTP/1.1\r\n\r\n"))[0] == 200
    floods = [r for r in caplog.records if "closing new ones unanswered" in r.getMessage()]
    assert len(floods) == 1


_LINES = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda m, t, v: f"{m} {t} {v}".encode(errors="surrogateescape"),
        st.sampled_from(["GET", "POST", "get", "", "GET GET", "\x00"]),
        st.one_of(st.sampled_from(["/health", "/metrics", "/", "*", "/%00"]), st.text(max_size=30)),
        st.sampled_from(["HTTP/1.1", "HTTP/1.0", "", "HTTP/9"]),
    ),
)


@settings(max_examples=200, deadline=None)
@given(line=_LINES, headers=st.lists(st.binary(max_size=60), max_size=5), end=st.booleans())
def test_any_bytes_get_an_http_status_and_the_server_answers_on(
    line: bytes, headers: list[bytes], end: bool
) -> None:
    raw = line + b"".join(b"\r\n" + h for h in headers) + (b"\r\n\r\n" if end else b"")

    async def run() -> None:
        async with OpsServer("127.0.0.1", 0, CollectorRegistry(), lambda: {"status": "ok"}) as srv:
            status, _ = await request(srv.port, raw)
            assert status in (200, 400, 404, 405), raw
            assert (await request(srv.port, b"GET /health HTTP/1.1\r\n\r\n"))[0] == 200

    asyncio.run(run())
