"""A simulated Modbus TCP server holding one or more devices (unit ids), with faults.

The server is a plain :class:`asyncio.Protocol`: it cuts MBAP frames out of the
stream itself, so requests pipelined on one connection, frames split across TCP
segments and several frames in one segment are all answered (the pymodbus server
answers only the first of several pipelined requests). Replies to one chunk of
input go out in one write.

Behaviour, as a real device or a Modbus TCP gateway would have it:

* Function codes 01, 02, 03, 04 (read; 1–2000 bits, 1–125 registers), 05, 06,
  0F (1–1968 coils), 10 (1–123 registers). Checks run in the order of the Modbus
  specification: unknown function → exception 01; bad quantity, byte count or PDU
  length → 03; any address outside the image or inside a configured hole → 02.
* The image of a table runs from address 0 to the end of its last point plus
  ``margin``; addresses between points read as zero, so a planner that bridges
  gaps gets an answer. A table without points has no image (every access → 02).
* Writes (05, 06, 0F, 10) change the image; a generated point touched by a write
  stops being regenerated and keeps the written value (as a setpoint would).
* An unknown unit id gets no answer at all by default, like a gateway whose
  target does not respond; with ``unknown_unit="exception"`` it gets exception
  0B (gateway target device failed to respond).
* A frame whose MBAP length is impossible (< 2 or > 254) means the stream is out
  of step: the connection is closed. A frame with a protocol id other than 0 is
  skipped without an answer.

Generated values are recomputed lazily: when a request for a unit arrives and its
image is older than ``refresh_s``. Only points whose generator is not constant
are recomputed, and register reads are slices of a ready big-endian byte image,
so one core answers well over 5,000 requests/s of 125 registers.

Faults are set per unit at runtime through :attr:`ModbusTcpSimulator.faults`.

:func:`serve_modbus_tcp` is the simulator factory of the ``modbus_tcp`` driver kind
(:mod:`simulators.factory`): the devices of a gateway config, one server per
``host:port``, each device's faults on request (``sim: {fault: ...}``) on its unit.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Protocol, Self

from drivers.base import Value
from drivers.modbus_codec import (
    DataType,
    PointSpec,
    Table,
    decode,
    encode,
    engineering,
    raw_from_engineering,
)
from simulators.factory import ModbusDeviceLike, Served, device_sim, modbus_generators
from simulators.values import Constant, Generator

__all__ = [
    "Faults",
    "ModbusTcpSimulator",
    "SimPoint",
    "SimulatorError",
    "serve_modbus_tcp",
]

log = logging.getLogger(__name__)

_MBAP = struct.Struct(">HHHB")
_ADDR_QTY = struct.Struct(">HH")
_CLOSE_TIMEOUT_S = 2.0
# '0'/'1' characters ↔ 0/1 bytes, to pack and unpack coil bits without a Python loop
_TO_CHARS = bytes.maketrans(b"\x00\x01", b"01")
_FROM_CHARS = bytes.maketrans(b"01", b"\x00\x01")

ILLEGAL_FUNCTION = 0x01
ILLEGAL_DATA_ADDRESS = 0x02
ILLEGAL_DATA_VALUE = 0x03
GATEWAY_TARGET_FAILED = 0x0B


class SimulatorError(Exception):
    """The simulator could not start or was used before it started."""


@dataclass
class SimPoint:
    """One simulated point: where it lives, and what engineering value it shows.

    The image holds ``encode(spec, raw_from_engineering(spec, generator.value(t)))``;
    a ``bool`` point on a register table sets only its bit of the shared register.
    """

    spec: PointSpec
    generator: Generator


@dataclass
class Faults:
    """Faults of one unit id; change the fields at any time, they apply to the next request.

    Precedence when several are set: ``drop_connection``, ``silent``, ``exception``,
    ``garbage``; ``delay_s`` delays whatever answer remains.
    """

    silent: bool = False
    """No answer at all (the request still counts in ``received``)."""
    delay_s: float = 0.0
    """Answer this many seconds late; other connections and units are not held up."""
    exception: int | None = None
    """Answer every request with this exception code (1–255)."""
    drop_connection: bool = False
    """Close the connection on the next request, unanswered; clears itself when it fires."""
    garbage: bool = False
    """Answer with a malformed PDU: the function code, a byte count of 255, one byte."""


class _ModbusException(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass(slots=True)
class _Slot:
    spec: PointSpec
    generator: Generator
    held: bool = False


@dataclass(slots=True)
class _Unit:
    """One unit id's image and points."""

    unit_id: int
    registers: dict[Table, bytearray]
    bits: dict[Table, bytearray]
    holes: dict[Table, list[tuple[int, int]]]
    slots: dict[str, _Slot]
    live: list[_Slot] = field(default_factory=list)
    refreshed_at: float = float("-inf")

    def store(self, spec: PointSpec, value: Value) -> None:
        """Write one point's engineering value into the image."""
        if spec.table.is_bit:
            self.bits[spec.table][spec.address] = 1 if value else 0
            return
        image = self.registers[spec.table]
        offset = 2 * spec.address
        if spec.type is DataType.BOOL:
            mask = 1 << (spec.bit or 0)
            (word,) = struct.unpack_from(">H", image, offset)
            struct.pack_into(">H", image, offset, (word | mask) if value else (word & ~mask))
            return
        if spec.type is DataType.STRING:
            value = str(value)
        words = encode(spec, raw_from_engineering(spec, value))
        struct.pack_into(f">{len(words)}H", image, offset, *words)

    def load(self, spec: PointSpec) -> Value | None:
        """The engineering value the image shows for one point (None where scale and
        offset take it past the float range: what a gateway reads as invalid)."""
        if spec.table.is_bit:
            return bool(self.bits[spec.table][spec.address])
        image = self.registers[spec.table]
        words = struct.unpack_from(f">{spec.width}H", image, 2 * spec.address)
        return engineering(spec, decode(spec, words))

    def refresh(self, t: float) -> None:
        store = self.store
        for slot in self.live:
            store(slot.spec, slot.generator.value(t))

    def check_range(self, table: Table, address: int, count: int) -> None:
        """Raise exception 02 unless ``[address, address + count)`` is all readable."""
        size = len(self.bits[table]) if table.is_bit else len(self.registers[table]) >> 1
        if address + count > size:
            raise _ModbusException(ILLEGAL_DATA_ADDRESS)
        for start, end in self.holes.get(table, ()):
            if address < end and start < address + count:
                raise _ModbusException(ILLEGAL_DATA_ADDRESS)

    def hold_written(self, table: Table, address: int, count: int) -> None:
        """Stop regenerating every point a write touched, so it keeps the written value."""
        end = address + count
        touched = False
        for slot in self.slots.values():
            if slot.spec.table is table and slot.spec.address < end and address < slot.spec.end:
                slot.held = touched = True
        if touched:
            self.live = [s for s in self.live if not s.held]


