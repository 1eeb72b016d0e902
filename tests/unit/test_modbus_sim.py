"""The Modbus TCP simulator over real loopback sockets: pymodbus as a client, and raw bytes."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from drivers.modbus_codec import DataType, Order, PointSpec, Table
from simulators.modbus_device import Faults, ModbusTcpSimulator, SimPoint, SimulatorError
from simulators.values import Sine, Step, build_generator

IO_TIMEOUT_S = 2.0


class FakeClock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def point(
    id: str,
    table: Table,
    address: int,
    type: DataType,
    sim: object,
    **kwargs: object,
) -> SimPoint:
    spec = PointSpec(id, table, address, type, **kwargs)  # type: ignore[arg-type]
    return SimPoint(spec, build_generator(sim, 0))  # type: ignore[arg-type]


def unit1_points() -> list[SimPoint]:
    return [
        point("energy", Table.HOLDING, 0, DataType.UINT32, 123456),
        point(
            "temp",
            Table.HOLDING,
            2,
            DataType.FLOAT32,
            {"kind": "sine", "amplitude": 2, "period": 60, "mean": 20},
        ),
        point("level", Table.HOLDING, 4, DataType.FLOAT32, 1.5, order=Order.CDAB),
        point("scaled", Table.HOLDING, 10, DataType.INT16, 21.5, scale=0.1),
        point("run", Table.HOLDING, 12, DataType.BOOL, True, bit=0),
        point("alarm", Table.HOLDING, 12, DataType.BOOL, True, bit=3),
        point("idle", Table.HOLDING, 12, DataType.BOOL, False, bit=5),
        point("serial", Table.HOLDING, 20, DataType.STRING, "SN-42", length=4),
        point(
            "setpoint",
            Table.HOLDING,
            30,
            DataType.UINT16,
            {"kind": "ramp", "start": 0, "rate": 1, "min": 0, "max": 1000},
        ),
        point("counter", Table.INPUT, 0, DataType.UINT16, {"kind": "ramp", "start": 0, "rate": 10}),
        point("pump", Table.COIL, 0, DataType.BOOL, True),
        point("valve", Table.COIL, 9, DataType.BOOL, True),
        point("door", Table.DISCRETE, 2, DataType.BOOL, True),
    ]


def unit2_points() -> list[SimPoint]:
    return [point("two", Table.HOLDING, 0, DataType.UINT16, 2)]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[ModbusTcpSimulator]:
    tasks_before = asyncio.all_tasks()
    simulator = ModbusTcpSimulator(
        {1: unit1_points(), 2: unit2_points()},
        holes={1: [(Table.HOLDING, 14, 16)]},
        clock=clock,
        name="test-sim",
    )
    async with simulator:
        yield simulator
    # leaving closed every connection and left no task behind
    assert simulator.connections == 0
    assert asyncio.all_tasks() <= tasks_before | {asyncio.current_task()}


@pytest.fixture
async def client(sim: ModbusTcpSimulator) -> AsyncIterator[AsyncModbusTcpClient]:
    modbus = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=IO_TIMEOUT_S, retries=0)
    async with asyncio.timeout(IO_TIMEOUT_S):
        assert await modbus.connect()
    yield modbus
    modbus.close()


class Raw:
    """A raw-bytes Modbus TCP client: send frames as they are, read replies frame by frame."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        async with asyncio.timeout(IO_TIMEOUT_S):
            await self.writer.drain()

    async def reply(self) -> bytes:
        async with asyncio.timeout(IO_TIMEOUT_S):
            header = await self.reader.readexactly(6)
            (length,) = struct.unpack(">H", header[4:6])
            return header + await self.reader.readexactly(length)

    async def at_eof(self) -> bool:
        async with asyncio.timeout(IO_TIMEOUT_S):
            return await self.reader.read(1) == b""

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def raw(sim: ModbusTcpSimulator) -> AsyncIterator[Raw]:
    async with asyncio.timeout(IO_TIMEOUT_S):
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    connection = Raw(reader, writer)
    yield connection
    connection.close()


