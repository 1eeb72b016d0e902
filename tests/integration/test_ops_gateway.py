"""The ops endpoint of a real gateway: metrics scraped and parsed, health through outages."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.cli.status import cmd_status
from gateway.config.loader import LoadedConfig, load_config
from gateway.daemon import Gateway
from gateway.ops.health import gateway_ops_server
from simulators.modbus_device import ModbusTcpSimulator
from tests.eventually import eventually
from tests.integration.gwtest import line_config, synced_clock
from tests.integration.test_gateway_e2e import sim_units
from tests.services import Mosquitto, free_port

pytestmark = pytest.mark.services


def with_dead_device(loaded: LoadedConfig) -> LoadedConfig:
    """The same line plus a device on a port where nothing listens."""
    path = loaded.path
    path.write_text(
        path.read_text()
        + f"  - id: dead1\n    driver: modbus_tcp\n    host: 127.0.0.1\n    port: {free_port()}\n"
        "    poll: 200ms\n    timeout: 50ms\n    points:\n"
        "      - {id: p0, table: holding, address: 0, type: float32, unit: bar}\n"
    )
    return load_config(path)


@asynccontextmanager
async def running_with_ops(loaded: LoadedConfig) -> AsyncIterator[tuple[Gateway, str]]:
    gateway = Gateway(loaded, clock_monitor=synced_clock())
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop), name="gateway-under-test")
    try:
        async with asyncio.timeout(10):
            await gateway.ready.wait()
        server = gateway_ops_server(gateway, "127.0.0.1", 0)
        server.tick_s = 0.2  # sample rates quickly so the forecast is known within the test
        async with server:
            yield gateway, f"http://127.0.0.1:{server.port}"
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task


async def get(url: str) -> tuple[int, str, bytes]:
    def fetch() -> tuple[int, str, bytes]:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status, r.headers["Content-Type"], r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers["Content-Type"], exc.read()

    return await asyncio.to_thread(fetch)


async def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, ctype, body = await get(base + "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def health(base: str) -> tuple[int, dict[str, Any]]:
    status, ctype, body = await get(base + "/health")
    assert ctype == "application/json"
    return status, json.loads(body)


async def status_command(base: str) -> tuple[int, str]:
    out = io.StringIO()
    args = argparse.Namespace(url=base, json=False, timeout=5.0)
    with redirect_stdout(out):
        code = await asyncio.to_thread(cmd_status, args)
    return code, out.getvalue()


async def test_metrics_scraped_and_parsed(mosquitto: Mosquitto, tmp_path: Path) -> None:
    async with ModbusTcpSimulator(sim_units()) as sim:
        loaded = line_config(tmp_path, mosquitto.port, sim.port)
        async with running_with_ops(loaded) as (gw, base):
            assert gw.publisher is not None
            pub = gw.publisher
            await eventually(
                lambda: (
                    pub.stats.published >= 20
                    and all(p.health.polls >= 10 for p in gw.pollers.values())
                ),
                "published batches",
                within=20,
            )
            m = await scrape(base)
    info = [k for k in m if k[0] == "metrogate_info"]
    assert len(info) == 1 and dict(info[0][1])["gateway"] == "gw1"
    assert dict(info[0][1])["sha256"] == gw.software.sha256
    polls = m[("metrogate_device_polls_total", (("device", "dev1"),))]
    assert polls >= 10
    readings = sum(v for (n, lab), v in m.items() if n == "metrogate_readings_total" and
                   dict(lab)["device"] == "dev1")  # fmt: skip
    assert readings == 10 * polls  # ten points per poll, counted together
    assert m[("metrogate_device_state", (("device", "dev1"), ("state", "ok")))] == 1
    assert m[("metrogate_device_state", (("device", "dev1"), ("state", "failing")))] == 0
    assert m[("metrogate_requests_per_cycle", ())] == 2  # two units, one request each
    assert m[("metrogate_mqtt_connected", ())] == 1
    assert m[("metrogate_mqtt_published_total", ())] >= 20
    assert m[("metrogate_batches_signed_total", ())] >= m[("metrogate_mqtt_published_total", ())]
    assert m[("metrogate_outbox_dropped_batches_total", ())] == 0
    assert m[("metrogate_outbox_max_bytes", ())] == int(loaded.config.outbox.max_bytes)
    assert 0 < m[("metrogate_device_poll_duration_seconds", (("device", "dev1"),))] < 1
    assert m[("metrogate_clock_synchronised", ())] == 1


async def test_health_reflects_dead_device_and_broker_outage(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    async with ModbusTcpSimulator(sim_units()) as sim:
        loaded = with_dead_device(line_config(tmp_path, mosquitto.port, sim.port))
        async with running_with_ops(loaded) as (gw, base):
            assert gw.publisher is not None
            pub = gw.publisher
            await eventually(
                lambda: gw.pollers["dead1"].health.failures >= 1, "dead fails", within=10
            )
            await eventually(lambda: pub.stats.connected, "connected", within=10)
            code, doc = await health(base)
            assert code == 503 and doc["status"] == "degraded"
            devices = {d["id"]: d for d in doc["devices"]}
            assert devices["dead1"]["state"] == "failing" and devices["dead1"]["last_error"]
            assert devices["dev1"]["state"] == "ok" and devices["dev1"]["last_ok"]
            assert [p for p in doc["problems"] if p.startswith("device dead1 failing")]
            assert not [p for p in doc["problems"] if "broker" in p]
            assert doc["broker"]["connected"] is True
            assert doc["config"]["sha256"] == loaded.sha256
            assert doc["software"]["sha256"] == gw.software.sha256 and doc["up_since"]
            await eventually(
                lambda: gw.outbox is not None and gw.outbox.stats().next_seq > 5,
                "batches",
                within=10,
            )

            # the rate is sampled every 0.2 s here: the forecast becomes known
            async def forecast_known() -> bool:
                return (await health(base))[1]["outbox"]["capacity_s"] is not None

            await eventually(forecast_known, "the backlog forecast", within=5, interval=0.05)
            code, doc = await health(base)
            ob = doc["outbox"]
            assert ob["readings_per_s"] > 50  # 2 units × 10 points every 100 ms (+ dead one)
            assert ob["capacity_s"] == pytest.approx(ob["max_bytes"] / ob["bytes_per_s"], rel=0.01)

            code, text = await status_command(base)
            assert code == 1 and "DEGRADED" in text and "dead1" in text and "holds" in text

            await asyncio.to_thread(mosquitto.stop)
            await eventually(lambda: not pub.stats.connected, "outage seen", within=20)
            code, doc = await health(base)
            assert doc["broker"]["connected"] is False
            assert [p for p in doc["problems"] if p.startswith("broker 127.0.0.1")]
            await eventually(
                lambda: gw.outbox is not None and gw.outbox.stats().batches >= 5,
                "backlog",
                within=10,
            )
            code, doc = await health(base)
            assert doc["outbox"]["batches"] >= 5 and doc["outbox"]["oldest_age_s"] >= 0
            m = await scrape(base)
            assert m[("metrogate_mqtt_connected", ())] == 0
            assert m[("metrogate_outbox_batches", ())] >= 5
            assert m[("metrogate_device_state", (("device", "dead1"), ("state", "failing")))] == 1

            await asyncio.to_thread(mosquitto.start)
            await eventually(lambda: pub.stats.connected, "reconnect", within=20)
            code, doc = await health(base)
            assert doc["broker"]["connected"] is True
            assert not [p for p in doc["problems"] if "broker" in p]


async def test_status_healthy_gateway_exits_zero(mosquitto: Mosquitto, tmp_path: Path) -> None:
    async with ModbusTcpSimulator(sim_units()) as sim:
        loaded = line_config(tmp_path, mosquitto.port, sim.port)
        async with running_with_ops(loaded) as (gw, base):
            assert gw.publisher is not None
            pub = gw.publisher
            await eventually(
                lambda: (
                    pub.stats.connected and all(p.health.state == "ok" for p in gw.pollers.values())
                ),
                "all ok",
                within=10,
            )
            code, text = await status_command(base)
            status, _, _ = await get(base + "/nothing")
            post_status = await asyncio.to_thread(_post, base + "/metrics")
    assert code == 0, text
    assert "gw1 at test-site: OK" in text
    assert status == 404 and post_status == 405


def _post(url: str) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=b"x"), timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_status_of_unreachable_gateway_exits_one(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(url=f"http://127.0.0.1:{free_port()}", json=False, timeout=2.0)
    assert cmd_status(args) == 1
    assert "cannot read gateway health" in capsys.readouterr().err
