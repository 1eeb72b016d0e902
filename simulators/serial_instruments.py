"""Simulated serial instruments: a multi-slave Modbus RTU/ASCII bus, an MT-SICS
balance, a Toledo continuous-output scale, DL/T 645 meters and a generic ASCII
instrument. Each is a :class:`simulators.pty.Responder`; serve it with
:class:`simulators.pty.SimLine` (pty) or :class:`simulators.pty.SimTcp`.

Register maps come from the same :class:`drivers.modbus_codec.PointSpec` objects
the gateway reads with. Faults are switched on per slave/meter at any time with
``faults[unit] = {Fault.SILENT}`` (the serving thread reads the current set):

* ``SILENT`` — never answers; ``LATE`` — answers after ``late_by`` seconds;
* ``BAD_CRC`` — checksum corrupted; ``TRUNCATED`` — only the first half is sent;
* ``NOISE`` — garbage bytes before the reply; ``GARBAGE`` — garbage instead of the
  reply; ``WRONG_SLAVE`` — the reply carries
  another address; ``UNSTABLE`` / ``OVERLOAD`` / ``UNDERLOAD`` / ``BUSY`` — balance
  and scale states; ``NO_DATA`` — the meter refuses every DI.

The line factories at the end (:func:`modbus_rtu_line`, :func:`modbus_ascii_line`,
:func:`mtsics_line`, :func:`toledo_line`, :func:`dlt645_line`) are the simulator
factories of the serial driver kinds (:mod:`simulators.factory`): the devices of one
bus of a gateway config → the responder for that bus.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Literal, Protocol

from drivers import dlt645
from drivers.base import Value
from drivers.modbus_codec import PointSpec, Table, encode, raw_from_engineering
from drivers.modbus_serial import FUNCTION_CODES, ascii_frame, crc16, lrc, rtu_frame
from drivers.toledo import encode_frame
from simulators.factory import (
    DeviceSim,
    LineSim,
    ModbusDeviceLike,
    SimulatedDevice,
    SimulatedPoint,
    device_sim,
    modbus_generators,
    point_sim,
)
from simulators.pty import Emit
from simulators.values import Generator, Sine

__all__ = [
    "AsciiInstrumentSim",
    "Dlt645Sim",
    "Fault",
    "MtSicsSim",
    "RtuBusSim",
    "RtuSlave",
    "ToledoSim",
    "dlt645_line",
    "modbus_ascii_line",
    "modbus_rtu_line",
    "mtsics_line",
    "toledo_line",
]

NOISE = b"\x00\xff\x13\x87\x95\xaa"
"""Line noise: bytes outside printable ASCII, as framing errors produce."""


class Fault(StrEnum):
    SILENT = "silent"
    LATE = "late"
    BAD_CRC = "bad_crc"
    TRUNCATED = "truncated"
    NOISE = "noise"
    GARBAGE = "garbage"
    WRONG_SLAVE = "wrong_slave"
    UNSTABLE = "unstable"
    OVERLOAD = "overload"
    UNDERLOAD = "underload"
    BUSY = "busy"
    NO_DATA = "no_data"


def damage(
    frame: bytes, faults: frozenset[Fault] | set[Fault], request_len: int, late: float
) -> list[Emit]:
    """Apply transport faults to a reply frame."""
    if Fault.SILENT in faults:
        return []
    if Fault.GARBAGE in faults:
        frame = (NOISE * (len(frame) // len(NOISE) + 1))[: len(frame)]
    if Fault.BAD_CRC in faults:
        frame = frame[:-2] + bytes(((frame[-2] ^ 0x5A), frame[-1]))
    if Fault.TRUNCATED in faults:
        frame = frame[: max(1, len(frame) // 2)]
    if Fault.NOISE in faults:
        frame = NOISE + frame
    delay = late if Fault.LATE in faults else 0.0
    return [Emit(frame, request_len, delay)]


# ---------------------------------------------------------------------------- Modbus


class RtuSlave:
    """One simulated Modbus slave's register map, built from point definitions."""

    def __init__(
        self, points: Sequence[PointSpec], values: Mapping[str, Value] | None = None
    ) -> None:
        self.points = {p.id: p for p in points}
        self.words: dict[Table, dict[int, int]] = {t: {} for t in Table}
        for p in points:
            self.set(p.id, (values or {}).get(p.id, 0))

    def set(self, point: str, raw: Value) -> None:
        """Store a raw value for ``point`` (what the driver decodes before scale/offset)."""
        p = self.points[point]
        if p.table.is_bit:
            self.words[p.table][p.address] = int(bool(raw))
            return
        for i, w in enumerate(encode(p, raw)):
            if p.bit is not None:
                old = self.words[p.table].get(p.address + i, 0) & ~(1 << p.bit)
                w = old | w
            self.words[p.table][p.address + i] = w

    def read(self, table: Table, address: int, count: int) -> list[int] | None:
        """The words/bits asked for, or None (exception 02) if any address is unmapped."""
        cells = self.words[table]
        if any(a not in cells for a in range(address, address + count)):
            return None
        return [cells[a] for a in range(address, address + count)]