def request(tid: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def read_pdu(function: int, address: int, count: int) -> bytes:
    return struct.pack(">BHH", function, address, count)


# -- the worked example and the framing ---------------------------------------------


async def test_protocol_reference_vector(raw: Raw) -> None:
    await raw.send(bytes.fromhex("000100000006010300000002"))
    assert await raw.reply() == bytes.fromhex("00010000000701030400 01E240".replace(" ", ""))


async def test_pipelined_requests_are_all_answered_in_order(
    raw: Raw, sim: ModbusTcpSimulator
) -> None:
    frames = [request(tid, 1 + tid % 2, read_pdu(3, 0, 1)) for tid in range(1, 41)]
    await raw.send(b"".join(frames))
    replies = [await raw.reply() for _ in frames]
    assert [struct.unpack(">H", r[:2])[0] for r in replies] == list(range(1, 41))
    for tid, reply in zip(range(1, 41), replies, strict=True):
        unit = 1 + tid % 2  # register 0 holds 0x0001 on unit 1 and 0x0002 on unit 2
        assert reply == request(tid, unit, bytes((3, 2, 0, unit)))
    assert sim.requests == 40


async def test_frame_split_into_single_bytes(raw: Raw) -> None:
    frame = request(7, 1, read_pdu(3, 0, 2))
    for byte in frame:
        await raw.send(bytes((byte,)))
    assert await raw.reply() == bytes.fromhex("00070000000701030400 01E240".replace(" ", ""))


async def test_one_and_a_half_frames_then_the_rest(raw: Raw) -> None:
    frames = request(1, 1, read_pdu(3, 0, 2)) + request(2, 2, read_pdu(3, 0, 1))
    await raw.send(frames[:18])
    first = await raw.reply()
    assert first[:2] == b"\x00\x01"
    await raw.send(frames[18:])
    second = await raw.reply()
    assert second == request(2, 2, bytes((3, 2, 0, 2)))


async def test_impossible_mbap_length_closes_the_connection(raw: Raw) -> None:
    await raw.send(struct.pack(">HHHB", 1, 0, 300, 1) + b"\x03\x00\x00\x00\x01")
    assert await raw.at_eof()


async def test_nonzero_protocol_id_is_skipped(raw: Raw) -> None:
    foreign = struct.pack(">HHHB", 1, 5, 6, 1) + read_pdu(3, 0, 1)
    await raw.send(foreign + request(2, 1, read_pdu(3, 0, 1)))
    reply = await raw.reply()
    assert reply[:2] == b"\x00\x02"  # the first frame got no answer, the second did


# -- reads through a real client ------------------------------------------------------


async def test_reads_every_table_with_pymodbus(client: AsyncModbusTcpClient) -> None:
    holding = await client.read_holding_registers(0, count=14, device_id=1)
    assert not holding.isError()
    beyond_hole = await client.read_holding_registers(16, count=15, device_id=1)
    regs = [*holding.registers, 0, 0, *beyond_hole.registers]
    assert regs[0:2] == [0x0001, 0xE240]
    assert client.convert_from_registers(regs[2:4], client.DATATYPE.FLOAT32) == pytest.approx(20.0)
    assert client.convert_from_registers([regs[5], regs[4]], client.DATATYPE.FLOAT32) == 1.5
    assert regs[10] == 215  # 21.5 with scale 0.1
    assert regs[12] == 0b1001  # two bool points merged into one register
    assert regs[6:10] == [0, 0, 0, 0]  # the gap between points reads as zero
    assert bytes(b for r in regs[20:24] for b in r.to_bytes(2, "big")) == b"SN-42\x00\x00\x00"

    coils = await client.read_coils(0, count=10, device_id=1)
    assert coils.bits[:10] == [True] + [False] * 8 + [True]
    discrete = await client.read_discrete_inputs(0, count=3, device_id=1)
    assert discrete.bits[:3] == [False, False, True]
    inputs = await client.read_input_registers(0, count=1, device_id=1)
    assert inputs.registers == [0]
    other = await client.read_holding_registers(0, count=1, device_id=2)
    assert other.registers == [2]


async def test_big_blocks_from_concurrent_connections(clock: FakeClock) -> None:
    points = [point(f"p{i}", Table.HOLDING, 2 * i, DataType.FLOAT32, float(i)) for i in range(63)]
    async with ModbusTcpSimulator({1: points}, clock=clock) as simulator:
        clients = [
            AsyncModbusTcpClient("127.0.0.1", port=simulator.port, timeout=IO_TIMEOUT_S, retries=0)
            for _ in range(4)
        ]
        try:
            for c in clients:
                assert await c.connect()

            async def poll(c: AsyncModbusTcpClient) -> None:
                for _ in range(50):
                    response = await c.read_holding_registers(0, count=125, device_id=1)
                    assert len(response.registers) == 125
                    value = c.convert_from_registers(response.registers[20:22], c.DATATYPE.FLOAT32)
                    assert value == 10.0

            async with asyncio.timeout(10), asyncio.TaskGroup() as group:
                for c in clients:
                    group.create_task(poll(c))
            assert simulator.requests == 200
        finally:
            for c in clients:
                c.close()


async def test_generated_values_refresh_at_most_every_refresh_s(
    client: AsyncModbusTcpClient, sim: ModbusTcpSimulator, clock: FakeClock
) -> None:
    async def counter() -> int:
        response = await client.read_input_registers(0, count=1, device_id=1)
        return int(response.registers[0])

    assert await counter() == 0
    clock.now += 0.04  # within refresh_s: the image is not recomputed
    assert await counter() == 0
    clock.now += 0.02
    assert await counter() == 1  # ramp 10/s at t = 0.06 s, rounded
    clock.now += 2.0
    assert await counter() == 21


# -- exceptions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pdu", "code"),
    [
        (bytes((0x2B, 0x0E, 0x01, 0x00)), 0x01),  # function not implemented
        (bytes((0x07,)), 0x01),
        (read_pdu(3, 0, 0), 0x03),
        (read_pdu(3, 0, 126), 0x03),
        (read_pdu(4, 0, 126), 0x03),
        (read_pdu(1, 0, 2001), 0x03),
        (read_pdu(3, 0, 1) + b"\x00", 0x03),  # PDU too long
        (read_pdu(3, 30, 2), 0x02),  # runs past the end of the image
        (read_pdu(3, 1000, 1), 0x02),
        (read_pdu(3, 13, 2), 0x02),  # touches the hole 14–15
        (read_pdu(3, 15, 1), 0x02),
        (read_pdu(2, 3, 1), 0x02),
        (struct.pack(">BHH", 5, 0, 0x1234), 0x03),  # coil value must be FF00 or 0000
        (struct.pack(">BHH", 5, 10, 0xFF00), 0x02),
        (struct.pack(">BHH", 6, 14, 7), 0x02),  # write into the hole
        (struct.pack(">BHHB", 0x10, 0, 2, 3) + b"\x00\x01\x00", 0x03),  # byte count ≠ 2·qty
        (struct.pack(">BHHB", 0x10, 0, 124, 248) + bytes(2), 0x03),  # qty 124 > 123
        (struct.pack(">BHHB", 0x0F, 0, 1969, 247) + bytes(247), 0x03),
        (struct.pack(">BHHB", 0x0F, 0, 9, 1) + b"\x01", 0x03),  # 9 coils need 2 bytes
    ],
)
async def test_exception_replies(raw: Raw, pdu: bytes, code: int) -> None:
    await raw.send(request(9, 1, pdu))
    assert await raw.reply() == request(9, 1, bytes((pdu[0] | 0x80, code)))


