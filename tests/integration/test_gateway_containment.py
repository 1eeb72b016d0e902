"""One device can only fail itself — shown on real gateway runs, one per driver kind.

Every device talks to a real peer (the kind's simulator over a pseudo-terminal or
TCP, served as ``metrogate sim`` serves it), and readings go to a real Mosquitto.
For each driver kind, one device of that kind (``dut``) is made to raise an
exception no driver should ever raise: its real driver does its real exchange with
the peer, then an ``AttributeError`` comes out of ``read()`` — what an ``ascii``
instrument did with a reply like ``OL`` before its parser was fixed (that real
peer is the last test here). Meanwhile a Modbus TCP device (``good``), and for
kinds that share a bus a second device on the same line (``sibling``), must keep
delivering; the gateway must stay up; the faulty device's readings must reach the
broker bad, with a reason; and it must recover once the fault is gone.

The last test fills the outbox's disk (SQLite's ``max_page_count``, which fails
writes with SQLite's real "database or disk is full") and shows the gateway
survives it, reports it, and stores every held reading once space returns.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest

from drivers.base import Clock, Driver, Sample
from gateway.acquisition.build import build_drivers
from gateway.cli.simulate import run_simulators
from gateway.config.loader import LoadedConfig, load_config
from gateway.daemon import Gateway
from gateway.delivery.outbox import Outbox
from simulators.pty import SimLine
from simulators.serial_instruments import AsciiInstrumentSim
from tests.eventually import eventually
from tests.integration.gwtest import Collector, synced_clock
from tests.integration.test_gateway_e2e import assert_complete, collecting
from tests.services import Mosquitto

pytestmark = pytest.mark.services

MODBUS_POINTS = (
    "    points:\n"
    "      - {id: p0, table: holding, address: 0, type: float32, unit: bar,"
    " sim: {kind: ramp, start: 100, rate: 1, min: 0, max: 100000}}\n"
    "      - {id: p1, table: holding, address: 2, type: float32, unit: bar}\n"
)
ASCII_RESPONSE = r"'^(?P<status>ST|OL),?(?P<value>[-+ 0-9.]+)?\s*(?P<unit>\w+)?$'"


def dut_yaml(kind: str) -> tuple[str, bool]:
    """The devices of ``kind`` under test (``dut``, and ``sibling`` on a shared bus)."""
    head = "    bus: line\n    poll: 200ms\n"
    if kind == "modbus_tcp":  # behind the same simulated server as ``good``, unit 2
        return (
            "  - id: dut\n    driver: modbus_tcp\n    host: 127.0.0.1\n    port: 1502\n"
            "    unit: 2\n    poll: 200ms\n    timeout: 100ms\n" + MODBUS_POINTS
        ), False
    if kind in ("modbus_rtu", "modbus_ascii"):
        return "".join(
            f"  - id: {name}\n    driver: {kind}\n{head}    unit: {unit}\n" + MODBUS_POINTS
            for name, unit in (("dut", 1), ("sibling", 2))
        ), True
    if kind == "dlt645":
        return "".join(
            f'  - id: {name}\n    driver: dlt645\n{head}    address: "{address}"\n'
            '    points:\n      - {id: energy_import, di: "00010000", unit: kWh}\n'
            for name, address in (("dut", "123456789012"), ("sibling", "123456789013"))
        ), True
    if kind == "mtsics":
        return (
            f"  - id: dut\n    driver: mtsics\n{head}    points: [{{id: mass, unit: g}}]\n",
            False,
        )
    if kind == "toledo_continuous":
        return (
            f"  - id: dut\n    driver: toledo_continuous\n{head}"
            "    points: [{id: weight, field: weight, unit: kg}]\n"
        ), False
    if kind == "ascii":
        return (
            f'  - id: dut\n    driver: ascii\n{head}    request: "R\\r\\n"\n'
            f"    response: {ASCII_RESPONSE}\n"
            "    status: {ST: good, OL: uncertain/units_exceeded}\n"
            "    points: [{id: mass, unit: kg}]\n"
        ), False
    raise AssertionError(f"no peer for driver kind {kind}")


def write_config(tmp: Path, broker_port: int, kind: str, port: str) -> LoadedConfig:
    devices, _shared = dut_yaml(kind)
    bus = (
        ""
        if kind == "modbus_tcp"
        else f"buses: [{{id: line, port: {port}, baudrate: 115200, parity: N, timeout: 200ms}}]\n"
    )
    path = tmp / "gateway.yaml"
    path.write_text(
        f"gateway: {{id: gw1, site: test-site, state_dir: {tmp / 'state'}}}\n"
        f"mqtt: {{url: 'mqtt://127.0.0.1:{broker_port}', publish_timeout: 3s, backoff_max: 1s}}\n"
        "ops: {listen: '127.0.0.1:0'}\n" + bus + "devices:\n"
        "  - id: good\n    driver: modbus_tcp\n    host: 127.0.0.1\n    port: 1502\n"
        "    unit: 1\n    poll: 100ms\n    timeout: 50ms\n" + MODBUS_POINTS + devices
    )
    return load_config(path)


@asynccontextmanager
async def peers(tmp: Path, broker_port: int, kind: str) -> AsyncIterator[LoadedConfig]:
    """The config of ``kind``'s run, every device served by a real simulated peer."""
    async with AsyncExitStack() as stack:
        port = "/dev/null"  # pointed at the simulated line below
        if kind == "ascii":  # no simulator factory: replies cannot come from a regex
            instrument = AsciiInstrumentSim({"R": "ST,+0012.50 kg"})
            port = stack.enter_context(SimLine(instrument)).path
        loaded = write_config(tmp, broker_port, kind, port)
        await stack.enter_async_context(run_simulators(loaded.config, free_ports=True))
        yield loaded