class ModbusTcpSimulator:
    """Serves simulated Modbus TCP devices on ``host:port`` (port 0 = a free port).

    An async context manager: ``async with ModbusTcpSimulator(units) as sim:`` binds,
    after which :attr:`port` is the bound port; leaving closes every connection and
    cancels delayed replies. ``units`` maps a unit id (0–255) to its points; ``holes``
    maps a unit id to ``(table, start, end_exclusive)`` ranges that answer exception
    02. Raises ``ValueError`` for overlapping points, points inside holes, or a
    generator whose value the point's type cannot hold; :class:`SimulatorError` when
    it cannot bind.

    ``clock`` gives seconds (monotonic); generator time ``t`` is seconds since the
    simulator was entered. Counters: :attr:`received` frames, :attr:`requests`
    answered (exceptions and garbage included), :attr:`connections` open now.
    """

    def __init__(
        self,
        units: Mapping[int, Sequence[SimPoint]],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        holes: Mapping[int, Sequence[tuple[Table, int, int]]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str = "sim",
        refresh_s: float = 0.05,
        margin: int = 0,
        unknown_unit: Literal["silent", "exception"] = "silent",
    ) -> None:
        self.host = host
        self.port = port
        self.name = name
        self.refresh_s = refresh_s
        self.unknown_unit = unknown_unit
        self.faults: dict[int, Faults] = {}
        self.requests = 0
        self.received = 0
        self._clock = clock
        self._t0 = clock()
        self._units: dict[int, _Unit] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._all_closed = asyncio.Event()
        for unit_id, points in units.items():
            if not 0 <= unit_id <= 255:
                raise ValueError(f"{name}: unit id {unit_id} outside 0–255")
            unit_holes = (holes or {}).get(unit_id, ())
            self._units[unit_id] = _build_unit(name, unit_id, points, unit_holes, margin)
            self.faults[unit_id] = Faults()
        self.refresh()

    @property
    def connections(self) -> int:
        return len(self._connections)

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def unit_ids(self) -> list[int]:
        return sorted(self._units)

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _Connection(self), self.host, self.port, reuse_address=True
            )
        except OSError as exc:
            raise SimulatorError(f"{self.name}: cannot listen on {self.endpoint}: {exc}") from exc
        self.port = self._server.sockets[0].getsockname()[1]
        self._t0 = self._clock()
        self.refresh()
        log.info("%s: Modbus TCP on %s, units %s", self.name, self.endpoint, self.unit_ids)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop listening, drop every connection and cancel delayed replies."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for connection in list(self._connections):
            connection.abort()
        async with asyncio.timeout(_CLOSE_TIMEOUT_S):
            if self._connections:
                await self._all_closed.wait()
            await server.wait_closed()

    def close_connections(self) -> None:
        """Drop every open connection now (the server keeps listening)."""
        for connection in list(self._connections):
            connection.abort()

    def elapsed(self) -> float:
        """Generator time: seconds since the simulator was entered."""
        return self._clock() - self._t0

    def refresh(self) -> None:
        """Recompute every generated value into the image now."""
        now = self._clock()
        for unit in self._units.values():
            unit.refresh(now - self._t0)
            unit.refreshed_at = now

    def set_value(self, unit_id: int, point_id: str, value: Value) -> None:
        """Show ``value`` for a point from now on, instead of its generator's values."""
        unit, slot = self._slot(unit_id, point_id)
        slot.held = True
        unit.live = [s for s in unit.live if not s.held]
        unit.store(slot.spec, value)

    def release(self, unit_id: int, point_id: str) -> None:
        """Let a held (set or written) point follow its generator again."""
        unit, slot = self._slot(unit_id, point_id)
        if slot.held:
            slot.held = False
            if not isinstance(slot.generator, Constant):
                unit.live.append(slot)
            unit.store(slot.spec, slot.generator.value(self.elapsed()))

    def value(self, unit_id: int, point_id: str) -> Value | None:
        """The engineering value the image shows now for a point (decoded from the image;
        None as in :meth:`_Unit.load`)."""
        unit, slot = self._slot(unit_id, point_id)
        return unit.load(slot.spec)

    def _slot(self, unit_id: int, point_id: str) -> tuple[_Unit, _Slot]:
        unit = self._units.get(unit_id)
        if unit is None:
            raise KeyError(f"{self.name}: no unit {unit_id}")
        slot = unit.slots.get(point_id)
        if slot is None:
            raise KeyError(f"{self.name}: unit {unit_id} has no point {point_id!r}")
        return unit, slot

    # -- request handling (hot path) ------------------------------------------------

    def _execute(self, unit: _Unit, pdu: bytes) -> bytes:
        """The response PDU for one request PDU (an exception PDU on a Modbus error)."""
        function = pdu[0]
        try:
            handler = _HANDLERS.get(function)
            if handler is None:
                raise _ModbusException(ILLEGAL_FUNCTION)
            if function <= 4:
                now = self._clock()
                if now - unit.refreshed_at >= self.refresh_s:
                    unit.refresh(now - self._t0)
                    unit.refreshed_at = now
            return handler(unit, pdu)
        except _ModbusException as exc:
            return bytes((function | 0x80, exc.code))


