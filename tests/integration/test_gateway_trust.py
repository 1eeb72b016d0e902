"""The gateway's audit trail across runs: parameter changes, identities, integrity."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.eventlog import EventLog, EventLogReset
from gateway.audit.verify import verify_event_log
from gateway.cli.app import main
from gateway.daemon import Gateway
from gateway.delivery.outbox import Outbox
from gateway.ops.health import gateway_health
from gateway.wire.keys import PUBLIC_KEY_NAME, load_public_keys, load_signer
from simulators.modbus_device import ModbusTcpSimulator
from tests.eventually import eventually
from tests.integration.gwtest import line_config, synced_clock
from tests.integration.test_gateway_e2e import sim_units
from tests.services import free_port


async def run_once(
    tmp: Path,
    sim_port: int,
    extra_points: int = 0,
    scale: str = "",
    *,
    during: Callable[[Gateway], None] | None = None,
    **kw: Any,
) -> Gateway:
    loaded = line_config(tmp, free_port(), sim_port, units=1, points=2)
    if scale:
        text = loaded.path.read_text().replace(
            "type: float32, unit: bar,", f"type: float32, unit: bar, scale: {scale},", 1
        )
        loaded.path.write_text(text)
        from gateway.config.loader import load_config

        loaded = load_config(loaded.path)
    gateway = Gateway(loaded, clock_monitor=synced_clock(), **kw)
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop))
    async with asyncio.timeout(10):
        await gateway.ready.wait()
    await eventually(lambda: gateway.pollers["dev1"].health.polls >= 2, "two polls", within=10)
    if during is not None:
        during(gateway)
    stop.set()
    async with asyncio.timeout(10):
        await task
    return gateway


def entries(state: Path) -> list[dict[str, object]]:
    out = []
    for line in (state / "events.log").read_bytes().splitlines():
        out.append(json.loads(line.split(b"\t", 1)[0]))
    return out


async def test_a_config_change_between_runs_is_logged_with_old_and_new(tmp_path: Path) -> None:
    async with ModbusTcpSimulator(sim_units(1, 2)) as sim:
        await run_once(tmp_path, sim.port)
        await run_once(tmp_path, sim.port, scale="0.5")
    state = tmp_path / "state"
    log = entries(state)
    types = [e["type"] for e in log]
    assert types.count("startup") == 2 and types.count("shutdown") == 2
    assert "parameters_baseline" in types
    changes = [e["data"] for e in log if e["type"] == "parameter_changed"]
    assert changes, types
    change = next(c for c in changes if "scale" in json.dumps(c))
    assert change["old"] == 1.0 and change["new"] == 0.5, change
    keys = load_public_keys([state / PUBLIC_KEY_NAME])
    report = verify_event_log(state / "events.log", keys)
    assert report.ok, report.problems
    assert report.entries == len(log)


async def test_a_lost_event_log_is_not_restarted_until_reinit(tmp_path: Path) -> None:
    async with ModbusTcpSimulator(sim_units(1, 2)) as sim:
        first = await run_once(tmp_path, sim.port)
        state = tmp_path / "state"
        (state / "events.log").unlink()
        (state / "events.log.counter").unlink()
        again = Gateway(first.loaded, clock_monitor=synced_clock())
        with pytest.raises(EventLogReset) as err:
            async with asyncio.timeout(10):
                await again.run(asyncio.Event())
        assert str(state / "outbox.db") in str(err.value)
        assert not (state / "events.log").exists()
        reason = ["--reason", "state restored without the log"]
        assert main(["audit", "reinit", "-c", str(first.loaded.path), *reason]) == 0
        await run_once(tmp_path, sim.port)
    log = entries(state)
    assert log[0]["type"] == "log_reinitialised" and log[0]["data"]["previous"] is None
    assert [e["type"] for e in log[1:3]] == ["startup", "config_loaded"]
    keys = load_public_keys([state / PUBLIC_KEY_NAME])
    assert verify_event_log(state / "events.log", keys).ok


def _stored_seqs(state: Path) -> list[int]:
    with Outbox(state / "outbox.db", seal=_no_seal, max_bytes=1 << 30) as outbox:
        return [b.seq for b in outbox.take(1_000_000)]


def _no_seal(kind: str, seq: int, sealed: int, records: list[dict[str, object]]) -> bytes:
    raise AssertionError("nothing is put while reading")


async def test_sequence_numbers_never_go_back_when_the_outbox_is_lost(tmp_path: Path) -> None:
    state = tmp_path / "state"
    async with ModbusTcpSimulator(sim_units(1, 2)) as sim:
        await run_once(tmp_path, sim.port)  # no broker: every batch stays in the outbox
        earlier = _stored_seqs(state)
        (state / "outbox.db").unlink()
        await run_once(tmp_path, sim.port)
        later = _stored_seqs(state)
    assert earlier and later
    assert min(later) > max(earlier)
    resumed = [e for e in entries(state) if e["type"] == "sequence_resumed"]
    assert len(resumed) == 1
    data = resumed[0]["data"]
    assert isinstance(data, dict) and data["reason"] == "outbox_new" and data["from"] == 1


async def test_a_full_event_log_does_not_stop_the_gateway(tmp_path: Path) -> None:
    state = tmp_path / "state"
    async with ModbusTcpSimulator(sim_units(1, 2)) as sim:
        await run_once(tmp_path, sim.port, eventlog_max_entries=200)
        signer = load_signer(state / "gateway.key")
        with EventLog(state / "events.log", signer, software_id="t", max_entries=200) as log:
            while log.parameter_changes_allowed:  # as if no-op commands had filled it
                log.append("alarm_ack", {"alarm": "dev1/p0/hi", "user": "x"})
        health: dict[str, Any] = {}

        def look(gw: Gateway) -> None:
            health.update(gateway_health(gw))

        gw = await run_once(
            tmp_path, sim.port, scale="0.5", during=look, eventlog_max_entries=200
        )  # a parameter changed, and the log has no room for it: it runs all the same
    assert gw.pollers["dev1"].health.polls >= 2
    assert health["status"] == "degraded"
    problems = "\n".join(health["problems"])
    assert "event log nearly full" in problems
    assert "1 parameter change(s) at start-up not recorded one by one" in problems
    assert health["events"]["changes_refused"] == 1
    log_types = [e["type"] for e in entries(state)]
    assert log_types[-1] == "shutdown" and "parameter_changes_refused" in log_types
    keys = load_public_keys([state / PUBLIC_KEY_NAME])
    assert verify_event_log(state / "events.log", keys).ok
