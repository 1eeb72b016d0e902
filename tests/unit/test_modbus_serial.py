"""Modbus RTU/ASCII framing vectors and the serial driver against a simulated bus on a pty."""

from __future__ import annotations

import asyncio

import pytest

from drivers.base import DeviceTimeout, Quality, Reason
from drivers.modbus_codec import DataType, PointSpec, Table
from drivers.modbus_common import decode_request
from drivers.modbus_plan import Request, plan
from drivers.modbus_serial import (
    ModbusSerialDriver,
    ascii_finder,
    ascii_frame,
    crc16,
    lrc,
    parse_read_reply,
    read_pdu,
    rtu_finder,
    rtu_frame,
)
from drivers.modbus_tcp import ModbusTcpDriver
from drivers.serial_line import FrameError, LineSettings, SerialBus
from simulators.pty import Emit, SimLine, SimTcp
from simulators.serial_instruments import Fault, RtuBusSim, RtuSlave

POINTS = [
    PointSpec("energy", Table.HOLDING, 0, DataType.UINT32),
    PointSpec("temp", Table.HOLDING, 2, DataType.INT16, scale=0.1),
    PointSpec("flow", Table.INPUT, 10, DataType.FLOAT32),
    PointSpec("run", Table.COIL, 5, DataType.BOOL),
]
VALUES = {"energy": 123456, "temp": -125, "flow": 3.5, "run": True}


def test_crc_vector() -> None:
    assert crc16(bytes.fromhex("01 03 00 00 00 0A")).to_bytes(2, "little") == b"\xc5\xcd"


def test_request_and_reply_vectors() -> None:
    req = Request(Table.HOLDING, 0, 2, (PointSpec("x", Table.HOLDING, 0, DataType.UINT32),))
    assert rtu_frame(1, read_pdu(req)) == bytes.fromhex("01 03 00 00 00 02 C4 0B")
    reply = bytes.fromhex("01 03 04 00 01 E2 40 E2 A3")
    assert rtu_finder(1, 3)(reply) == (0, len(reply))
    words = parse_read_reply(req, reply[:-2])
    assert words == [0x0001, 0xE240]
    assert isinstance(words, list)
    assert decode_request(req, words, 0)[0].value == 123456


def test_exception_vector() -> None:
    frame = bytes.fromhex("01 83 02 C0 F1")
    req = Request(Table.HOLDING, 0, 2, ())
    assert rtu_finder(1, 3)(frame) == (0, 5)
    assert parse_read_reply(req, frame[:-2]) == 2


def test_ascii_frame_and_lrc() -> None:
    frame = ascii_frame(1, bytes.fromhex("0300000002"))
    assert frame == b":010300000002FA\r\n"
    assert lrc(bytes.fromhex("010300000002")) == 0xFA
    assert ascii_finder(1, 3)(b"\x00junk" + frame) == (5, 5 + len(frame))


def test_finder_rejects_other_slave_and_bad_crc() -> None:
    good = bytes.fromhex("01 03 04 00 01 E2 40 E2 A3")
    bad = good[:-1] + b"\x00"
    assert rtu_finder(1, 3)(bad) is None
    other = rtu_frame(2, bytes.fromhex("03 04 00 01 E2 40"))
    with pytest.raises(ValueError, match="slave 2"):
        rtu_finder(1, 3)(other)


def _bus_sim(units: tuple[int, ...] = (1,), framing: str = "rtu") -> RtuBusSim:
    return RtuBusSim(
        {u: RtuSlave(POINTS, VALUES) for u in units},
        framing="ascii" if framing == "ascii" else "rtu",
        late_by=0.3,
    )


def _driver(bus: SerialBus, unit: int = 1, framing: str = "rtu") -> ModbusSerialDriver:
    return ModbusSerialDriver(
        f"dev{unit}",
        bus,
        unit,
        plan(POINTS),
        framing="ascii" if framing == "ascii" else "rtu",
        timeout=0.15,
    )


def _values(samples: list) -> dict[str, object]:  # type: ignore[type-arg]
    return {s.point: s.value for s in samples}


@pytest.mark.parametrize("framing", ["rtu", "ascii"])
async def test_driver_reads_values_over_pty(framing: str) -> None:
    with SimLine(_bus_sim(framing=framing), baudrate=115200) as line:
        async with SerialBus(LineSettings(line.path, 115200)) as bus:
            samples = await _driver(bus, framing=framing).read()
    assert _values(samples) == {"energy": 123456, "temp": -12.5, "flow": 3.5, "run": True}
    assert all(s.quality is Quality.GOOD for s in samples)