async def test_exception_through_pymodbus(client: AsyncModbusTcpClient) -> None:
    response = await client.read_holding_registers(14, count=1, device_id=1)
    assert response.isError()
    assert response.exception_code == 0x02


# -- writes --------------------------------------------------------------------------


async def test_writes_change_the_image(
    client: AsyncModbusTcpClient, sim: ModbusTcpSimulator, clock: FakeClock
) -> None:
    assert not (await client.write_register(10, 300, device_id=1)).isError()
    assert sim.value(1, "scaled") == pytest.approx(30.0)
    words = client.convert_to_registers(12.25, client.DATATYPE.FLOAT32)
    assert not (await client.write_registers(2, words, device_id=1)).isError()
    assert not (await client.write_coil(0, False, device_id=1)).isError()
    pattern = [True, False, True, True, False, False, False, True, True]
    assert not (await client.write_coils(1, pattern, device_id=1)).isError()

    clock.now += 15.0  # the sine would be at its peak; the written point holds its value
    low = await client.read_holding_registers(0, count=14, device_id=1)
    high = await client.read_holding_registers(16, count=15, device_id=1)
    regs = [*low.registers, 0, 0, *high.registers]
    assert client.convert_from_registers(regs[2:4], client.DATATYPE.FLOAT32) == 12.25
    assert regs[10] == 300
    assert regs[30] == 15  # an unwritten generated point still follows its generator
    coils = (await client.read_coils(0, count=10, device_id=1)).bits[:10]
    assert coils == [False, *pattern]
    assert sim.value(1, "temp") == 12.25