def _read_registers(table: Table) -> Callable[[_Unit, bytes], bytes]:
    def read(unit: _Unit, pdu: bytes) -> bytes:
        if len(pdu) != 5:
            raise _ModbusException(ILLEGAL_DATA_VALUE)
        address, count = _ADDR_QTY.unpack_from(pdu, 1)
        if not 1 <= count <= 125:
            raise _ModbusException(ILLEGAL_DATA_VALUE)
        unit.check_range(table, address, count)
        start = 2 * address
        return pdu[:1] + bytes((2 * count,)) + unit.registers[table][start : start + 2 * count]

    return read


def _read_bits(table: Table) -> Callable[[_Unit, bytes], bytes]:
    def read(unit: _Unit, pdu: bytes) -> bytes:
        if len(pdu) != 5:
            raise _ModbusException(ILLEGAL_DATA_VALUE)
        address, count = _ADDR_QTY.unpack_from(pdu, 1)
        if not 1 <= count <= 2000:
            raise _ModbusException(ILLEGAL_DATA_VALUE)
        unit.check_range(table, address, count)
        chunk = unit.bits[table][address : address + count]
        # bit i of the number is address + i; little-endian bytes put it in byte i // 8
        number = int(chunk[::-1].translate(_TO_CHARS), 2)
        n_bytes = (count + 7) // 8
        return pdu[:1] + bytes((n_bytes,)) + number.to_bytes(n_bytes, "little")

    return read


