"""The serial bus owner: gaps, quarantine, a dead slave among live ones, port loss, config."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from drivers.base import DeviceTimeout, DeviceUnreachable, Quality
from drivers.modbus_codec import DataType, PointSpec, Table
from drivers.modbus_plan import plan
from drivers.modbus_serial import ModbusSerialDriver
from drivers.serial_line import LineSettings, Quarantined, SerialBus, t35, wire_time
from gateway.acquisition.build import build_drivers
from gateway.config.checks import compile_plans, serial_line_checks
from gateway.config.loader import load_config
from gateway.config.models.registry import device_union
from gateway.config.models.serial import BusConfig
from simulators.pty import Emit, SimLine
from simulators.serial_instruments import Fault, RtuBusSim, RtuSlave
from tests.eventually import eventually

POINTS = [PointSpec(f"r{i}", Table.HOLDING, i, DataType.UINT16) for i in range(10)]


def _sim(units: range) -> RtuBusSim:
    return RtuBusSim({u: RtuSlave(POINTS, {"r0": u}) for u in units})


def test_t35_table() -> None:
    assert t35(9600) == pytest.approx(0.004010, abs=1e-6)
    assert t35(2400) == pytest.approx(0.016042, abs=1e-6)
    assert t35(115200) == 0.00175
    s = LineSettings("x", 9600, "E")
    # PERFORMANCE.md: 10 registers at 9600 8E1 = 45.8 ms
    assert wire_time(8, 25, s) == pytest.approx(0.0458, abs=2e-4)


class _Recorder:
    """Answers instantly and records when each request arrived."""

    stream_period: float | None = None

    def __init__(self, inner: RtuBusSim) -> None:
        self.inner = inner
        self.arrivals: list[float] = []

    def feed(self, data: bytes) -> list[Emit]:
        self.arrivals.append(time.monotonic())
        return self.inner.feed(data)

    def stream(self) -> bytes:
        return b""


async def test_inter_frame_gap_is_respected() -> None:
    rec = _Recorder(_sim(range(1, 2)))
    gap = 0.02
    with SimLine(rec) as line:
        async with SerialBus(LineSettings(line.path, 115200, inter_frame_gap=gap)) as bus:
            drv = ModbusSerialDriver("d", bus, 1, plan(POINTS), timeout=0.2)
            for _ in range(5):
                await drv.read()
    spacing = [b - a for a, b in zip(rec.arrivals, rec.arrivals[1:], strict=False)]
    assert len(spacing) == 4
    assert min(spacing) >= gap * 0.95


async def test_dead_slave_is_quarantined_and_others_keep_their_rate() -> None:
    sim = _sim(range(1, 4))
    sim.faults[2] = {Fault.SILENT}
    settings = LineSettings("", 115200)
    with SimLine(sim) as line:
        settings = LineSettings(line.path, 115200)
        async with SerialBus(settings, failures_to_quarantine=2, initial_backoff=0.3) as bus:
            drivers = {
                u: ModbusSerialDriver(f"d{u}", bus, u, plan(POINTS), timeout=0.05)
                for u in (1, 2, 3)
            }
            ok = {1: 0, 2: 0, 3: 0}
            errors: dict[int, list[type]] = {2: []}

            async def poll(u: int) -> None:
                for _ in range(40):
                    try:
                        samples = await drivers[u].read()
                    except (DeviceTimeout, Quarantined) as exc:
                        errors.setdefault(u, []).append(type(exc))
                    else:
                        assert samples[0].value == u  # never another slave's value
                        ok[u] += 1
                    await asyncio.sleep(0.005)

            async with asyncio.timeout(20):
                async with asyncio.TaskGroup() as tg:
                    for u in (1, 2, 3):
                        tg.create_task(poll(u))
            assert ok[1] == ok[3] == 40
            assert ok[2] == 0
            assert Quarantined in errors[2]
            # quarantine skips the line: far fewer requests than polls reached slave 2
            assert sim.requests[2] < 15
            # the dead slave comes back: healed within one back-off period
            sim.faults[2] = set()

            async def answers() -> bool:
                try:
                    await drivers[2].read()
                except (DeviceTimeout, Quarantined):
                    return False
                return True

            await eventually(answers, "d2 answering again", within=0.3 * 2 + 1.0)
            assert not bus.quarantined("d2")


async def test_port_unplugged_and_back(tmp_path: Path) -> None:
    link = tmp_path / "ttyUSB0"
    sim = _sim(range(1, 2))
    with SimLine(sim, link=link) as line:
        async with SerialBus(LineSettings(line.path, 115200), failures_to_quarantine=99) as bus:
            drv = ModbusSerialDriver("d", bus, 1, plan(POINTS), timeout=0.1)
            assert (await drv.read())[0].value == 1
            line.unplug()
            with pytest.raises((DeviceUnreachable, DeviceTimeout)):
                await drv.read()
            with pytest.raises(DeviceUnreachable):
                await drv.read()  # path gone: cannot reopen
            line.replug()
            samples = await drv.read()
            assert samples[0].quality is Quality.GOOD and samples[0].value == 1
            assert bus.stats.opens == 2


# ----------------------------------------------------------------------------- config

_Devices: TypeAdapter[list[Any]] = TypeAdapter(list[device_union()])


def cross_check(buses: list[BusConfig], devices: list[Any]) -> list[tuple[Any, str]]:
    """The serial-line problems of ``devices`` on ``buses``, their plans compiled first."""
    plans, problems = compile_plans(devices)
    assert problems == []
    return serial_line_checks(buses, devices, plans)


def _rtu(id_: str, unit: int, poll: float = 1.0, bus: str = "rs485") -> dict[str, object]:
    return {
        "driver": "modbus_rtu",
        "id": id_,
        "bus": bus,
        "unit": unit,
        "poll": poll,
        "points": [{"id": "p", "table": "holding", "address": 0, "type": "uint16", "length": 0}]
        + [{"id": f"p{i}", "table": "holding", "address": i} for i in range(1, 20)],
    }


def test_cross_check_finds_bus_problems() -> None:
    buses = [
        BusConfig(id="rs485", port="/dev/ttyUSB0", baudrate=9600),
        BusConfig(id="again", port="/dev/ttyUSB0", baudrate=19200),
    ]
    devices = _Devices.validate_python(
        [_rtu(f"m{i}", i + 1, poll=0.1) for i in range(10)]
        + [_rtu("lost", 50, bus="nope"), _rtu("twin", 1)]
    )
    problems = cross_check(buses, devices)
    text = "\n".join(f"{p}: {m}" for p, m in problems)
    assert (("buses", 1, "port")) in [p for p, _ in problems]
    assert "unknown bus 'nope'" in text
    assert (("devices", 11, "unit")) in [p for p, _ in problems]
    impossible = [m for p, m in problems if p[-1] == "poll"]
    assert len(impossible) == 10
    assert "0.7" in impossible[0] or "0.6" in impossible[0]
    ok = cross_check(buses[:1], _Devices.validate_python([_rtu(f"m{i}", i + 1) for i in range(10)]))
    assert ok == []


def test_streaming_device_needs_its_bus_alone() -> None:
    buses = [BusConfig(id="b", port="/dev/ttyS0")]
    devices = _Devices.validate_python(
        [{"driver": "toledo_continuous", "id": "scale", "bus": "b"}, _rtu("m", 1, bus="b")]
    )
    assert [p for p, _ in cross_check(buses, devices)] == [("devices", 0, "bus")]


def test_bus_config_rejects_bad_keys() -> None:
    with pytest.raises(ValidationError):
        BusConfig.model_validate({"id": "b", "port": "/dev/ttyS0", "baud": 9600})
    with pytest.raises(ValidationError):
        BusConfig.model_validate({"id": "b", "port": "/dev/ttyS0", "stopbits": 3})
    assert (
        BusConfig.model_validate({"id": "b", "port": "x", "inter_frame_gap": "5ms"}).settings().gap
        == 0.005
    )


async def test_drivers_on_one_bus_share_its_owner(tmp_path: Path) -> None:
    twenty = [PointSpec(f"r{i}", Table.HOLDING, i, DataType.UINT16) for i in range(20)]
    sim = RtuBusSim({u: RtuSlave(twenty, {"r0": u}) for u in (1, 2)})
    with SimLine(sim) as line:
        points = ", ".join(
            ["{id: p, ref: 40001}"] + [f"{{id: p{i}, ref: {40001 + i}}}" for i in range(1, 20)]
        )
        path = tmp_path / "gw.yaml"
        path.write_text(
            "gateway: {id: gw, site: s}\n"
            f"buses: [{{id: b, port: {line.path}, baudrate: 115200, timeout: 0.2}}]\n"
            "devices:\n"
            f"  - {{id: a, driver: modbus_rtu, bus: b, unit: 1, points: [{points}]}}\n"
            f"  - {{id: c, driver: modbus_rtu, bus: b, unit: 2, points: [{points}]}}\n"
        )
        async with contextlib.AsyncExitStack() as stack:
            drivers = await build_drivers(load_config(path), stack)
            assert set(drivers) == {"a", "c"}
            a = await drivers["a"].read()
            c = await drivers["c"].read()
            assert drivers["a"].describe_plan() == [
                "rtu unit 1: holding 0..19 (20 registers): "
                + ", ".join(["p"] + [f"p{i}" for i in range(1, 20)])
            ]
            assert drivers["a"]._bus is drivers["c"]._bus  # one owner for the line
    assert a[0].value == 1 and c[0].value == 2
