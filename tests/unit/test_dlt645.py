"""DL/T 645-2007: the worked frames of the standard, and the driver against simulated meters."""

from __future__ import annotations

import pytest

from drivers import dlt645
from drivers.base import DeviceTimeout, Quality, Reason
from drivers.dlt645 import DATA_ITEMS, Dlt645Driver, Dlt645Point
from drivers.serial_line import FrameError, FrameRejected, LineSettings, SerialBus
from simulators.pty import SimLine
from simulators.serial_instruments import Dlt645Sim, Fault

METER = "123456789012"
READ_ENERGY = bytes.fromhex("FE FE FE FE 68 12 90 78 56 34 12 68 11 04 33 33 34 33 68 16")
REPLY_ENERGY = bytes.fromhex("68 12 90 78 56 34 12 68 91 08 33 33 34 33 89 67 45 33 54 16")
ERROR_REPLY = bytes.fromhex("68 12 90 78 56 34 12 68 D1 01 35 8D 16")


def _point(pid: str, di: int) -> Dlt645Point:
    return Dlt645Point(pid, di, DATA_ITEMS[di])


def test_address_encoding() -> None:
    assert dlt645.encode_address(METER) == bytes.fromhex("12 90 78 56 34 12")
    assert dlt645.decode_address(bytes.fromhex("12 90 78 56 34 12")) == METER
    assert dlt645.encode_address("AAAAAAAAAAAA") == b"\xaa" * 6
    with pytest.raises(ValueError):
        dlt645.encode_address("12345")


def test_worked_request_frame() -> None:
    assert dlt645.read_frame(METER, 0x00010000) == READ_ENERGY


def test_worked_reply_frame() -> None:
    assert dlt645.find_frame(b"\xfe\xfe" + REPLY_ENERGY) == (2, 2 + len(REPLY_ENERGY))
    reply = dlt645.parse_frame(REPLY_ENERGY)
    assert reply.address == METER and reply.control == 0x91
    assert int.from_bytes(reply.data[:4], "little") == 0x00010000
    assert _point("e", 0x00010000).decode(reply.data[4:]) == pytest.approx(1234.56)
    assert dlt645.reply_frame(METER, 0x00010000, dlt645.bcd_encode(123456, 4)) == REPLY_ENERGY


def test_worked_error_frame() -> None:
    reply = dlt645.parse_frame(ERROR_REPLY)
    assert reply.control == 0xD1 and reply.data == b"\x02"
    assert dlt645.error_reason(reply.data[0]) == (Reason.CONFIG_ERROR, "no such data")
    assert dlt645.error_frame(METER, 0x02) == ERROR_REPLY


def test_bcd_and_sign() -> None:
    assert dlt645.bcd_decode(bytes.fromhex("56 34 12")) == 123456
    assert dlt645.bcd_decode(bytes.fromhex("56 34 92"), signed=True) == -123456
    with pytest.raises(ValueError):
        dlt645.bcd_decode(b"\x1a")


def test_bad_checksum_is_not_a_frame() -> None:
    broken = REPLY_ENERGY[:-2] + b"\x00\x16"
    assert dlt645.find_frame(broken) is None
    with pytest.raises(FrameRejected):
        dlt645.parse_frame(broken)


OTHER = "000000000007"
POINTS = [
    _point("energy", 0x00010000),
    _point("voltage", 0x02010100),
    _point("current", 0x02020100),
    _point("power", 0x02030000),
    _point("cover_open", 0x03300D00),
    _point("programming", 0x03300000),
]


def _sim() -> Dlt645Sim:
    values = {
        0x00010000: 123456,
        0x02010100: 2201,
        0x02020100: 5123,
        0x02030000: -11234,
        0x03300D00: 3,
        0x03300000: 12,
    }
    return Dlt645Sim({METER: values, OTHER: {**values, 0x00010000: 99}}, late_by=0.3)


def _by_point(samples: list) -> dict:  # type: ignore[type-arg]
    return {s.point: s for s in samples}


async def test_two_meters_on_one_bus() -> None:
    with SimLine(_sim(), baudrate=9600) as line:
        async with SerialBus(LineSettings(line.path, 9600, "E")) as bus:
            a = Dlt645Driver("m1", bus, METER, POINTS, timeout=0.3)
            b = Dlt645Driver("m2", bus, OTHER, POINTS[:1], timeout=0.3)
            sa = _by_point(await a.read())
            sb = _by_point(await b.read())
    assert sa["energy"].value == pytest.approx(1234.56)
    assert sa["voltage"].value == pytest.approx(220.1)
    assert sa["current"].value == pytest.approx(5.123)
    assert sa["power"].value == pytest.approx(-1.1234)
    assert sa["cover_open"].value == 3 and sa["programming"].value == 12
    assert all(s.quality is Quality.GOOD for s in sa.values())
    assert sb["energy"].value == pytest.approx(0.99)
    assert a.identity() == {"address": METER}


async def test_abnormal_reply_maps_to_reason() -> None:
    sim = _sim()
    with SimLine(sim) as line:
        async with SerialBus(LineSettings(line.path, 9600)) as bus:
            drv = Dlt645Driver(
                "m1", bus, METER, [*POINTS[:1], _point("freq", 0x02800002)], timeout=0.3
            )
            s = _by_point(await drv.read())
    assert s["energy"].quality is Quality.GOOD
    assert s["freq"].quality is Quality.BAD and s["freq"].reason is Reason.CONFIG_ERROR


@pytest.mark.parametrize("fault", [Fault.BAD_CRC, Fault.TRUNCATED, Fault.WRONG_SLAVE])
async def test_garbled_replies(fault: Fault) -> None:
    sim = _sim()
    sim.faults[METER] = {fault}
    with SimLine(sim) as line:
        async with SerialBus(LineSettings(line.path, 9600)) as bus:
            with pytest.raises(FrameError):
                await Dlt645Driver("m1", bus, METER, POINTS[:2], timeout=0.2).read()


async def test_noise_and_silence() -> None:
    sim = _sim()
    sim.faults[METER] = {Fault.NOISE}
    with SimLine(sim) as line:
        async with SerialBus(LineSettings(line.path, 9600), failures_to_quarantine=99) as bus:
            drv = Dlt645Driver("m1", bus, METER, POINTS[:1], timeout=0.2)
            assert (await drv.read())[0].value == pytest.approx(1234.56)
            sim.faults[METER] = {Fault.SILENT}
            with pytest.raises(DeviceTimeout):
                await drv.read()


def test_plan_lines() -> None:
    bus = SerialBus(LineSettings("/dev/null"))
    lines = Dlt645Driver("m1", bus, METER, POINTS[:1], timeout=0.2).describe_plan()
    assert lines == ["meter 123456789012: DI 00010000 → energy (4 BCD bytes, 2 decimals, kWh)"]


async def test_a_value_scaled_past_the_floats_is_invalid_never_infinite() -> None:
    huge = Dlt645Point("energy", 0x00010000, DATA_ITEMS[0x00010000], scale=1e307)
    with SimLine(_sim(), baudrate=9600) as line:
        async with SerialBus(LineSettings(line.path, 9600, "E")) as bus:
            (s,) = await Dlt645Driver("m1", bus, METER, [huge], timeout=0.3).read()
    assert (s.value, s.quality, s.reason) == (None, Quality.BAD, Reason.INVALID_VALUE)