def _write_coil(unit: _Unit, pdu: bytes) -> bytes:
    if len(pdu) != 5:
        raise _ModbusException(ILLEGAL_DATA_VALUE)
    address, state = _ADDR_QTY.unpack_from(pdu, 1)
    if state not in (0xFF00, 0x0000):
        raise _ModbusException(ILLEGAL_DATA_VALUE)
    unit.check_range(Table.COIL, address, 1)
    unit.bits[Table.COIL][address] = 1 if state else 0
    unit.hold_written(Table.COIL, address, 1)
    return pdu


def _write_register(unit: _Unit, pdu: bytes) -> bytes:
    if len(pdu) != 5:
        raise _ModbusException(ILLEGAL_DATA_VALUE)
    address = (pdu[1] << 8) | pdu[2]
    unit.check_range(Table.HOLDING, address, 1)
    unit.registers[Table.HOLDING][2 * address : 2 * address + 2] = pdu[3:5]
    unit.hold_written(Table.HOLDING, address, 1)
    return pdu


def _write_coils(unit: _Unit, pdu: bytes) -> bytes:
    if len(pdu) < 6:
        raise _ModbusException(ILLEGAL_DATA_VALUE)
    address, count = _ADDR_QTY.unpack_from(pdu, 1)
    n_bytes = pdu[5]
    if not 1 <= count <= 1968 or n_bytes != (count + 7) // 8 or len(pdu) != 6 + n_bytes:
        raise _ModbusException(ILLEGAL_DATA_VALUE)
    unit.check_range(Table.COIL, address, count)
    number = int.from_bytes(pdu[6:], "little")
    chars = format(number, f"0{8 * n_bytes}b")[::-1][:count].encode()
    unit.bits[Table.COIL][address : address + count] = chars.translate(_FROM_CHARS)
    unit.hold_written(Table.COIL, address, count)
    return pdu[:5]


def _write_registers(unit: _Unit, pdu: bytes) -> bytes:
    if len(pdu) < 6:
        raise _ModbusException(ILLEGAL_DATA_VALUE)
    address, count = _ADDR_QTY.unpack_from(pdu, 1)
    n_bytes = pdu[5]
    if not 1 <= count <= 123 or n_bytes != 2 * count or len(pdu) != 6 + n_bytes:
        raise _ModbusException(ILLEGAL_DATA_VALUE)
    unit.check_range(Table.HOLDING, address, count)
    unit.registers[Table.HOLDING][2 * address : 2 * (address + count)] = pdu[6:]
    unit.hold_written(Table.HOLDING, address, count)
    return pdu[:5]


_HANDLERS: dict[int, Callable[[_Unit, bytes], bytes]] = {
    0x01: _read_bits(Table.COIL),
    0x02: _read_bits(Table.DISCRETE),
    0x03: _read_registers(Table.HOLDING),
    0x04: _read_registers(Table.INPUT),
    0x05: _write_coil,
    0x06: _write_register,
    0x0F: _write_coils,
    0x10: _write_registers,
}


