"""Overflow policies in a running gateway whose broker is down: the outbox at its bound,
drops and pauses counted, in the metrics and in the audit trail."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.config.loader import LoadedConfig, load_config
from gateway.daemon import Gateway
from gateway.ops.metrics import GatewayCollector
from simulators.modbus_device import ModbusTcpSimulator
from tests.eventually import eventually
from tests.integration.gwtest import line_config
from tests.integration.test_gateway_e2e import collecting, running, sim_units
from tests.services import Mosquitto

pytestmark = pytest.mark.services


def overflow_config(tmp: Path, broker: int, sim: int, outbox: str) -> LoadedConfig:
    loaded = line_config(tmp, broker, sim, units=2, poll="80ms", extra=f"outbox: {outbox}\n")
    text = loaded.path.read_text().replace("  - id: dev2\n", "  - id: dev2\n    critical: false\n")
    loaded.path.write_text(text)
    return load_config(loaded.path)


def events(loaded: LoadedConfig, type_: str) -> list[dict[str, Any]]:
    path = loaded.config.gateway.state_dir / "events.log"
    entries = [json.loads(line.split(b"\t", 1)[0]) for line in path.read_bytes().splitlines()]
    return [e["data"] for e in entries if e["type"] == type_]


def metric(gw: Gateway, name: str, **labels: str) -> float:
    for family in GatewayCollector(gw).collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def test_stop_noncritical_pauses_the_noncritical_device_until_there_is_room(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    await asyncio.to_thread(mosquitto.stop)  # the uplink is down from the start
    async with ModbusTcpSimulator(sim_units(2, 10)) as sim:
        loaded = overflow_config(
            tmp_path, mosquitto.port, sim.port, "{max_bytes: 48KiB, overflow: stop_noncritical}"
        )
        async with running(loaded) as gw:
            outbox, dev1, dev2 = gw.outbox, gw.pollers["dev1"], gw.pollers["dev2"]
            assert outbox is not None
            await eventually(lambda: gw.noncritical_paused, "non-critical paused", within=30)
            assert outbox.fill_ratio >= 0.95
            polls2, polls1 = dev2.health.polls, dev1.health.polls
            # the critical device alone fills the rest: then its oldest data goes
            await eventually(lambda: outbox.dropped_batches > 0, "a drop at the bound", within=30)
            assert dev2.health.polls == polls2 and dev2.health.paused > 0
            assert dev1.health.polls > polls1 and dev1.health.paused == 0
            assert outbox.stats().bytes <= 48 * 1024
            paused_slots = metric(gw, "metrogate_device_polls_paused_total", device="dev2")
            assert paused_slots > 0
            assert metric(gw, "metrogate_noncritical_paused") == 1.0
            dropped = outbox.drop_counts[("bytes", False)]
            assert (
                metric(gw, "metrogate_outbox_drops_total", reason="bytes", kind="data") >= dropped
            )
            await asyncio.to_thread(mosquitto.start)  # room again once the backlog is out
            await eventually(lambda: not gw.noncritical_paused, "resumed", within=30)
            await eventually(lambda: dev2.health.polls > polls2, "dev2 polls again", within=10)
            assert metric(gw, "metrogate_noncritical_paused") == 0.0
            total_dropped = outbox.dropped_batches
    paused = events(loaded, "noncritical_paused")
    resumed = events(loaded, "noncritical_resumed")
    assert len(paused) == 1 and paused[0]["devices"] == ["dev2"] and paused[0]["fill"] >= 0.95
    assert len(resumed) == 1 and resumed[0]["fill"] <= 0.90
    assert resumed[0]["paused_polls"]["dev2"] >= paused_slots
    drops = events(loaded, "outbox_drop")
    assert sum(d["batches"] for d in drops) == total_dropped
    assert all(d["reason"] == "bytes" and not d["urgent"] for d in drops)


async def test_thin_keeps_a_coarse_record_of_every_device_and_says_so(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    k = 4
    async with ModbusTcpSimulator(sim_units(2, 10)) as sim:
        loaded = overflow_config(
            tmp_path,
            mosquitto.port,
            sim.port,
            f"{{max_bytes: 64KiB, overflow: thin, thin_keep: {k}}}",
        )
        # the subscriber's persistent session exists before the outage: nothing is missed
        async with collecting(mosquitto, loaded) as col:
            await asyncio.to_thread(mosquitto.stop)
            async with running(loaded) as gw:
                outbox = gw.outbox
                assert outbox is not None
                await eventually(lambda: outbox.dropped_batches >= 100, "thinning", within=60)
                await asyncio.to_thread(mosquitto.start)
                await eventually(lambda: outbox.stats().batches < 10, "drained", within=30)
                # drops are written down once a second: wait until all of them are
                await eventually(
                    lambda: (
                        sum(d["batches"] for d in events(loaded, "outbox_drop"))
                        == outbox.dropped_batches
                    ),
                    "every drop in the event log",
                    within=10,
                )
                drop_events = events(loaded, "outbox_drop")
                thinned_to = max(d["last_seq"] for d in drop_events)
                dropped = sum(d["batches"] for d in drop_events)
                # every number up to there either arrived or was reported dropped
                try:
                    await eventually(
                        lambda: sum(s <= thinned_to for s in col.bodies) + dropped == thinned_to,
                        "the thinned record",
                        within=60,
                    )
                except AssertionError as exc:
                    arrived = sum(s <= thinned_to for s in col.bodies)
                    lanes = gw.publisher.lanes if gw.publisher is not None else None
                    raise AssertionError(
                        f"{exc}: up to seq {thinned_to}, {arrived} arrived and {dropped} were"
                        f" reported dropped; {outbox.stats().batches} batches still stored,"
                        f" lanes handed {lanes.handed if lanes is not None else None}"
                    ) from exc
                counts = dict(outbox.drop_counts)
    assert {d["reason"] for d in drop_events} == {"thin"} and counts == {
        ("thin", False): sum(d["batches"] for d in drop_events)
    }
    # in the thinned part one tick in k was kept, with both devices' polls in it
    kept = [b for s, b in col.bodies.items() if b["type"] == "data" and s <= thinned_to]
    polls = {
        dev: sum(
            1 for b in kept for r in b["readings"] if r["device"] == dev and r["point"] == "p0"
        )
        for dev in ("dev1", "dev2")
    }
    assert all(n >= 5 for n in polls.values()), polls  # both devices, not every k-th poll
    assert abs(polls["dev1"] - polls["dev2"]) <= 3, polls
    assert len(kept) <= (len(kept) + dropped) / k + 3  # one in k, or fewer where thinned again
    kept_events = [s for s, b in col.bodies.items() if b["type"] == "event"]
    assert kept_events and min(kept_events) == 1  # the start-up events survived the outage
    assert not col.errors