class Faulty:
    """A device's real driver that, while ``armed``, raises after its real exchange."""

    def __init__(self, real: Driver) -> None:
        self.real = real
        self.device_id = real.device_id
        self.endpoint = real.endpoint
        self.armed = False
        self.raised = 0

    async def __aenter__(self) -> Self:  # the real driver was entered by build_drivers
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def read(self) -> list[Sample]:
        samples = await self.real.read()  # the peer is asked and answers, as always
        if self.armed:
            self.raised += 1
            raise AttributeError("'NoneType' object has no attribute 'replace'")
        return samples

    def describe_plan(self) -> list[str]:
        return self.real.describe_plan()

    def identity(self) -> dict[str, str]:
        return self.real.identity()


class Injector:
    """``build_drivers``, with the driver of device ``dut`` wrapped in :class:`Faulty`."""

    def __init__(self) -> None:
        self.faulty: Faulty | None = None

    async def __call__(
        self, loaded: LoadedConfig, stack: AsyncExitStack, *, clock: Clock
    ) -> dict[str, Driver]:
        drivers = await build_drivers(loaded, stack, clock=clock)
        self.faulty = Faulty(drivers["dut"])
        drivers["dut"] = self.faulty
        return drivers


@asynccontextmanager
async def running(gateway: Gateway) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop), name="gateway-under-test")
    try:
        async with asyncio.timeout(10):
            await gateway.ready.wait()
        yield task
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task


def readings(col: Collector, device: str, quality: str | None = None) -> list[dict[str, Any]]:
    return [r for r in col.readings(device) if quality is None or r["quality"] == quality]


def injected(col: Collector) -> list[dict[str, Any]]:
    """The bad readings of ``dut`` that the injected exception gave."""
    return [r for r in readings(col, "dut", "bad") if r.get("reason") == "device_failure"]