class _Connection(asyncio.Protocol):
    """One client connection: cuts MBAP frames from the stream and answers them."""

    def __init__(self, sim: ModbusTcpSimulator) -> None:
        self._sim = sim
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._delayed: dict[int, asyncio.TimerHandle] = {}
        self._next_delayed = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._sim._connections.add(self)
        self._sim._all_closed.clear()
        log.debug("%s: connection from %s", self._sim.name, transport.get_extra_info("peername"))

    def connection_lost(self, exc: Exception | None) -> None:
        for handle in self._delayed.values():
            handle.cancel()
        self._delayed.clear()
        self._transport = None
        sim = self._sim
        sim._connections.discard(self)
        if not sim._connections:
            sim._all_closed.set()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # a client that sends but does not read must not make our write buffer grow unbounded
    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        buffer = self._buffer
        buffer += data
        sim = self._sim
        units = sim._units
        replies: list[bytes] = []
        position = 0
        available = len(buffer)
        while available - position >= 8:
            tid, protocol, length, unit_id = _MBAP.unpack_from(buffer, position)
            if not 2 <= length <= 254:
                log.debug("%s: MBAP length %d, closing the connection", sim.name, length)
                self._flush(replies)
                transport.close()
                return
            end = position + 6 + length
            if end > available:
                break
            pdu = bytes(buffer[position + 7 : end])
            position = end
            sim.received += 1
            if protocol != 0:
                continue
            unit = units.get(unit_id)
            if unit is None:
                if sim.unknown_unit == "exception":
                    replies.append(_frame(tid, unit_id, bytes((pdu[0] | 0x80, 0x0B))))
                continue
            faults = sim.faults[unit_id]
            if faults.drop_connection:
                faults.drop_connection = False
                log.debug("%s: unit %d: dropping the connection (fault)", sim.name, unit_id)
                self._flush(replies)
                transport.close()
                return
            if faults.silent:
                continue
            if faults.exception is not None:
                response = bytes((pdu[0] | 0x80, faults.exception))
            else:
                response = sim._execute(unit, pdu)
                if faults.garbage:
                    response = bytes((response[0], 0xFF, 0x00))
            frame = _frame(tid, unit_id, response)
            if faults.delay_s > 0:
                self._send_later(faults.delay_s, frame)
            else:
                replies.append(frame)
        del buffer[:position]
        self._flush(replies)

    def _flush(self, replies: list[bytes]) -> None:
        if replies and self._transport is not None:
            self._sim.requests += len(replies)
            self._transport.write(replies[0] if len(replies) == 1 else b"".join(replies))

    def _send_later(self, delay_s: float, frame: bytes) -> None:
        key = self._next_delayed
        self._next_delayed += 1
        loop = asyncio.get_running_loop()
        self._delayed[key] = loop.call_later(delay_s, self._send_delayed, key, frame)

    def _send_delayed(self, key: int, frame: bytes) -> None:
        self._delayed.pop(key, None)
        transport = self._transport
        if transport is not None and not transport.is_closing():
            self._sim.requests += 1
            transport.write(frame)


def _frame(tid: int, unit_id: int, pdu: bytes) -> bytes:
    return _MBAP.pack(tid, 0, len(pdu) + 1, unit_id) + pdu


def _build_unit(
    name: str,
    unit_id: int,
    points: Sequence[SimPoint],
    holes: Sequence[tuple[Table, int, int]],
    margin: int,
) -> _Unit:
    where = f"{name}: unit {unit_id}"
    ends: dict[Table, int] = {}
    slots: dict[str, _Slot] = {}
    owner: dict[tuple[Table, int, int | None], str] = {}
    for point in points:
        spec = point.spec
        if spec.id in slots:
            raise ValueError(f"{where}: point id {spec.id!r} used twice")
        if spec.address < 0 or spec.end > 65536 or spec.width < 1:
            raise ValueError(f"{where}: point {spec.id!r} covers addresses outside 0–65535")
        # a bool in a register owns one bit; anything else owns whole registers (bit None)
        bit = (spec.bit or 0) if spec.type is DataType.BOOL and not spec.table.is_bit else None
        for address in range(spec.address, spec.end):
            claims = [(spec.table, address, bit)]
            if bit is None:
                claims += [(spec.table, address, b) for b in range(16)]
            else:
                claims.append((spec.table, address, None))
            for claim in claims:
                other = owner.get(claim)
                if other is not None:
                    raise ValueError(f"{where}: point {spec.id!r} overlaps point {other!r}")
            owner[(spec.table, address, bit)] = spec.id
        for table, start, end in holes:
            if table is spec.table and spec.address < end and start < spec.end:
                raise ValueError(f"{where}: point {spec.id!r} lies in hole {table} {start}–{end}")
        ends[spec.table] = max(ends.get(spec.table, 0), spec.end)
        slots[spec.id] = _Slot(spec, point.generator)
    for table, start, end in holes:
        if not 0 <= start < end <= 65536:
            raise ValueError(f"{where}: hole {table} {start}–{end} is not a valid range")

    def size(table: Table) -> int:
        return min(65536, ends[table] + margin) if table in ends else 0

    unit = _Unit(
        unit_id=unit_id,
        registers={t: bytearray(2 * size(t)) for t in (Table.HOLDING, Table.INPUT)},
        bits={t: bytearray(size(t)) for t in (Table.COIL, Table.DISCRETE)},
        holes={t: [(s, e) for tt, s, e in holes if tt is t] for t in {h[0] for h in holes}},
        slots=slots,
    )
    for slot in slots.values():
        try:
            unit.store(slot.spec, slot.generator.value(0.0))
        except (ValueError, TypeError, struct.error, UnicodeEncodeError) as exc:
            raise ValueError(
                f"{where}: point {slot.spec.id!r}: cannot show its value: {exc}"
            ) from exc
    unit.live = [s for s in slots.values() if not isinstance(s.generator, Constant)]
    return unit