_TABLE_OF = {fc: t for t, fc in FUNCTION_CODES.items()}


def reply_pdu(slave: RtuSlave, pdu: bytes) -> bytes:
    """The reply PDU for a read request PDU (exception 01/02/03 where due)."""
    fc = pdu[0]
    table = _TABLE_OF.get(fc)
    if table is None or len(pdu) != 5:
        return bytes((fc | 0x80, 0x01))
    address, count = int.from_bytes(pdu[1:3], "big"), int.from_bytes(pdu[3:5], "big")
    limit = 2000 if table.is_bit else 125
    if not 1 <= count <= limit:
        return bytes((fc | 0x80, 0x03))
    cells = slave.read(table, address, count)
    if cells is None:
        return bytes((fc | 0x80, 0x02))
    if table.is_bit:
        data = bytearray((count + 7) // 8)
        for i, bit in enumerate(cells):
            if bit:
                data[i // 8] |= 1 << (i % 8)
        return bytes((fc, len(data))) + bytes(data)
    payload = b"".join(w.to_bytes(2, "big") for w in cells)
    return bytes((fc, len(payload))) + payload


class RtuBusSim:
    """Several Modbus slaves on one line (RTU or ASCII framing)."""

    stream_period: float | None = None

    def __init__(
        self,
        slaves: Mapping[int, RtuSlave],
        *,
        framing: Literal["rtu", "ascii"] = "rtu",
        late_by: float = 1.0,
    ) -> None:
        self.slaves = dict(slaves)
        self.framing = framing
        self.late_by = late_by
        self.faults: dict[int, set[Fault]] = {}
        self.late: dict[int, float] = {}
        """Per unit: how late a ``LATE`` answer comes (default ``late_by``)."""
        self.exceptions: dict[int, int] = {}
        """Per unit: answer every request with this exception code."""
        self.requests: dict[int, int] = {}
        self._buf = b""

    def feed(self, data: bytes) -> list[Emit]:
        self._buf += data
        out: list[Emit] = []
        for _ in range(64):
            found = self._next_request()
            if found is None:
                break
            unit, pdu, size = found
            out += self._answer(unit, pdu, size)
        if len(self._buf) > 512:
            self._buf = self._buf[-256:]
        return out

    def _next_request(self) -> tuple[int, bytes, int] | None:
        if self.framing == "ascii":
            start = self._buf.find(b":")
            end = self._buf.find(b"\r\n", start + 1) if start >= 0 else -1
            if start < 0 or end < 0:
                return None
            line, self._buf = self._buf[start + 1 : end], self._buf[end + 2 :]
            try:
                body = bytes.fromhex(line.decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                return None
            if len(body) < 3 or lrc(body[:-1]) != body[-1]:
                return None
            return body[0], body[1:-1], end + 2 - start
        # read requests are 8 bytes: slide over noise until a CRC-valid one turns up
        for i in range(max(0, len(self._buf) - 7)):
            cand = self._buf[i : i + 8]
            if crc16(cand[:6]) == int.from_bytes(cand[6:], "little"):
                self._buf = self._buf[i + 8 :]
                return cand[0], cand[1:6], 8
        return None

    def _answer(self, unit: int, pdu: bytes, size: int) -> list[Emit]:
        slave = self.slaves.get(unit)
        if slave is None:
            return []
        self.requests[unit] = self.requests.get(unit, 0) + 1
        faults = self.faults.get(unit, set())
        address = unit
        if Fault.WRONG_SLAVE in faults:
            address = (unit % 247) + 1
        code = self.exceptions.get(unit)
        reply = reply_pdu(slave, pdu) if code is None else bytes((pdu[0] | 0x80, code))
        frame = rtu_frame(address, reply) if self.framing == "rtu" else ascii_frame(address, reply)
        if self.framing == "ascii" and Fault.BAD_CRC in faults:
            frame = frame[:-4] + (b"00" if frame[-4:-2] != b"00" else b"11") + b"\r\n"
            faults = faults - {Fault.BAD_CRC}
        return damage(frame, faults, size, self.late.get(unit, self.late_by))

    def stream(self) -> bytes:
        return b""


# ---------------------------------------------------------------------------- MT-SICS


class MtSicsSim:
    """An MT-SICS level-0 balance. ``weight`` and ``unit`` may be changed at any time."""

    stream_period: float | None = None

    def __init__(
        self,
        *,
        weight: float = 100.0,
        unit: str = "g",
        decimals: int = 2,
        serial_number: str = "0123456789",
        software: str = "3.2.0.5.4",
        late_by: float = 1.0,
    ) -> None:
        self.weight, self.unit, self.decimals = weight, unit, decimals
        self.serial_number, self.software = serial_number, software
        self.late_by = late_by
        self.faults: set[Fault] = set()
        self.error: str | None = None
        """An error reply (``EL``, ``ES``, ``ET``) given to every command instead."""
        self.commands: list[str] = []
        self._buf = b""

    def _weight_line(self, status: str) -> str:
        return f"S {status} {self.weight:>10.{self.decimals}f} {self.unit}"

    def respond(self, command: str) -> str:
        if self.error is not None:
            return self.error
        match command:
            case "I4" | "@":
                return f'I4 A "{self.serial_number}"'
            case "I5":
                return f'I5 A "{self.software}"'
            case "S" | "SI":
                if Fault.OVERLOAD in self.faults:
                    return "S +"
                if Fault.UNDERLOAD in self.faults:
                    return "S -"
                if Fault.BUSY in self.faults:
                    return "S I"
                if Fault.UNSTABLE in self.faults:
                    return "S I" if command == "S" else self._weight_line("D")
                return self._weight_line("S")
            case "Z" | "ZI":
                return "Z A"
            case _:
                return "ES"

    def feed(self, data: bytes) -> list[Emit]:
        self._buf += data
        out: list[Emit] = []
        for _ in range(64):
            end = self._buf.find(b"\r\n")
            if end < 0:
                break
            raw, self._buf = self._buf[:end], self._buf[end + 2 :]
            command = raw.decode("latin-1").strip()
            self.commands.append(command)
            line = (self.respond(command) + "\r\n").encode()
            if Fault.TRUNCATED in self.faults:
                line = line[: len(line) // 2]
                out += [Emit(line, end + 2)]
                continue
            faults = self.faults - {Fault.BAD_CRC, Fault.TRUNCATED}
            out += damage(line, faults, end + 2, self.late_by)
        if len(self._buf) > 256:
            self._buf = b""
        return out

    def stream(self) -> bytes:
        return b""


# ---------------------------------------------------------------------------- Toledo


class ToledoSim:
    """A scale streaming Toledo continuous frames every ``period`` seconds."""

    def __init__(
        self,
        *,
        weight: float = 12.34,
        tare: float = 0.0,
        decimals: int = 2,
        kg: bool = True,
        period: float = 0.02,
        checksum: bool = True,
    ) -> None:
        self.stream_period: float | None = period
        self.weight, self.tare, self.decimals, self.kg = weight, tare, decimals, kg
        self.checksum = checksum
        self.faults: set[Fault] = set()
        self.sent = 0

    def feed(self, data: bytes) -> list[Emit]:
        return []

    def stream(self) -> bytes:
        if Fault.SILENT in self.faults:
            return b""
        frame = encode_frame(
            self.weight,
            self.tare,
            decimals=self.decimals,
            kg=self.kg,
            net=self.tare != 0,
            motion=Fault.UNSTABLE in self.faults,
            out_of_range=Fault.OVERLOAD in self.faults,
            checksum=self.checksum,
        )
        if Fault.BAD_CRC in self.faults and self.checksum:
            frame = frame[:-1] + bytes(((frame[-1] + 1) & 0x7F,))
        if Fault.TRUNCATED in self.faults:
            frame = frame[:9]
        if Fault.NOISE in self.faults:
            frame = NOISE + b"\x02\x02" + frame
        if Fault.GARBAGE in self.faults:
            frame = (NOISE * (len(frame) // len(NOISE) + 1))[: len(frame)]
        self.sent += 1
        return frame


# ---------------------------------------------------------------------------- DL/T 645


class Dlt645Sim:
    """Several DL/T 645-2007 meters on one line. ``values[address][di]`` = BCD integer."""

    stream_period: float | None = None

    def __init__(self, meters: Mapping[str, Mapping[int, int]], *, late_by: float = 1.0) -> None:
        self.values = {a: dict(v) for a, v in meters.items()}
        self.faults: dict[str, set[Fault]] = {}
        self.late: dict[str, float] = {}
        """Per meter: how late a ``LATE`` answer comes (default ``late_by``)."""
        self.error_codes: dict[str, int] = {}
        """Per meter: the error byte of its ``NO_DATA`` abnormal replies (default 02H)."""
        self.late_by = late_by
        self.requests: dict[str, int] = {}
        self._buf = b""

    def feed(self, data: bytes) -> list[Emit]:
        self._buf += data
        out: list[Emit] = []
        for _ in range(64):
            found = dlt645.find_frame(self._buf)
            if found is None:
                break
            start, end = found
            frame, self._buf = self._buf[start:end], self._buf[end:]
            request = dlt645.parse_frame(frame)
            if request.control == dlt645.READ_ADDRESS and request.address == dlt645.BROADCAST:
                out += self._answer_broadcast(end)
                continue
            if request.control != dlt645.READ or request.address not in self.values:
                continue
            out += self._answer(request, end)
        if len(self._buf) > 512:
            self._buf = b""
        return out

    def _answer_broadcast(self, size: int) -> list[Emit]:
        """Every meter answers a broadcast: one is heard, several collide (noise)."""
        answering = [a for a in self.values if Fault.SILENT not in self.faults.get(a, set())]
        if len(answering) > 1:
            return [Emit(NOISE * 4, size)]
        if not answering:
            return []
        return [Emit(b"\xfe\xfe\xfe\xfe" + dlt645.address_reply_frame(answering[0]), size)]

    def _answer(self, request: dlt645.Reply, size: int) -> list[Emit]:
        address = request.address
        self.requests[address] = self.requests.get(address, 0) + 1
        faults = self.faults.get(address, set())
        di = int.from_bytes(request.data[:4], "little")
        item = dlt645.DATA_ITEMS.get(di)
        reply_address = address
        if Fault.WRONG_SLAVE in faults:
            reply_address = f"{(int(address) + 1) % 10**12:012d}"
        if Fault.NO_DATA in faults or item is None or di not in self.values[address]:
            code = self.error_codes.get(address, 0x02) if Fault.NO_DATA in faults else 0x02
            frame = dlt645.error_frame(reply_address, code)
        else:
            value = self.values[address][di]
            raw = dlt645.bcd_encode(abs(value), item.length)
            if value < 0:
                raw = raw[:-1] + bytes((raw[-1] | 0x80,))
            frame = dlt645.reply_frame(reply_address, di, raw)
        frame = b"\xfe\xfe\xfe\xfe" + frame
        if Fault.BAD_CRC in faults:
            frame = frame[:-2] + bytes(((frame[-2] + 1) & 0xFF,)) + frame[-1:]
        return damage(frame, faults - {Fault.BAD_CRC}, size, self.late.get(address, self.late_by))

    def stream(self) -> bytes:
        return b""


# ---------------------------------------------------------------------------- generic ASCII


class AsciiInstrumentSim:
    """Answers each request line with a fixed line, or streams lines when ``period`` is set."""

    def __init__(
        self,
        replies: Mapping[str, str],
        *,
        terminator: bytes = b"\r\n",
        period: float | None = None,
        stream_lines: Iterable[str] = (),
    ) -> None:
        self.replies = dict(replies)
        self.terminator = terminator
        self.stream_period = period
        self._lines = list(stream_lines) or [""]
        self._i = 0
        self.faults: set[Fault] = set()
        self._buf = b""
        self._rng = random.Random(7)

    def feed(self, data: bytes) -> list[Emit]:
        self._buf += data
        out: list[Emit] = []
        for _ in range(64):
            end = self._buf.find(self.terminator)
            if end < 0:
                break
            req, self._buf = self._buf[:end], self._buf[end + len(self.terminator) :]
            reply = self.replies.get(req.decode("latin-1"))
            if reply is not None:
                line = reply.encode("latin-1") + self.terminator
                out += damage(line, self.faults - {Fault.BAD_CRC}, end, 1.0)
        return out

    def stream(self) -> bytes:
        if Fault.SILENT in self.faults:
            return b""
        line = self._lines[self._i % len(self._lines)]
        self._i += 1
        out = line.encode("latin-1") + self.terminator
        if Fault.NOISE in self.faults:
            out = bytes(self._rng.randrange(256) for _ in range(5)) + out
        return out


# -- line factories: the devices of one bus → its responder ---------------------------------

SERIAL_FAULTS: dict[str, Fault] = {
    "silent": Fault.SILENT,
    "slow": Fault.LATE,
    "garbage": Fault.GARBAGE,
    "noise": Fault.NOISE,
    "bad_checksum": Fault.BAD_CRC,
    "truncated": Fault.TRUNCATED,
    "wrong_address": Fault.WRONG_SLAVE,
    "exception": Fault.NO_DATA,
}
"""The faults on request (:mod:`simulators.faults`) as the serial simulators' own."""


def line_faults(dev: DeviceSim) -> tuple[set[Fault], float | None]:
    """A device's faults as a serial simulator applies them, and how late ``slow`` is."""
    slow = dev.has("slow")
    faults = {SERIAL_FAULTS[f.kind] for f in dev.faults if f.kind in SERIAL_FAULTS}
    return faults, None if slow is None else slow.delay


_ADDRESSED = ("silent", "slow", "garbage", "noise", "bad_checksum", "truncated", "wrong_address",
              "exception")  # fmt: skip


def _modbus_line(devices: Sequence[ModbusDeviceLike], framing: Literal["rtu", "ascii"]) -> LineSim:
    slaves: dict[int, RtuSlave] = {}
    generators = []
    sim = RtuBusSim(slaves, framing=framing)
    for d in devices:
        dev = device_sim(d, _ADDRESSED)
        points = modbus_generators(d, dev)
        slave = slaves[d.unit] = RtuSlave([spec for spec, _ in points])
        generators += [(slave, spec, gen) for spec, gen in points]
        # as the TCP simulator: addresses between points read as zero (a planner that
        # bridges gaps gets an answer), the device's holes answer exception 02
        holes = [(h.table, range(h.start, h.end + 1)) for h in d.holes]
        for table, cells in slave.words.items():
            for a in range(max(cells, default=-1) + 1):
                if not any(t is table and a in r for t, r in holes):
                    cells.setdefault(a, 0)
        faults, late = line_faults(dev)
        exception = dev.has("exception")
        if exception is not None:
            faults.discard(Fault.NO_DATA)
            sim.exceptions[d.unit] = exception.code or 0x04  # server device failure
        sim.faults[d.unit] = faults
        if late is not None:
            sim.late[d.unit] = late

    def update(t: float) -> None:
        for slave, spec, gen in generators:
            slave.set(spec.id, raw_from_engineering(spec, gen.value(t)))

    sim.slaves = slaves  # the simulator keeps a copy of what it was made with
    update(0.0)
    return sim, update


def modbus_rtu_line(devices: Sequence[ModbusDeviceLike]) -> LineSim:
    """Modbus RTU slaves, one per device (by ``unit``); points follow their ``sim:``,
    devices their faults."""
    return _modbus_line(devices, "rtu")


def modbus_ascii_line(devices: Sequence[ModbusDeviceLike]) -> LineSim:
    """Modbus ASCII slaves, one per device (by ``unit``); points follow their ``sim:``,
    devices their faults."""
    return _modbus_line(devices, "ascii")


class _ScalePointLike(SimulatedPoint, Protocol):
    @property
    def unit(self) -> str | None: ...


class _FieldPointLike(_ScalePointLike, Protocol):
    @property
    def field(self) -> str: ...


class BalanceLike(SimulatedDevice, Protocol):
    """An ``mtsics`` device config as :func:`mtsics_line` reads it."""

    @property
    def points(self) -> Sequence[_ScalePointLike]: ...


_BALANCE_FAULTS = ("silent", "slow", "garbage", "noise", "truncated", "exception")


def mtsics_line(devices: Sequence[BalanceLike]) -> LineSim:
    """A balance showing about 100 g (in the unit of the device's point, if set), or its
    point's ``sim:``; ``exception`` answers every command with ``EL`` (logical error)."""
    device = devices[0]
    point = device.points[0]
    dev = device_sim(device, _BALANCE_FAULTS)
    if point.sim is None and dev.value_fault is None:
        weight: Generator = Sine(amplitude=0.05, period=6 * math.pi, mean=100.0)
    else:
        weight = point_sim(device, point, 100.0, with_device=dev).value
    balance = MtSicsSim(weight=100.0, unit=point.unit or "g")
    faults, late = line_faults(dev)
    if Fault.NO_DATA in faults:
        faults.discard(Fault.NO_DATA)
        balance.error = "EL"
    balance.faults = faults
    if late is not None:
        balance.late_by = late

    def update(t: float) -> None:
        value = weight.value(t)
        if isinstance(value, int | float) and not isinstance(value, bool):
            balance.weight = round(float(value), balance.decimals)

    update(0.0)
    return balance, update


class ScaleLike(SimulatedDevice, Protocol):
    """A ``toledo_continuous`` device config as :func:`toledo_line` reads it."""

    @property
    def checksum(self) -> bool: ...

    @property
    def points(self) -> Sequence[_FieldPointLike]: ...


_SCALE_FAULTS = ("silent", "slow", "garbage", "noise", "bad_checksum", "truncated")


def toledo_line(devices: Sequence[ScaleLike]) -> LineSim:
    """A scale streaming 12.34 kg (or its points' ``sim:``: weight and tare); ``slow``
    sends a frame only every DELAY seconds."""
    device = devices[0]
    dev = device_sim(device, _SCALE_FAULTS)
    scale = ToledoSim(weight=12.34, checksum=device.checksum)
    faults, late = line_faults(dev)
    scale.faults = faults - {Fault.LATE}
    if late is not None:
        scale.stream_period = max(late, 0.02)
    values = {
        p.field: point_sim(device, p, 12.34 if p.field == "weight" else 0.0, with_device=dev).value
        for p in device.points
    }

    def update(t: float) -> None:
        for name, gen in values.items():
            value = gen.value(t)
            if isinstance(value, int | float) and not isinstance(value, bool):
                setattr(scale, name, float(value))

    update(0.0)
    return scale, update


class _WithDi(SimulatedPoint, Protocol):
    @property
    def di(self) -> str: ...

    @property
    def decimals(self) -> int | None: ...

    @property
    def scale(self) -> float: ...

    @property
    def offset(self) -> float: ...


class MeterLike(SimulatedDevice, Protocol):
    """A ``dlt645`` device config as :func:`dlt645_line` reads it."""

    @property
    def address(self) -> str: ...

    @property
    def points(self) -> Sequence[_WithDi]: ...


def dlt645_line(devices: Sequence[MeterLike]) -> LineSim:
    """One meter per device (by ``address``) with a growing energy count and plausible
    voltage, current, power, power factor and frequency — or its points' ``sim:``
    (engineering values); devices follow their faults (``exception,CODE``: abnormal
    replies with that error byte, default 02H: no such data)."""
    meter = Dlt645Sim({d.address: {int(p.di, 16): 0 for p in d.points} for d in devices})
    simulated: list[tuple[str, int, Generator, int, float, float]] = []
    for d in devices:
        dev = device_sim(d, _ADDRESSED)
        for p in d.points:
            if p.sim is None and dev.value_fault is None:
                continue
            di = int(p.di, 16)
            item = dlt645.DATA_ITEMS.get(di)
            decimals = p.decimals if p.decimals is not None else (item.decimals if item else 0)
            default = _meter_value(di, 0.0) / 10**decimals * p.scale + p.offset
            gen = point_sim(d, p, default, with_device=dev).value
            simulated.append((d.address, di, gen, decimals, p.scale, p.offset))
        faults, late = line_faults(dev)
        exception = dev.has("exception")
        if exception is not None and exception.code is not None:
            meter.error_codes[d.address] = exception.code
        meter.faults[d.address] = faults
        if late is not None:
            meter.late[d.address] = late
    own = {(address, di) for address, di, *_ in simulated}

    def update(t: float) -> None:
        for address, values in meter.values.items():
            for di in values:
                if (address, di) not in own:
                    values[di] = _meter_value(di, t)
        for address, di, gen, decimals, scale, offset in simulated:
            value = gen.value(t)
            if isinstance(value, int | float) and not isinstance(value, bool) and scale:
                meter.values[address][di] = round((float(value) - offset) / scale * 10**decimals)

    update(0.0)
    return meter, update


def _meter_value(di: int, t: float) -> int:
    """BCD digits of a plausible single-phase meter reading at time ``t``."""
    current = 5000 + int(500 * math.sin(t / 7))  # XXX.XXX A
    match di:
        case 0x00010000:  # forward active energy, XXXXXX.XX kWh
            return 123456 + int(t * 10)
        case 0x02010100:  # phase-A voltage, XXX.X V
            return 2300 + int(20 * math.sin(t / 5))
        case 0x02020100:
            return current
        case 0x02030000:  # active power, XX.XXXX kW
            return current * 23 // 100 * 10
        case 0x02060000:  # power factor, X.XXX
            return 985
        case 0x02800002:  # frequency, XX.XX Hz
            return 5000 + int(3 * math.sin(t))
    return 3  # reverse energy and tamper counters: small and steady