@pytest.mark.parametrize(
    "kind",
    ["modbus_tcp", "modbus_rtu", "modbus_ascii", "mtsics", "toledo_continuous", "ascii", "dlt645"],
)
async def test_an_unexpected_exception_in_one_device_costs_only_that_device(
    kind: str, mosquitto: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    injector = Injector()
    shared = dut_yaml(kind)[1]
    async with peers(tmp_path, mosquitto.port, kind) as loaded:
        gw = Gateway(loaded, clock_monitor=synced_clock(), build=injector)
        async with collecting(mosquitto, loaded) as col, running(gw) as task:
            await eventually(lambda: readings(col, "dut", "good"), "the peer answers", within=15)
            assert injector.faulty is not None
            faulty = injector.faulty
            faulty.armed = True
            await eventually(lambda: injected(col), "bad readings", within=10)
            health = gw.pollers["dut"].health
            assert health.state == "failing" and health.exceptions.get("read", 0) >= 1
            assert health.last_error == (
                "read: AttributeError: 'NoneType' object has no attribute 'replace'"
            )
            # the others keep delivering to the broker while the device fails
            good, sibling = len(readings(col, "good")), len(readings(col, "sibling"))
            await eventually(
                lambda: len(readings(col, "good", "good")) >= good + 40, "good data", within=10
            )
            if shared:
                await eventually(
                    lambda: len(readings(col, "sibling", "good")) >= sibling + 4,
                    "the device sharing the line",
                    within=10,
                )
            await eventually(lambda: faulty.raised >= 2, "a second failing poll", within=10)
            assert not task.done()
            faulty.armed = False
            recovered = len(readings(col, "dut", "good"))
            await eventually(lambda: health.state == "ok", "recovery", within=15)
            await eventually(
                lambda: len(readings(col, "dut", "good")) > recovered, "good again", within=10
            )
            assert all(p.health.state == "ok" for p in gw.pollers.values())
    bad = injected(col)
    assert bad and all(r["value"] is None for r in bad)
    assert {r["point"] for r in bad} == {p.id for p in loaded.config.devices[1].points}
    assert gw.pollers["good"].health.failures == 0
    assert not col.errors
    logged = [r for r in caplog.records if "unexpected AttributeError" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None  # once, with the traceback
    assert "device dut at " in logged[0].getMessage()  # naming device and endpoint


async def test_an_instrument_answering_a_status_alone_is_a_reading_not_a_crash(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """The real peer of the bug: an ``ascii`` instrument whose pattern makes the value
    optional, answering ``OL`` (overload). It used to raise AttributeError in the
    parser, which ended the device task and with it the gateway."""
    instrument = AsciiInstrumentSim({"R": "OL"})
    with SimLine(instrument) as line:
        loaded = write_config(tmp_path, mosquitto.port, "ascii", line.path)
        async with run_simulators(loaded.config, free_ports=True):
            gw = Gateway(loaded, clock_monitor=synced_clock())
            async with collecting(mosquitto, loaded) as col, running(gw) as task:
                await eventually(lambda: len(readings(col, "dut")) >= 3, "dut readings", within=15)
                good = len(readings(col, "good"))
                await eventually(
                    lambda: len(readings(col, "good")) >= good + 20, "good data", within=10
                )
                assert not task.done()
                instrument.replies["R"] = "ST,+0012.50 kg"
                await eventually(lambda: readings(col, "dut", "good"), "a weight", within=10)
    overloads = [r for r in readings(col, "dut") if r["quality"] == "uncertain"]
    assert overloads and all(
        r["value"] is None and r["reason"] == "units_exceeded" for r in overloads
    )
    assert readings(col, "dut", "good")[-1]["value"] == 12.5
    assert gw.pollers["dut"].health.exceptions == {}


def fill_disk(outbox: Outbox) -> None:
    """From now on the outbox file cannot grow by one page: SQLite's own "disk is full".

    ``max_page_count`` is a setting of the connection, so it goes through the
    outbox's own connection (there is no other: the file is locked exclusively).
    """
    conn = outbox._conn
    assert conn is not None
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")


def free_disk(outbox: Outbox) -> None:
    conn = outbox._conn
    assert conn is not None
    conn.execute("PRAGMA max_page_count = 1073741823")


async def health_of(port: int) -> tuple[int, dict[str, Any]]:
    def fetch() -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    return await asyncio.to_thread(fetch)


async def test_a_full_disk_under_the_outbox_is_survived_reported_and_caught_up(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    async with peers(tmp_path, mosquitto.port, "modbus_tcp") as loaded:
        gw = Gateway(loaded, clock_monitor=synced_clock())
        async with collecting(mosquitto, loaded) as col, running(gw) as task:
            assert gw.outbox is not None and gw.writer is not None and gw.ops is not None
            outbox, writer = gw.outbox, gw.writer
            await eventually(lambda: len(col.bodies) >= 5, "first batches", within=15)
            # an uplink outage lets the outbox grow until its disk is full
            await asyncio.to_thread(mosquitto.stop)
            await eventually(lambda: outbox.stats().batches >= 5, "a backlog", within=10)
            fill_disk(outbox)
            await eventually(lambda: writer.stats.held_records >= 100, "held", within=10)
            polls = gw.pollers["good"].health.polls
            await eventually(
                lambda: gw.pollers["good"].health.polls >= polls + 10, "polling on", within=10
            )
            status, doc = await health_of(gw.ops.port)
            assert status == 503 and doc["outbox"]["writable"] is False
            assert any(
                p.startswith("outbox not writable since ") and "database or disk is full" in p
                for p in doc["problems"]
            ), doc["problems"]
            assert writer.stats.failing and not task.done()
            assert all(p.health.state == "ok" for p in gw.pollers.values())
            # space returns, and so does the broker
            free_disk(outbox)
            await asyncio.to_thread(mosquitto.start)
            await eventually(lambda: not writer.stats.failing, "writable again", within=40)
            assert writer.stats.held_records == 0 and writer.stats.lost_records == 0
            target = outbox.stats().next_seq + 5
            await eventually(lambda: max(col.bodies, default=0) >= target, "caught up", within=30)
            last = max(col.bodies)
            status, doc = await health_of(gw.ops.port)
            assert doc["outbox"]["writable"] is True and doc["outbox"]["write_failures"] >= 1
    assert_complete(col, last)  # every sequence number, nothing reordered
    stamps = [r["ts"] for r in readings(col, "good") if r["point"] == "p0"]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert max(gaps) < 1_000_000, "no poll's readings went missing while the disk was full"