class ModbusTcpDeviceLike(ModbusDeviceLike, Protocol):
    """A ``modbus_tcp`` device config as :func:`serve_modbus_tcp` reads (and re-points) it."""

    host: str
    port: int


@asynccontextmanager
async def serve_modbus_tcp(
    devices: Sequence[ModbusTcpDeviceLike], *, free_ports: bool = False
) -> AsyncIterator[list[Served]]:
    """Serve ``devices`` on 127.0.0.1: devices sharing a ``host:port`` share one server
    (one unit each), as behind a Modbus TCP gateway. Points follow their ``sim:``;
    configured holes answer exception 02. With ``free_ports`` each server binds a free
    port and its devices' ``host``/``port`` are pointed at it."""
    groups: dict[tuple[str, int], list[ModbusTcpDeviceLike]] = {}
    for dev in devices:
        groups.setdefault((dev.host, dev.port), []).append(dev)
    served: list[Served] = []
    async with AsyncExitStack() as stack:
        for (_host, port), devs in groups.items():
            faults = {d.id: device_sim(d, TCP_FAULTS) for d in devs}
            units = {
                d.unit: [SimPoint(s, g) for s, g in modbus_generators(d, faults[d.id])]
                for d in devs
            }
            holes = {d.unit: [(h.table, h.start, h.end + 1) for h in d.holes] for d in devs}
            sim = ModbusTcpSimulator(
                units,
                port=0 if free_ports else port,
                holes=holes,
                name="+".join(d.id for d in devs),
            )
            drops: list[tuple[int, float]] = []
            for d in devs:
                unit = sim.faults[d.unit]
                asked = faults[d.id]
                unit.silent = asked.has("silent") is not None
                unit.garbage = asked.has("garbage") is not None
                slow, exception = asked.has("slow"), asked.has("exception")
                drop = asked.has("drop")
                unit.delay_s = slow.delay if slow is not None else 0.0
                unit.exception = None if exception is None else (exception.code or 0x04)
                if drop is not None:
                    drops.append((d.unit, drop.every))
            await stack.enter_async_context(sim)
            if drops:
                await stack.enter_async_context(_dropping(sim, drops))
            if free_ports:
                for d in devs:
                    d.host, d.port = "127.0.0.1", sim.port
            served.append(Served(f"127.0.0.1:{sim.port}", tuple(d.id for d in devs), sim))
        yield served


TCP_FAULTS = ("silent", "slow", "garbage", "exception", "drop")
"""What :func:`serve_modbus_tcp` does for a device (besides value faults): per unit."""


@asynccontextmanager
async def _dropping(
    sim: ModbusTcpSimulator, drops: Sequence[tuple[int, float]]
) -> AsyncIterator[None]:
    """While the block runs, arm each unit's ``drop_connection`` every so many seconds."""

    async def arm(unit: int, every: float) -> None:
        while True:
            sim.faults[unit].drop_connection = True
            await asyncio.sleep(every)

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(arm(u, e), name=f"modbus-sim-drop-{u}") for u, e in drops]
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
