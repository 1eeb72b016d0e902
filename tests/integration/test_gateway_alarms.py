"""Alarms end to end: raised on a real limit, retained as a set, acknowledged over MQTT
with `metrogate alarm`, recorded in the audit trail, still active after a restart."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gateway.cli.app import main
from gateway.config.loader import LoadedConfig, load_config
from simulators.modbus_device import ModbusTcpSimulator
from tests.eventually import eventually
from tests.integration.gwtest import line_config
from tests.integration.test_gateway_e2e import collecting, running, sim_units
from tests.services import Mosquitto

pytestmark = pytest.mark.services

ALARM = "dev1/p0/high"


def alarm_config(tmp: Path, broker: int, sim: int) -> LoadedConfig:
    loaded = line_config(tmp, broker, sim, units=1, points=2)
    # unit 1's ramp starts at 100: a high limit at 50 is active from the first poll
    text = loaded.path.read_text().replace(
        "      - {id: p0,", "      - {rules: [{kind: high, limit: 50, severity: high}], id: p0,", 1
    )
    loaded.path.write_text(text)
    return load_config(loaded.path)


def states(records: list[dict[str, object]]) -> list[object]:
    return [r["state"] for r in records if r["alarm"] == ALARM]


async def test_alarm_raised_acknowledged_and_kept_across_restart(
    mosquitto: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with ModbusTcpSimulator(sim_units(1, 2)) as sim:
        loaded = alarm_config(tmp_path, mosquitto.port, sim.port)

        def alarm_records() -> list[dict[str, object]]:
            return [a for b in col.bodies.values() for a in b.get("alarms", [])]

        async with collecting(mosquitto, loaded) as col:
            async with running(loaded):
                await eventually(
                    lambda: "active_unacknowledged" in states(alarm_records()),
                    "alarm raised",
                    within=15,
                )
                await eventually(
                    lambda: any(a["alarm"] == ALARM for s in col.alarm_sets for a in s["alarms"]),
                    "retained alarm set",
                    within=10,
                )
                code = await asyncio.to_thread(main, ["alarm", "list", "-c", str(loaded.path)])
                assert code == 0 and ALARM in capsys.readouterr().out
                code = await asyncio.to_thread(
                    main, ["alarm", "ack", ALARM, "--user", "inspector", "-c", str(loaded.path)]
                )
                assert code == 0
                await eventually(
                    lambda: "active_acknowledged" in states(alarm_records()),
                    "acknowledged",
                    within=10,
                )
            seen = len(col.alarm_sets)
            async with running(loaded):
                await eventually(lambda: len(col.alarm_sets) > seen, "set after restart", within=10)
                restored = col.alarm_sets[-1]["alarms"]
    ack = next(r for r in alarm_records() if r["state"] == "active_acknowledged")
    assert ack["user"] == "inspector" and ack["severity"] == "high"
    assert [a["state"] for a in restored if a["alarm"] == ALARM] == ["active_acknowledged"]
    assert not col.errors
    events = [
        json.loads(line.split(b"\t", 1)[0])
        for line in (tmp_path / "state" / "events.log").read_bytes().splitlines()
    ]
    assert any(e["type"] == "alarm_ack" and e["data"]["user"] == "inspector" for e in events)
