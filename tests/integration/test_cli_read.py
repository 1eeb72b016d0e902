"""`metrogate read` and `metrogate plan` against simulated instruments."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gateway.cli.app import main
from simulators.modbus_device import ModbusTcpSimulator
from tests.integration.gwtest import line_config
from tests.integration.test_gateway_e2e import sim_units
from tests.services import free_port


async def test_read_prints_one_poll_as_wire_readings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with ModbusTcpSimulator(sim_units(2, 3)) as sim:
        loaded = line_config(tmp_path, free_port(), sim.port, points=3)
        code = await asyncio.to_thread(
            main, ["read", "-c", str(loaded.path), "--device", "dev2", "--json"]
        )
        rows = json.loads(capsys.readouterr().out)
        sim.faults[1].silent = True
        code_dead = await asyncio.to_thread(main, ["read", "-c", str(loaded.path)])
        table = capsys.readouterr().out
    assert code == 0
    assert [r["point"] for r in rows] == ["p0", "p1", "p2"]
    assert all(r["device"] == "dev2" and r["unit"] == "bar" for r in rows)
    assert all(r["value"] >= 200 for r in rows)  # unit 2's ramp starts at 200
    assert code_dead == 1  # a device that does not answer makes read fail
    assert "no_communication" in table and "dev2" in table


def test_plan_lists_requests_per_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    loaded = line_config(tmp_path, free_port(), 15020, units=2, points=70)
    assert main(["plan", "-c", str(loaded.path)]) == 0
    out = capsys.readouterr().out
    # 70 float32 = 140 registers: two requests per device, never one per point
    assert "dev1 (modbus_tcp, tcp://127.0.0.1:15020/1): 2 request(s) per poll for 70" in out
    assert out.strip().endswith("total: 4 request(s) per cycle")