async def test_silent_slave_times_out() -> None:
    sim = _bus_sim()
    sim.faults[1] = {Fault.SILENT}
    with SimLine(sim) as line:
        async with SerialBus(LineSettings(line.path, 115200)) as bus:
            with pytest.raises(DeviceTimeout):
                await _driver(bus).read()


@pytest.mark.parametrize("fault", [Fault.BAD_CRC, Fault.TRUNCATED, Fault.WRONG_SLAVE])
@pytest.mark.parametrize("framing", ["rtu", "ascii"])
async def test_garbled_replies_never_yield_values(fault: Fault, framing: str) -> None:
    sim = _bus_sim(framing=framing)
    sim.faults[1] = {fault}
    with SimLine(sim) as line:
        async with SerialBus(LineSettings(line.path, 115200)) as bus:
            with pytest.raises(FrameError):
                await _driver(bus, framing=framing).read()


async def test_noise_before_reply_is_skipped() -> None:
    sim = _bus_sim()
    sim.faults[1] = {Fault.NOISE}
    with SimLine(sim) as line:
        async with SerialBus(LineSettings(line.path, 115200)) as bus:
            samples = await _driver(bus).read()
            assert bus.stats.noise_bytes > 0
    assert _values(samples)["energy"] == 123456


async def test_late_reply_is_not_taken_for_the_next_one() -> None:
    sim = _bus_sim()
    sim.faults[1] = {Fault.LATE}
    slave = sim.slaves[1]
    with SimLine(sim) as line:
        async with SerialBus(LineSettings(line.path, 115200), failures_to_quarantine=99) as bus:
            drv = _driver(bus)
            with pytest.raises(DeviceTimeout):
                await drv.read()
            sim.faults[1] = set()
            slave.set("energy", 777)
            # the late replies carry 123456; the fresh poll must see 777 only
            for _ in range(3):
                samples = await drv.read()
                assert _values(samples)["energy"] == 777


async def test_exception_reply_maps_to_reason() -> None:
    sim = RtuBusSim({1: RtuSlave(POINTS[:2], VALUES)})
    with SimLine(sim) as line:
        async with SerialBus(LineSettings(line.path, 115200)) as bus:
            samples = await _driver(bus).read()
    by_point = {s.point: s for s in samples}
    assert by_point["energy"].value == 123456
    assert by_point["flow"].quality is Quality.BAD
    assert by_point["flow"].reason is Reason.CONFIG_ERROR  # exception 02


async def test_rtu_over_tcp_with_pymodbus_driver() -> None:
    with SimTcp(_bus_sim()) as server:
        async with ModbusTcpDriver(
            "tcp1", "127.0.0.1", server.port, 1, plan(POINTS), timeout=1.0, rtu_framing=True
        ) as drv:
            samples = await drv.read()
    assert _values(samples) == {"energy": 123456, "temp": -12.5, "flow": 3.5, "run": True}


async def test_serial_device_server_url() -> None:
    with SimTcp(_bus_sim()) as server:
        async with SerialBus(LineSettings(f"socket://127.0.0.1:{server.port}", 115200)) as bus:
            samples = await asyncio.wait_for(_driver(bus).read(), 5)
    assert _values(samples)["flow"] == 3.5


class _Echo:
    """A half-duplex adapter: every request comes back before the slave's reply."""

    stream_period: float | None = None

    def __init__(self, inner: RtuBusSim) -> None:
        self.inner = inner

    def feed(self, data: bytes) -> list[Emit]:
        return [Emit(data), *self.inner.feed(data)]

    def stream(self) -> bytes:
        return b""


@pytest.mark.parametrize("framing", ["rtu", "ascii"])
async def test_echoed_request_is_not_a_reply(framing: str) -> None:
    sim = _bus_sim(framing=framing)
    with SimLine(_Echo(sim)) as line:
        async with SerialBus(LineSettings(line.path, 115200)) as bus:
            drv = _driver(bus, framing=framing)
            assert _values(await drv.read())["energy"] == 123456
            sim.faults[1] = {Fault.SILENT}
            with pytest.raises(DeviceTimeout):
                await drv.read()