async def test_write_echoes_match_the_specification(raw: Raw) -> None:
    single = struct.pack(">BHH", 6, 8, 0xBEEF)
    await raw.send(request(1, 1, single))
    assert await raw.reply() == request(1, 1, single)
    multiple = struct.pack(">BHHB", 0x10, 6, 2, 4) + b"\x12\x34\x56\x78"
    await raw.send(request(2, 1, multiple))
    assert await raw.reply() == request(2, 1, multiple[:5])
    await raw.send(request(3, 1, read_pdu(3, 6, 2)))
    assert await raw.reply() == request(3, 1, b"\x03\x04\x12\x34\x56\x78")


async def test_set_value_and_release(sim: ModbusTcpSimulator, clock: FakeClock) -> None:
    sim.set_value(1, "temp", 99.5)
    clock.now += 15.0
    sim.refresh()
    assert sim.value(1, "temp") == 99.5
    sim.release(1, "temp")
    assert sim.value(1, "temp") == pytest.approx(22.0)
    sim.set_value(1, "alarm", False)
    assert sim.value(1, "run") is True
    assert sim.value(1, "alarm") is False
    with pytest.raises(KeyError, match="no point 'nope'"):
        sim.value(1, "nope")


# -- unknown units and faults ---------------------------------------------------------


async def test_unknown_unit_gets_no_answer(raw: Raw) -> None:
    await raw.send(request(1, 9, read_pdu(3, 0, 1)) + request(2, 2, read_pdu(3, 0, 1)))
    assert (await raw.reply())[:2] == b"\x00\x02"


async def test_unknown_unit_can_answer_gateway_exception(clock: FakeClock) -> None:
    async with ModbusTcpSimulator({1: unit2_points()}, clock=clock, unknown_unit="exception") as s:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        connection = Raw(reader, writer)
        try:
            await connection.send(request(4, 9, read_pdu(3, 0, 1)))
            assert await connection.reply() == request(4, 9, b"\x83\x0b")
        finally:
            connection.close()


async def test_silent_unit(raw: Raw, sim: ModbusTcpSimulator) -> None:
    sim.faults[1].silent = True
    await raw.send(request(1, 1, read_pdu(3, 0, 1)) + request(2, 2, read_pdu(3, 0, 1)))
    assert (await raw.reply())[:2] == b"\x00\x02"
    assert sim.received == 2
    assert sim.requests == 1


async def test_silent_unit_times_out_in_pymodbus(sim: ModbusTcpSimulator) -> None:
    sim.faults[1].silent = True
    modbus = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=0.2, retries=0)
    try:
        assert await modbus.connect()
        with pytest.raises(ModbusIOException):
            async with asyncio.timeout(IO_TIMEOUT_S):
                await modbus.read_holding_registers(0, count=1, device_id=1)
    finally:
        modbus.close()


async def test_delayed_unit_does_not_hold_up_others(raw: Raw, sim: ModbusTcpSimulator) -> None:
    sim.faults[1].delay_s = 0.3
    loop = asyncio.get_running_loop()
    started = loop.time()
    await raw.send(request(1, 1, read_pdu(3, 0, 1)) + request(2, 2, read_pdu(3, 0, 1)))
    first = await raw.reply()
    assert first[:2] == b"\x00\x02"
    assert loop.time() - started < 0.25
    second = await raw.reply()
    assert second == request(1, 1, b"\x03\x02\x00\x01")
    assert loop.time() - started >= 0.3


async def test_exception_fault(raw: Raw, sim: ModbusTcpSimulator) -> None:
    sim.faults[1].exception = 0x04
    await raw.send(request(1, 1, read_pdu(3, 0, 1)))
    assert await raw.reply() == request(1, 1, b"\x83\x04")
    sim.faults[1] = Faults()
    await raw.send(request(2, 1, read_pdu(3, 0, 1)))
    assert await raw.reply() == request(2, 1, b"\x03\x02\x00\x01")


async def test_garbage_fault(raw: Raw, sim: ModbusTcpSimulator) -> None:
    sim.faults[1].garbage = True
    await raw.send(request(1, 1, read_pdu(3, 0, 2)))
    reply = await raw.reply()
    assert reply == request(1, 1, b"\x03\xff\x00")


