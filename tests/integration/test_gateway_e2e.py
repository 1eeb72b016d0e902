"""Gateway ↔ simulated Modbus TCP devices ↔ a real Mosquitto, end to end."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from asyncio.subprocess import DEVNULL, PIPE
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from drivers.modbus_codec import DataType, PointSpec, Table
from gateway.config.loader import LoadedConfig
from gateway.daemon import Gateway
from gateway.delivery.outbox import Outbox
from gateway.wire.encoding import make_sealer
from gateway.wire.keys import ensure_signer
from simulators.modbus_device import ModbusTcpSimulator, SimPoint
from simulators.values import Ramp
from tests.eventually import eventually
from tests.integration.gwtest import Collector, line_config, synced_clock
from tests.services import Mosquitto

CHILD = Path(__file__).with_name("event_crash_child.py")
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.services

REPO = Path(__file__).resolve().parents[2]


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


def test_the_collector_tells_a_changed_redelivery_from_an_identical_one(tmp_path: Path) -> None:
    """What the tests below rely on: a redelivery must repeat the first payload byte for byte."""
    seal = make_sealer("gw1", "test-site", ensure_signer(tmp_path / "gateway.key", create=True))
    reading = {
        "ts": 1_700_000_000_000_000,
        "device": "d",
        "point": "p",
        "value": 1.0,
        "quality": "good",
    }
    first = seal("data", 1, 1_700_000_000_000_000, [reading])
    changed = seal("data", 1, 1_700_000_000_000_001, [reading])
    topic = "metrogate/v1/test-site/gw1/data"
    col = Collector(0, "metrogate/v1/test-site/gw1", tmp_path)
    col._take(topic, first)
    col._take(topic, first)
    assert (col.redeliveries, col.errors) == (1, [])
    col._take(topic, changed)
    assert col.errors == [f"{topic}: redelivery of seq 1 is not byte-identical"]


async def test_readings_reach_the_broker_signed_and_valid(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    async with ModbusTcpSimulator(sim_units()) as sim:
        loaded = line_config(tmp_path, mosquitto.port, sim.port)
        async with collecting(mosquitto, loaded) as col, running(loaded) as gw:
            await eventually(lambda: len(col.readings()) >= 400, "400 readings", within=20)
            await eventually(
                lambda: any(s["state"] == "online" for s in col.status), "birth", within=5
            )
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
            await eventually(lambda: len(col.bodies) >= 10, "first batches", within=20)
            await asyncio.to_thread(mosquitto.stop)
            assert gw.outbox is not None
            outbox = gw.outbox
            await eventually(
                lambda: outbox.stats().batches >= 30, "a backlog while down", within=20
            )
            assert gw.publisher is not None and not gw.publisher.stats.connected
            await asyncio.to_thread(mosquitto.start)
            await eventually(
                lambda: gw.publisher is not None and gw.publisher.stats.connected,
                "reconnect",
                within=20,
            )
            target = outbox.stats().next_seq + 20  # live data keeps coming during the drain
            await eventually(
                lambda: max(col.bodies, default=0) >= target, "drain + live", within=30
            )
            last = max(col.bodies)
    assert_complete(col, last)


async def test_dead_device_does_not_stop_the_others(mosquitto: Mosquitto, tmp_path: Path) -> None:
    async with ModbusTcpSimulator(sim_units()) as sim:
        loaded = line_config(tmp_path, mosquitto.port, sim.port)
        async with collecting(mosquitto, loaded) as col, running(loaded) as gw:
            await eventually(lambda: len(col.readings("dev2")) >= 50, "dev2 readings", within=20)
            sim.faults[2].silent = True
            await eventually(
                lambda: gw.pollers["dev2"].health.state == "failing", "failing", within=10
            )
            before = len(col.readings("dev1"))
            polls_before = gw.pollers["dev1"].health.polls
            await eventually(
                lambda: gw.pollers["dev1"].health.polls >= polls_before + 20,
                "dev1 keeps polling",
                within=10,
            )
            await eventually(
                lambda: len(col.readings("dev1")) >= before + 200, "dev1 data", within=10
            )
            dead = [r for r in col.readings("dev2") if r["quality"] == "bad"]
            await eventually(
                lambda: any(r["quality"] == "bad" for r in col.readings("dev2")),
                "dev2 reported bad",
                within=10,
            )
            dead = [r for r in col.readings("dev2") if r["quality"] == "bad"]
            sim.faults[2].silent = False
            await eventually(lambda: gw.pollers["dev2"].health.state == "ok", "recovery", within=70)
    assert all(r["value"] is None and r["reason"] == "no_communication" for r in dead)
    assert gw.pollers["dev1"].health.failures == 0


async def test_sigkill_mid_stream_loses_nothing(mosquitto: Mosquitto, tmp_path: Path) -> None:
    async with ModbusTcpSimulator(sim_units()) as sim:
        loaded = line_config(tmp_path, mosquitto.port, sim.port, poll="80ms")
        cfg_path = loaded.path
        env = {**os.environ, "PYTHONPATH": str(REPO)}
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
                proc = await asyncio.create_subprocess_exec(*cmd, env=env, stderr=DEVNULL)
                try:
                    seen = len(col.bodies)
                    await eventually(
                        lambda s=seen: len(col.bodies) >= s + 20,
                        f"batches in round {round_}",
                        within=30,
                    )
                finally:
                    proc.send_signal(signal.SIGKILL)
                    async with asyncio.timeout(10):
                        await proc.wait()
            proc = await asyncio.create_subprocess_exec(*cmd, env=env, stderr=DEVNULL)
            try:
                await eventually(
                    lambda: len(col.bodies) >= 120, "batches after restarts", within=30
                )
            finally:
                proc.send_signal(signal.SIGTERM)
                async with asyncio.timeout(20):
                    assert await proc.wait() == 0
            with Outbox(
                loaded.config.gateway.state_dir / "outbox.db", seal=_no_seal, max_bytes=1 << 30
            ) as outbox:
                stats = outbox.stats()
            await eventually(
                lambda: max(col.bodies, default=0) >= stats.next_seq - 1 - stats.batches,
                "everything published",
                within=20,
            )
    assert stats.dropped_batches == 0
    last_published = stats.next_seq - 1 - stats.batches
    assert_complete(col, last_published)


def _no_seal(kind: str, seq: int, sealed: int, records: list[dict[str, object]]) -> bytes:
    raise AssertionError("nothing is put while checking")


async def test_an_event_logged_when_the_gateway_is_killed_is_published_after_restart(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    async with ModbusTcpSimulator(sim_units()) as sim:
        loaded = line_config(tmp_path, mosquitto.port, sim.port)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CHILD),
            str(loaded.path),
            "marker-7f3a",
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=PIPE,
            stderr=PIPE,
        )
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
        assert proc.returncode == -signal.SIGKILL, err.decode()
        n = int(out.split()[-1])
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

            await eventually(lambda: bool(marked()), "the logged event published", within=20)
    (entry,) = marked()
    assert entry["n"] == n and entry["type"] == "outbox_drop"
    assert not col.errors
