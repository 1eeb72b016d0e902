"""CJ/T 188-2018: frames written from the standard's layouts, and the driver on a real pty.

The hex below is laid out field by field from the standard (68H, T, A0..A6 low byte
first, C, L, DI, SER, the 901FH data items, CS, 16H); only the checksums were summed
by machine. The codec must produce and accept exactly these bytes.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from drivers import cjt188
from drivers.base import DeviceRejected, DeviceTimeout, Quality, Reason, Sample
from drivers.cjt188 import Cjt188Driver, Cjt188Point, Family, StatusBit
from drivers.serial_line import FrameError, FrameRejected, LineSettings, SerialBus
from simulators.cjt188 import Cjt188Sim, SimMeter
from simulators.faults import Drift, Step, Stuck
from simulators.pty import Emit, SimLine
from simulators.serial_instruments import Fault

WATER = "00000012345678"
HEAT = "11223344556677"

# cold water meter 00000012345678, SER 00, DI 901FH low byte first
READ_WATER = bytes.fromhex("FE FE 68 10 78 56 34 12 00 00 00 01 03 1F 90 00 3F 16")
# 1234.56 m³ now, 1200.00 m³ at the settlement date, 2024-05-17 12:34:56, ST 05 00
# (valve closed, battery low)
REPLY_WATER = bytes.fromhex(
    "68 10 78 56 34 12 00 00 00 81 16 1F 90 00"
    " 56 34 12 00 2C  00 00 12 00 2C  56 34 12 17 05 24 20  05 00 D9 16"
)
# heat meter 11223344556677, SER 07: settlement heat 1000.00 kWh, current heat
# 1234.56 kWh, power 12.34 kW, flow 1.2345 m³/h, volume 567.89 m³, supply 65.43 °C,
# return 45.67 °C, 8760 h, 2024-01-02 03:04:05, ST 00 00
REPLY_HEAT = bytes.fromhex(
    "68 20 77 66 55 44 33 22 11 81 2E 1F 90 07"
    " 00 00 10 00 05  56 34 12 00 05  34 12 00 00 17  45 23 01 00 35  89 67 05 00 2C"
    " 43 65 00  67 45 00  60 87 00  05 04 03 02 01 24 20  00 00 29 16"
)
# the same heat meter counting in other units: MWh×100, GJ, W, L/h, L
REPLY_HEAT_OTHER_UNITS = bytes.fromhex(
    "68 20 77 66 55 44 33 22 11 81 2E 1F 90 07"
    " 00 00 10 00 0A  23 01 00 00 11  34 12 00 00 14  45 23 01 00 32  89 67 05 00 29"
    " 43 65 00  67 45 00  60 87 00  05 04 03 02 01 24 20  00 00 B9 16"
)
# abnormal reply (C1H): SER 00, ST 04 00
ERROR_WATER = bytes.fromhex("68 10 78 56 34 12 00 00 00 C1 03 00 04 00 54 16")


def test_meter_types_and_families() -> None:
    assert cjt188.METER_TYPES[0x10] == "cold water meter"
    assert cjt188.family_of(0x10) is Family.WATER and cjt188.family_of(0x13) is Family.WATER
    assert cjt188.family_of(0x20) is Family.HEAT and cjt188.family_of(0x21) is Family.HEAT
    assert cjt188.family_of(0x30) is Family.GAS and cjt188.family_of(0x40) is Family.OTHER
    for bad in (0x00, 0x0F, 0x1A, 0x50, 0xAA, 0x100):
        with pytest.raises(ValueError):
            cjt188.family_of(bad)


def test_address_and_di_order() -> None:
    assert cjt188.encode_address(WATER) == bytes.fromhex("78 56 34 12 00 00 00")
    assert cjt188.decode_address(bytes.fromhex("78 56 34 12 00 00 00")) == WATER
    assert cjt188.encode_address(cjt188.WILDCARD) == b"\xaa" * 7
    for bad in ("1234", "0000001234567G"):
        with pytest.raises(ValueError):
            cjt188.encode_address(bad)
    assert cjt188.di_bytes(0x901F, "low_first") == b"\x1f\x90"
    assert cjt188.di_bytes(0x901F, "high_first") == b"\x90\x1f"


def test_worked_read_request() -> None:
    assert cjt188.read_frame(0x10, WATER, 0) == READ_WATER
    high = cjt188.read_frame(0x10, WATER, 0, di_order="high_first", preamble=b"")
    assert high == bytes.fromhex("68 10 78 56 34 12 00 00 00 01 03 90 1F 00 3F 16")


def test_worked_water_reply() -> None:
    assert cjt188.find_frame(b"\xfe\xfe" + REPLY_WATER) == (2, 2 + len(REPLY_WATER))
    frame = cjt188.parse_frame(REPLY_WATER)
    assert (frame.meter_type, frame.address, frame.control) == (0x10, WATER, 0x81)
    assert frame.data[:3] == b"\x1f\x90\x00"
    fields = cjt188.decode_current_data(Family.WATER, frame.data[3:])
    assert fields["cumulative_flow"].value == Decimal("1234.56")
    assert fields["cumulative_flow"].unit == 0x2C
    assert fields["settlement_flow"].value == Decimal("1200.00")
    assert fields["meter_time"].value == "2024-05-17T12:34:56"
    assert fields["status"].value == 0x0005
    status = cjt188.decode_status(0x0005)
    assert status == {
        "valve_open": False,
        "valve_closed": True,
        "valve_abnormal": False,
        "battery_low": True,
    }
    # and the codec writes exactly these bytes back
    import datetime as dt

    body = cjt188.encode_current_data(
        Family.WATER,
        {"cumulative_flow": Decimal("1234.56"), "settlement_flow": 1200},
        meter_time=dt.datetime(2024, 5, 17, 12, 34, 56),
        status=0x0005,
    )
    assert cjt188.reply_frame(0x10, WATER, 0, body) == REPLY_WATER


def test_worked_heat_reply() -> None:
    frame = cjt188.parse_frame(REPLY_HEAT)
    assert frame.meter_type == 0x20 and frame.address == HEAT and frame.data[2] == 0x07
    f = cjt188.decode_current_data(Family.HEAT, frame.data[3:])
    assert f["settlement_heat"].value == Decimal("1000.00") and f["settlement_heat"].unit == 0x05
    assert f["current_heat"].value == Decimal("1234.56")
    assert f["heat_power"].value == Decimal("12.34") and f["heat_power"].unit == 0x17
    assert f["flow_rate"].value == Decimal("1.2345") and f["flow_rate"].unit == 0x35
    assert f["cumulative_flow"].value == Decimal("567.89") and f["cumulative_flow"].unit == 0x2C
    assert f["supply_temperature"].value == Decimal("65.43")
    assert f["return_temperature"].value == Decimal("45.67")
    assert f["working_hours"].value == 8760
    assert f["meter_time"].value == "2024-01-02T03:04:05"
    assert f["status"].value == 0


def test_worked_error_reply() -> None:
    frame = cjt188.parse_frame(ERROR_WATER)
    assert frame.control == 0xC1 and frame.data == b"\x00\x04\x00"
    assert cjt188.error_frame(0x10, WATER, 0, 0x0004) == ERROR_WATER


def test_unit_codes() -> None:
    kwh = cjt188.unit_code("kWh")
    assert cjt188.convert(Decimal("1.23"), 0x11, kwh) == Decimal("1.23") * 10**6 / 3600
    assert cjt188.convert(Decimal("0.12"), 0x0A, kwh) == Decimal("12000")  # MWh×100
    assert cjt188.convert(Decimal("567.89"), 0x29, cjt188.unit_code("m³")) == Decimal("0.56789")
    with pytest.raises(ValueError, match="volume"):
        cjt188.convert(Decimal(1), 0x2C, kwh)
    with pytest.raises(ValueError, match="unknown unit code"):
        cjt188.convert(Decimal(1), 0x99, kwh)
    with pytest.raises(ValueError):
        cjt188.unit_code("furlong")


@pytest.mark.parametrize(
    ("broken", "why"),
    [
        (REPLY_WATER[:-2] + b"\x00\x16", "checksum"),
        (REPLY_WATER[:-1] + b"\x17", "end byte"),
        (REPLY_WATER[:20], "truncated"),
        (REPLY_WATER[:10] + b"\x17" + REPLY_WATER[11:], "length byte"),
    ],
)
def test_broken_frames_are_not_frames(broken: bytes, why: str) -> None:
    assert cjt188.find_frame(broken) is None, why
    with pytest.raises(FrameRejected):
        cjt188.parse_frame(broken)


def test_finder_rejects_other_meters_and_types() -> None:
    find = cjt188.meter_finder(WATER, 0x10)
    assert find(b"\x00\x13" + REPLY_WATER) == (2, 2 + len(REPLY_WATER))  # noise first
    assert find(READ_WATER + REPLY_WATER) == (len(READ_WATER), len(READ_WATER) + len(REPLY_WATER))
    with pytest.raises(FrameRejected, match="reply from meter"):
        cjt188.meter_finder("00000012345679", 0x10)(REPLY_WATER)
    with pytest.raises(FrameRejected, match="type 0x10"):
        cjt188.meter_finder(WATER, 0x30)(REPLY_WATER)
    # the wildcard accepts the one meter on the line, whatever its address
    assert cjt188.meter_finder(cjt188.WILDCARD, 0x10)(REPLY_WATER) is not None


def test_body_of_the_wrong_length_is_refused() -> None:
    body = cjt188.parse_frame(REPLY_WATER).data[3:]
    with pytest.raises(ValueError, match="heat meter sends 43"):
        cjt188.decode_current_data(Family.HEAT, body)
    with pytest.raises(ValueError, match="sends 19"):
        cjt188.decode_current_data(Family.WATER, body + b"\x00")


def test_a_bad_field_costs_only_itself() -> None:
    body = bytearray(cjt188.parse_frame(REPLY_WATER).data[3:])
    body[0] = 0x5A  # not BCD
    body[9] = 0x77  # unknown unit code of the settlement flow
    fields = cjt188.decode_current_data(Family.WATER, bytes(body))
    assert fields["cumulative_flow"].value is None and "BCD" in str(fields["cumulative_flow"].error)
    assert fields["settlement_flow"].error == "unknown unit code 0x77"
    assert fields["meter_time"].value == "2024-05-17T12:34:56"
    body = bytearray(body)
    body[14] = 0x13  # month 13 (the clock starts at byte 10: ss mm hh DD MM YY YY)
    assert cjt188.decode_current_data(Family.WATER, bytes(body))["meter_time"].error


def test_point_validation() -> None:
    bus = SerialBus(LineSettings("/dev/null"))
    with pytest.raises(ValueError, match="not read from a water meter"):
        Cjt188Driver("m", bus, WATER, 0x10, [Cjt188Point("h", "current_heat")], timeout=0.1)
    with pytest.raises(ValueError, match="not a unit of volume"):
        Cjt188Driver("m", bus, WATER, 0x10, [Cjt188Point("v", "cumulative_flow", "kWh")], timeout=1)
    with pytest.raises(ValueError, match="D3–D15"):
        Cjt188Driver("m", bus, WATER, 0x10, [], timeout=0.1, status_bits=[StatusBit(2, "x")])
    drv = Cjt188Driver("m", bus, WATER, 0x10, [Cjt188Point("v", "cumulative_flow")], timeout=0.1)
    assert drv.describe_plan() == [
        "meter 00000012345678 (cold water meter, type 10): DI 901F (19 data bytes) → v"
    ]


# ---------------------------------------------------------------------------- over a pty

OTHER = "00000012345679"
WATER_POINTS = [
    Cjt188Point("volume", "cumulative_flow"),
    Cjt188Point("volume_l", "cumulative_flow", unit="L"),
    Cjt188Point("settled", "settlement_flow"),
    Cjt188Point("clock", "meter_time"),
    Cjt188Point("valve_closed", "valve_closed"),
    Cjt188Point("battery_low", "battery_low"),
]
HEAT_POINTS = [
    Cjt188Point("heat", "current_heat"),
    Cjt188Point("heat_gj", "current_heat", unit="GJ"),
    Cjt188Point("power", "heat_power"),
    Cjt188Point("flow", "flow_rate"),
    Cjt188Point("volume", "cumulative_flow"),
    Cjt188Point("supply", "supply_temperature"),
    Cjt188Point("return", "return_temperature"),
    Cjt188Point("hours", "working_hours"),
    Cjt188Point("flow_fault", "flow_sensor_fault"),
]
HEAT_BITS = [StatusBit(5, "flow_sensor_fault", fault=True)]


def _by_point(samples: list[Sample]) -> dict[str, Sample]:
    return {s.point: s for s in samples}


def _sim() -> Cjt188Sim:
    return Cjt188Sim(
        {
            WATER: SimMeter(0x10, {"cumulative_flow": 1234.56, "settlement_flow": 1200.0}),
            OTHER: SimMeter(0x10, {"cumulative_flow": 7.5}, status=0x0005),
            HEAT: SimMeter(
                0x20,
                {
                    "current_heat": 1234.56,
                    "heat_power": 12.34,
                    "flow_rate": 1.2345,
                    "cumulative_flow": 567.89,
                    "supply_temperature": 65.43,
                    "return_temperature": 45.67,
                    "working_hours": 8760,
                },
                units={"current_heat": 0x11},  # this one counts GJ
            ),
        },
        late_by=0.5,
    )


async def test_two_water_meters_and_a_heat_meter_on_one_line() -> None:
    with SimLine(_sim(), baudrate=9600) as line:
        async with SerialBus(LineSettings(line.path, 9600, "E")) as bus:
            a = Cjt188Driver("w1", bus, WATER, 0x10, WATER_POINTS, timeout=0.5)
            b = Cjt188Driver("w2", bus, OTHER, 0x10, WATER_POINTS, timeout=0.5)
            h = Cjt188Driver("h1", bus, HEAT, 0x20, HEAT_POINTS, timeout=0.5, status_bits=HEAT_BITS)
            sa, sb, sh = [_by_point(await d.read()) for d in (a, b, h)]
    assert sa["volume"].value == pytest.approx(1234.56) and sa["volume"].raw == 1234.56
    assert sa["volume_l"].value == pytest.approx(1234560.0)
    assert sa["settled"].value == pytest.approx(1200.0)
    assert isinstance(sa["clock"].value, str) and sa["clock"].value[:2] == "20"
    assert sa["valve_closed"].value is False and sa["volume"].flags == ()
    assert all(s.quality is Quality.GOOD for s in sa.values())
    assert sb["volume"].value == pytest.approx(7.5)
    assert sb["valve_closed"].value is True and sb["battery_low"].value is True
    assert sb["volume"].flags == ("valve_closed", "battery_low")
    # the heat meter counts GJ: converted to kWh, and read back in GJ when asked
    assert sh["heat"].value == pytest.approx(1234.56e9 / 3600 / 1000) and sh["heat"].raw == 1234.56
    assert sh["heat_gj"].value == pytest.approx(1234.56)
    assert sh["power"].value == pytest.approx(12.34) and sh["flow"].value == pytest.approx(1.2345)
    assert sh["volume"].value == pytest.approx(567.89)
    assert sh["supply"].value == pytest.approx(65.43) and sh["return"].value == pytest.approx(45.67)
    assert sh["hours"].value == 8760.0 and sh["flow_fault"].value is False
    assert a.identity() == {"address": WATER, "meter_type": "10"}


async def test_sensor_fault_bit_makes_values_uncertain() -> None:
    sim = _sim()
    sim.meters[HEAT].status = 1 << 5
    with SimLine(sim) as line:
        async with SerialBus(LineSettings(line.path, 9600)) as bus:
            h = Cjt188Driver("h1", bus, HEAT, 0x20, HEAT_POINTS, timeout=0.5, status_bits=HEAT_BITS)
            s = _by_point(await h.read())
    assert s["heat"].quality is Quality.UNCERTAIN and s["heat"].reason is Reason.SENSOR_FAILURE
    assert s["flow_fault"].value is True and s["flow_fault"].quality is Quality.GOOD
    assert "status:flow_sensor_fault" in s["heat"].flags


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.SILENT, DeviceTimeout),
        (Fault.GARBAGE, FrameError),
        (Fault.BAD_CRC, FrameError),
        (Fault.TRUNCATED, FrameError),
        (Fault.WRONG_SLAVE, FrameError),
        (Fault.NO_DATA, DeviceRejected),
    ],
)
async def test_one_faulty_meter_costs_only_itself(fault: Fault, error: type[Exception]) -> None:
    sim = _sim()
    sim.meters[OTHER].faults = {fault}
    with SimLine(sim, baudrate=9600) as line:
        async with SerialBus(LineSettings(line.path, 9600), failures_to_quarantine=99) as bus:
            good = Cjt188Driver("w1", bus, WATER, 0x10, WATER_POINTS[:1], timeout=0.3)
            bad = Cjt188Driver("w2", bus, OTHER, 0x10, WATER_POINTS[:1], timeout=0.3)
            for _ in range(2):
                with pytest.raises(error) as caught:
                    await bad.read()
                assert (await good.read())[0].value == pytest.approx(1234.56)
    exc = caught.value
    assert getattr(exc, "device", None) == "w2"
    assert getattr(exc, "endpoint", "").endswith(OTHER)


async def test_noise_before_the_frame_and_a_late_answer() -> None:
    sim = _sim()
    sim.meters[WATER].faults = {Fault.NOISE}
    with SimLine(sim) as line:
        async with SerialBus(LineSettings(line.path, 9600), failures_to_quarantine=99) as bus:
            drv = Cjt188Driver("w1", bus, WATER, 0x10, WATER_POINTS[:1], timeout=0.3)
            assert (await drv.read())[0].value == pytest.approx(1234.56)
            sim.meters[WATER].faults = {Fault.LATE}
            with pytest.raises(DeviceTimeout):
                await drv.read()
            # the late answer to that poll arrives now: it must not pass as the next one
            await asyncio.sleep(0.3)
            sim.meters[WATER].faults = set()
            sim.meters[WATER].set("cumulative_flow", 2000.0, sim.now())
            assert (await drv.read())[0].value == pytest.approx(2000.0)


async def test_wrong_meter_type_and_di_order() -> None:
    sim = _sim()
    sim.meters[WATER].di_order = "high_first"
    with SimLine(sim) as line:
        async with SerialBus(LineSettings(line.path, 9600), failures_to_quarantine=99) as bus:
            low = Cjt188Driver("w1", bus, WATER, 0x10, WATER_POINTS[:1], timeout=0.3)
            with pytest.raises(DeviceRejected):  # the meter does not understand 1F 90
                await low.read()
            high = Cjt188Driver(
                "w1", bus, WATER, 0x10, WATER_POINTS[:1], timeout=0.3, di_order="high_first"
            )
            assert (await high.read())[0].value == pytest.approx(1234.56)
            gas = Cjt188Driver("g1", bus, WATER, 0x30, WATER_POINTS[:1], timeout=0.3)
            with pytest.raises(DeviceTimeout):  # a water meter ignores a gas meter request
                await gas.read()


async def test_wildcard_reads_the_single_meter_on_a_line() -> None:
    sim = Cjt188Sim({WATER: SimMeter(0x10, {"cumulative_flow": 42.0})})
    with SimLine(sim) as line:
        async with SerialBus(LineSettings(line.path, 9600)) as bus:
            drv = Cjt188Driver("w", bus, cjt188.WILDCARD, 0x10, WATER_POINTS[:1], timeout=0.3)
            assert (await drv.read())[0].value == pytest.approx(42.0)
    assert drv.identity()["address"] == WATER


async def test_value_faults_stuck_drift_step() -> None:
    now = [0.0]
    sim = Cjt188Sim({WATER: SimMeter(0x10, {"cumulative_flow": 100.0})}, clock=lambda: now[0])
    meter = sim.meters[WATER]
    with SimLine(sim) as line:
        async with SerialBus(LineSettings(line.path, 9600)) as bus:
            drv = Cjt188Driver("w", bus, WATER, 0x10, WATER_POINTS[:1], timeout=0.3)

            async def volume() -> object:
                return (await drv.read())[0].value

            meter.set_fault("cumulative_flow", Stuck(), sim.now())
            meter.set("cumulative_flow", 150.0, sim.now())
            assert await volume() == pytest.approx(100.0)
            meter.set_fault("cumulative_flow", Drift(0.5), sim.now())
            now[0] = 10.0
            assert await volume() == pytest.approx(155.0)
            meter.set_fault("cumulative_flow", Step(-50.0), sim.now())
            assert await volume() == pytest.approx(100.0)
            meter.set_fault("cumulative_flow", None, sim.now())
            assert await volume() == pytest.approx(150.0)


class _Parrot:
    """Answers every request with the same recorded reply (SER 00), whatever it asked."""

    stream_period: float | None = None

    def feed(self, data: bytes) -> list[Emit]:
        return [Emit(REPLY_WATER, len(data))] if data.endswith(b"\x16") else []

    def stream(self) -> bytes:
        return b""


async def test_a_reply_with_another_ser_is_refused() -> None:
    with SimLine(_Parrot()) as line:
        async with SerialBus(LineSettings(line.path, 9600), failures_to_quarantine=99) as bus:
            drv = Cjt188Driver("w1", bus, WATER, 0x10, WATER_POINTS[:1], timeout=0.3)
            assert (await drv.read())[0].value == pytest.approx(1234.56)  # asked SER 00
            with pytest.raises(FrameError, match="SER 00, asked 01"):
                await drv.read()


async def test_a_value_scaled_past_the_floats_is_invalid_never_infinite() -> None:
    huge = Cjt188Point("volume", "cumulative_flow", scale=1e307)
    with SimLine(_sim(), baudrate=9600) as line:
        async with SerialBus(LineSettings(line.path, 9600, "E")) as bus:
            (s,) = await Cjt188Driver("w1", bus, WATER, 0x10, [huge], timeout=0.5).read()
    assert (s.value, s.quality, s.reason) == (None, Quality.BAD, Reason.INVALID_VALUE)