async def test_drop_connection_fires_once(sim: ModbusTcpSimulator) -> None:
    sim.faults[1].drop_connection = True
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    first = Raw(reader, writer)
    try:
        await first.send(request(1, 1, read_pdu(3, 0, 1)))
        assert await first.at_eof()
    finally:
        first.close()
    assert sim.faults[1].drop_connection is False
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    second = Raw(reader, writer)
    try:
        await second.send(request(2, 1, read_pdu(3, 0, 1)))
        assert (await second.reply())[:2] == b"\x00\x02"
    finally:
        second.close()


async def test_closing_cancels_delayed_replies_and_drops_connections(clock: FakeClock) -> None:
    tasks_before = asyncio.all_tasks()
    simulator = ModbusTcpSimulator({1: unit2_points(), 2: unit2_points()}, clock=clock)
    async with simulator:
        simulator.faults[1].delay_s = 30.0
        reader, writer = await asyncio.open_connection("127.0.0.1", simulator.port)
        connection = Raw(reader, writer)
        await connection.send(request(1, 1, read_pdu(3, 0, 1)) + request(2, 2, read_pdu(3, 0, 1)))
        # unit 2's answer shows the delayed request was taken in and its reply is pending
        assert (await connection.reply())[:2] == b"\x00\x02"
    try:
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await connection.reply()
        assert simulator.requests == 1
        assert simulator.connections == 0
        assert asyncio.all_tasks() <= tasks_before | {asyncio.current_task()}
    finally:
        connection.close()
    with pytest.raises(OSError):
        await asyncio.wait_for(asyncio.open_connection("127.0.0.1", simulator.port), IO_TIMEOUT_S)


# -- construction ----------------------------------------------------------------------


def test_points_that_overlap_are_rejected() -> None:
    points = [
        point("a", Table.HOLDING, 0, DataType.FLOAT32, 1.0),
        point("b", Table.HOLDING, 1, DataType.UINT16, 1),
    ]
    with pytest.raises(ValueError, match="'b' overlaps point 'a'"):
        ModbusTcpSimulator({1: points})


def test_bool_bits_may_share_a_register_but_not_a_bit() -> None:
    shared = [
        point("a", Table.HOLDING, 0, DataType.BOOL, True, bit=1),
        point("b", Table.HOLDING, 0, DataType.BOOL, True, bit=1),
    ]
    with pytest.raises(ValueError, match="'b' overlaps point 'a'"):
        ModbusTcpSimulator({1: shared})
    clash = [
        point("a", Table.HOLDING, 0, DataType.BOOL, True, bit=1),
        point("b", Table.HOLDING, 0, DataType.UINT16, 1),
    ]
    with pytest.raises(ValueError, match="'b' overlaps point 'a'"):
        ModbusTcpSimulator({1: clash})


def test_point_in_a_hole_is_rejected() -> None:
    with pytest.raises(ValueError, match="lies in hole"):
        ModbusTcpSimulator({1: unit2_points()}, holes={1: [(Table.HOLDING, 0, 4)]})


def test_value_the_type_cannot_hold_is_rejected() -> None:
    bad = [SimPoint(PointSpec("t", Table.HOLDING, 0, DataType.FLOAT32), Step(("warm",), 1.0))]
    with pytest.raises(ValueError, match="'t': cannot show its value"):
        ModbusTcpSimulator({1: bad})


def test_bad_unit_id_is_rejected() -> None:
    with pytest.raises(ValueError, match="unit id 300"):
        ModbusTcpSimulator({300: unit2_points()})


async def test_port_in_use_is_a_simulator_error(sim: ModbusTcpSimulator) -> None:
    other = ModbusTcpSimulator({1: unit2_points()}, port=sim.port)
    with pytest.raises(SimulatorError, match="cannot listen"):
        async with other:
            pass


async def test_margin_extends_the_image(clock: FakeClock) -> None:
    points = [SimPoint(PointSpec("s", Table.INPUT, 0, DataType.FLOAT32), Sine(1.0, 10.0))]
    async with ModbusTcpSimulator({1: points}, clock=clock, margin=8) as simulator:
        reader, writer = await asyncio.open_connection("127.0.0.1", simulator.port)
        connection = Raw(reader, writer)
        try:
            await connection.send(request(1, 1, read_pdu(4, 0, 10)))
            assert await connection.reply() == request(1, 1, bytes((4, 20)) + bytes(20))
            await connection.send(request(2, 1, read_pdu(4, 0, 11)))
            assert await connection.reply() == request(2, 1, b"\x84\x02")
        finally:
            connection.close()
