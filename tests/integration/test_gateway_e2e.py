"""Gateway ↔ simulated Modbus TCP devices ↔ a real Mosquitto, end to end."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from drivers.modbus_codec import DataType, PointSpec, Table
from gateway.config.loader import LoadedConfig
from gateway.daemon import Gateway
from gateway.delivery.outbox import Outbox
from simulators.modbus_device import ModbusTcpSimulator, SimPoint
from simulators.values import Ramp
from tests.integration.gwtest import Collector, line_config, synced_clock, wait_until
from tests.services import Mosquitto

pytestmark = pytest.mark.services


def sim_units(units: int = 2, points: int = 10) -> dict[int, list[SimPoint]]:
    return {
        u: [
            SimPoint(
                PointSpec(f"p{i}", Table.HOLDING, 2 * i, DataType.FLOAT32),
                Ramp(start=u * 100, rate=1, min=0, max=100000),
            )
            for i in range(points)
        ]
        for u in range(1, units + 1)
    }


@asynccontextmanager
async def running(loaded: LoadedConfig) -> AsyncIterator[Gateway]:
    gateway = Gateway(loaded, clock_monitor=synced_clock())
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop), name="gateway-under-test")
    try:
        async with asyncio.timeout(10):
            await gateway.ready.wait()
        yield gateway
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task


@asynccontextmanager
async def collecting(broker: Mosquitto, loaded: LoadedConfig) -> AsyncIterator[Collector]:
    cfg = loaded.config
    base = f"{cfg.mqtt.prefix}/v1/{cfg.gateway.site}/{cfg.gateway.id}"
    collector = Collector(broker.port, base, cfg.gateway.state_dir)
    task = asyncio.create_task(collector.run(), name="collector")
    try:
        async with asyncio.timeout(10):
            await collector.subscribed.wait()  # nothing the gateway publishes is missed
        yield collector
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def assert_complete(collector: Collector, last_seq: int) -> None:
    """Every sequence number 1..last_seq arrived, each reading in order per device."""
    assert not collector.errors
    missing = sorted(set(range(1, last_seq + 1)) - set(collector.bodies))
    assert not missing, f"lost batches: {missing[:20]}"
    for dev in {r["device"] for r in collector.readings()}:
        stamps = [r["ts"] for r in collector.readings(dev) if r["point"] == "p0"]
        assert stamps == sorted(stamps), f"{dev}: readings out of order"


async def test_readings_reach_the_broker_signed_and_valid(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    async with ModbusTcpSimulator(sim_units()) as sim:
        loaded = line_config(tmp_path, mosquitto.port, sim.port)
        async with collecting(mosquitto, loaded) as col, running(loaded) as gw:
            await wait_until(lambda: len(col.readings()) >= 400, 20, "400 readings")
            await wait_until(lambda: any(s["state"] == "online" for s in col.status), 5, "birth")
            requests_per_poll = {p.health.requests_per_poll for p in gw.pollers.values()}
    assert requests_per_poll == {1}  # ten float32 at 0..19 are one request
    birth = next(s for s in col.status if s["state"] == "online")
    assert birth["software"]["name"] == "metrogate" and len(birth["software"]["sha256"]) == 64
    readings = col.readings("dev1")
    assert {r["point"] for r in readings} == {f"p{i}" for i in range(10)}
    assert all(r["quality"] == "good" and r["unit"] == "bar" for r in readings)
    assert all(r["value"] >= 100 for r in readings)  # the ramp of unit 1 starts at 100
    assert not col.errors
    kinds = {b["type"] for b in col.bodies.values()}
    assert {"data", "event"} <= kinds  # start-up events travel through the outbox too


async def test_broker_outage_loses_nothing(mosquitto: Mosquitto, tmp_path: Path) -> None:
    async with ModbusTcpSimulator(sim_units()) as sim:
        loaded = line_config(tmp_path, mosquitto.port, sim.port)
        async with collecting(mosquitto, loaded) as col, running(loaded) as gw:
            await wait_until(lambda: len(col.bodies) >= 10, 20, "first batches")
            mosquitto.stop()
            assert gw.outbox is not None
            outbox = gw.outbox
            await wait_until(lambda: outbox.stats().batches >= 30, 20, "a backlog while down")
            assert gw.publisher is not None and not gw.publisher.stats.connected
            mosquitto.start()
            await wait_until(
                lambda: gw.publisher is not None and gw.publisher.stats.connected, 20, "reconnect"
            )
            target = outbox.stats().next_seq + 20  # live data keeps coming during the drain
            await wait_until(lambda: max(col.bodies, default=0) >= target, 30, "drain + live")
            last = max(col.bodies)
    assert_complete(col, last)


async def test_dead_device_does_not_stop_the_others(mosquitto: Mosquitto, tmp_path: Path) -> None:
    async with ModbusTcpSimulator(sim_units()) as sim:
        loaded = line_config(tmp_path, mosquitto.port, sim.port)
        async with collecting(mosquitto, loaded) as col, running(loaded) as gw:
            await wait_until(lambda: len(col.readings("dev2")) >= 50, 20, "dev2 readings")
            sim.faults[2].silent = True
            await wait_until(lambda: gw.pollers["dev2"].health.state == "failing", 10, "failing")
            before = len(col.readings("dev1"))
            polls_before = gw.pollers["dev1"].health.polls
            await wait_until(
                lambda: gw.pollers["dev1"].health.polls >= polls_before + 20,
                10,
                "dev1 keeps polling",
            )
            await wait_until(lambda: len(col.readings("dev1")) >= before + 200, 10, "dev1 data")
            dead = [r for r in col.readings("dev2") if r["quality"] == "bad"]
            await wait_until(
                lambda: any(r["quality"] == "bad" for r in col.readings("dev2")),
                10,
                "dev2 reported bad",
            )
            dead = [r for r in col.readings("dev2") if r["quality"] == "bad"]
            sim.faults[2].silent = False
            await wait_until(lambda: gw.pollers["dev2"].health.state == "ok", 70, "recovery")
    assert all(r["value"] is None and r["reason"] == "no_communication" for r in dead)
    assert gw.pollers["dev1"].health.failures == 0


async def test_sigkill_mid_stream_loses_nothing(mosquitto: Mosquitto, tmp_path: Path) -> None:
    async with ModbusTcpSimulator(sim_units()) as sim:
        loaded = line_config(tmp_path, mosquitto.port, sim.port, poll="80ms")
        cfg_path = loaded.path
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        cmd = [
            sys.executable,
            "-m",
            "gateway",
            "run",
            "-c",
            str(cfg_path),
            "--log-level",
            "warning",
        ]
        async with collecting(mosquitto, loaded) as col:
            for round_ in range(3):
                proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
                try:
                    seen = len(col.bodies)
                    await wait_until(
                        lambda s=seen: len(col.bodies) >= s + 20, 30, f"batches in round {round_}"
                    )
                finally:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(timeout=10)
            proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
            try:
                await wait_until(lambda: len(col.bodies) >= 120, 30, "batches after restarts")
            finally:
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=20) == 0
            with Outbox(
                loaded.config.gateway.state_dir / "outbox.db", seal=_no_seal, max_bytes=1 << 30
            ) as outbox:
                stats = outbox.stats()
            await wait_until(
                lambda: max(col.bodies, default=0) >= stats.next_seq - 1 - stats.batches,
                20,
                "everything published",
            )
    assert stats.dropped_batches == 0
    last_published = stats.next_seq - 1 - stats.batches
    assert_complete(col, last_published)


def _no_seal(kind: str, seq: int, sealed: int, records: list[dict[str, object]]) -> bytes:
    raise AssertionError("nothing is put while checking")


async def test_an_event_logged_when_the_gateway_is_killed_is_published_after_restart(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    child = Path(__file__).with_name("event_crash_child.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    async with ModbusTcpSimulator(sim_units()) as sim:
        loaded = line_config(tmp_path, mosquitto.port, sim.port)
        done = subprocess.run(
            [sys.executable, str(child), str(loaded.path), "marker-7f3a"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == -signal.SIGKILL, done.stderr
        n = int(done.stdout.split()[-1])
        logged = (loaded.config.gateway.state_dir / "events.log").read_bytes()
        assert b"marker-7f3a" in logged  # in the log: so it must reach the platform
        async with collecting(mosquitto, loaded) as col, running(loaded):

            def marked() -> list[dict[str, object]]:
                return [
                    e
                    for b in col.bodies.values()
                    for e in b.get("events", [])
                    if e.get("data", {}).get("marker") == "marker-7f3a"
                ]

            await wait_until(lambda: bool(marked()), 20, "the logged event published")
    (entry,) = marked()
    assert entry["n"] == n and entry["type"] == "outbox_drop"
    assert not col.errors
