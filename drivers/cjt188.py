"""CJ/T 188-2018 water, heat and gas meters on a serial bus (RS-485 or M-Bus).

Frame: ``[FE × n] 68 T A0..A6 C L DATA CS 16``.

* ``T`` is the meter type (:data:`METER_TYPES`): 10H–19H water, 20H–29H heat,
  30H–39H gas, 40H–49H other meters (40H electricity).
* ``A0..A6`` is the 7-byte address, low byte first, written on the nameplate high
  byte first (``"00000012345678"`` → ``78 56 34 12 00 00 00``). All ``AA`` is the
  wildcard a master uses when exactly one meter is on the line.
* ``C`` is the control byte: D7 direction (1 = reply), D6 abnormal reply, D5–D0 the
  function (01H read data). A normal read reply has 81H, an abnormal one C1H.
* ``L`` is the number of DATA bytes. DATA of a read request is the data identifier
  DI (2 bytes) and a sequence byte SER; a reply repeats both and appends the data.
  There is no 0x33 offset (unlike DL/T 645).
* ``CS`` is the byte sum from 68H through the last DATA byte, mod 256.

The current-data identifier 901FH reads everything a meter measures in one frame
(:data:`WATER_LAYOUT`, :data:`HEAT_LAYOUT`): BCD numbers low byte first, each
cumulative quantity followed by a unit code (:data:`UNITS`), the meter's clock and
two status bytes ST (valve, battery, manufacturer bits). The standard names DI0 DI1
but meters disagree about which is sent first, so the order is a per-meter setting
(``di_order``).

Pure codec functions first (test vectors from the standard's frame layouts), then
:class:`Cjt188Driver`, one transaction per poll through a shared
:class:`drivers.serial_line.SerialBus`. A reply is accepted only when its meter type,
address, direction, DI, SER, length and checksum all match the request: a value is
never attributed to the wrong meter or the wrong poll. Noise before a checksummed
frame is skipped (RS-485 transceivers glitch at turn-around), as for DL/T 645.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Literal

from drivers.base import (
    Clock,
    DeviceRejected,
    DeviceTimeout,
    DeviceUnreachable,
    Quality,
    Reason,
    Sample,
    Unconnected,
    scaled,
    utc_now_us,
)
from drivers.bcd import bcd_decode, bcd_encode
from drivers.serial_line import FrameError, FrameFinder, FrameRejected, SerialBus

__all__ = [
    "CURRENT_DATA",
    "HEAT_LAYOUT",
    "METER_TYPES",
    "STATUS_FIELDS",
    "UNITS",
    "WATER_LAYOUT",
    "WILDCARD",
    "Cjt188Driver",
    "Cjt188Point",
    "DiOrder",
    "Family",
    "Field",
    "Frame",
    "PointError",
    "StatusBit",
    "Unit",
    "check_status_bits",
    "checksum",
    "decode_address",
    "decode_current_data",
    "decode_status",
    "di_bytes",
    "encode_address",
    "encode_current_data",
    "family_of",
    "find_frame",
    "layout_of",
    "meter_finder",
    "parse_frame",
    "plan_lines",
    "point_targets",
    "read_frame",
    "reply_frame",
]

READ = 0x01
READ_REPLY = 0x81
READ_ERROR = 0xC1
CURRENT_DATA = 0x901F
"""DI of the current metering data (计量数据)."""
WILDCARD = "A" * 14
PREAMBLE = b"\xfe\xfe"
HEADER = 11
"""Bytes from 68H through L."""
MAX_DATA = 200

DiOrder = Literal["low_first", "high_first"]


class Family(StrEnum):
    """What a meter measures; decides the layout of its current data."""

    WATER = "water"
    HEAT = "heat"
    GAS = "gas"
    OTHER = "other"


METER_TYPES: dict[int, str] = {
    0x10: "cold water meter",
    0x11: "domestic hot water meter",
    0x12: "drinking water meter",
    0x13: "reclaimed water meter",
    0x20: "heat meter (heat)",
    0x21: "heat meter (cooling)",
    0x30: "gas meter",
    0x40: "electricity meter",
}
"""The meter types the standard names; the rest of each family's range is reserved."""


def family_of(meter_type: int) -> Family:
    """The family of a meter type code; raises :class:`ValueError` outside 10H–49H."""
    families = {0x1: Family.WATER, 0x2: Family.HEAT, 0x3: Family.GAS, 0x4: Family.OTHER}
    family = families.get(meter_type >> 4) if 0 <= meter_type <= 0xFF else None
    if family is None or meter_type & 0x0F > 9:
        raise ValueError(f"meter type 0x{meter_type:02X}: not a CJ/T 188 meter type (10H–49H)")
    return family


# ---------------------------------------------------------------------------- units


@dataclass(frozen=True, slots=True)
class Unit:
    """One unit code: its symbol, what it measures and its size in that dimension's base."""

    symbol: str
    dimension: Literal["energy", "power", "volume", "flow"]
    factor: Decimal
    """Size in the base unit of the dimension (Wh, W, m³, m³/h)."""


_WH_PER_J = Decimal(1) / Decimal(3600)
UNITS: dict[int, Unit] = {
    0x02: Unit("Wh", "energy", Decimal(1)),
    0x05: Unit("kWh", "energy", Decimal(10) ** 3),
    0x08: Unit("MWh", "energy", Decimal(10) ** 6),
    0x0A: Unit("MWh×100", "energy", Decimal(10) ** 8),
    0x01: Unit("J", "energy", _WH_PER_J),
    0x0B: Unit("kJ", "energy", Decimal(10) ** 3 * _WH_PER_J),
    0x0E: Unit("MJ", "energy", Decimal(10) ** 6 * _WH_PER_J),
    0x11: Unit("GJ", "energy", Decimal(10) ** 9 * _WH_PER_J),
    0x13: Unit("GJ×100", "energy", Decimal(10) ** 11 * _WH_PER_J),
    0x14: Unit("W", "power", Decimal(1)),
    0x17: Unit("kW", "power", Decimal(10) ** 3),
    0x1A: Unit("MW", "power", Decimal(10) ** 6),
    0x29: Unit("L", "volume", Decimal(10) ** -3),
    0x2C: Unit("m3", "volume", Decimal(1)),
    0x32: Unit("L/h", "flow", Decimal(10) ** -3),
    0x35: Unit("m3/h", "flow", Decimal(1)),
}
"""The unit codes (单位代号) of CJ/T 188; ``MWh×100`` and ``GJ×100`` count hundreds."""

UNIT_CODES: dict[str, int] = {u.symbol: code for code, u in UNITS.items() if "×" not in u.symbol}
"""Symbol → code for the units a point may ask for (``m³`` is also accepted as ``m3``)."""


def unit_code(symbol: str) -> int:
    """The code of a unit symbol (``"kWh"``, ``"m3"`` or ``"m³"``); :class:`ValueError` if none."""
    code = UNIT_CODES.get(symbol.replace("³", "3"))
    if code is None:
        raise ValueError(f"unit {symbol!r}: not a CJ/T 188 unit (one of {', '.join(UNIT_CODES)})")
    return code


def convert(value: Decimal, from_code: int, to_code: int) -> Decimal:
    """``value`` in the unit ``from_code`` expressed in ``to_code`` (same dimension only)."""
    src, dst = UNITS.get(from_code), UNITS[to_code]
    if src is None:
        raise ValueError(f"unknown unit code 0x{from_code:02X}")
    if src.dimension != dst.dimension:
        raise ValueError(f"meter reports {src.symbol} ({src.dimension}), point wants {dst.symbol}")
    if from_code == to_code:
        return value
    return value * src.factor / dst.factor


# ---------------------------------------------------------------------------- layout


@dataclass(frozen=True, slots=True)
class Field:
    """One item of the current data: where it sits after DI and SER, and how it reads.

    ``kind`` ``quantity`` is ``length`` BCD bytes with ``decimals`` followed by a unit
    code byte; ``number`` is BCD in the fixed ``unit``; ``time`` is the meter clock
    ``ss mm hh DD MM YY YY``; ``status`` is the two ST bytes.
    """

    name: str
    offset: int
    length: int
    kind: Literal["quantity", "number", "time", "status"]
    decimals: int = 0
    unit: str = ""
    """The default unit of a quantity, the fixed unit of a number."""

    @property
    def size(self) -> int:
        return self.length + (1 if self.kind == "quantity" else 0)


def _layout(*fields: tuple[str, int, str, int, str]) -> dict[str, Field]:
    out: dict[str, Field] = {}
    offset = 0
    for name, length, kind, decimals, unit in fields:
        f = Field(name, offset, length, kind, decimals, unit)  # type: ignore[arg-type]
        out[name] = f
        offset += f.size
    return out


WATER_LAYOUT = _layout(
    ("cumulative_flow", 4, "quantity", 2, "m3"),  # 当前累积流量 XXXXXX.XX
    ("settlement_flow", 4, "quantity", 2, "m3"),  # 结算日累积流量
    ("meter_time", 7, "time", 0, ""),  # 实时时间
    ("status", 2, "status", 0, ""),  # 状态 ST
)
"""Current data (901FH) of water, gas and other meters: 19 bytes after DI and SER."""

HEAT_LAYOUT = _layout(
    ("settlement_heat", 4, "quantity", 2, "kWh"),  # 结算日热量 XXXXXX.XX
    ("current_heat", 4, "quantity", 2, "kWh"),  # 当前热量
    ("heat_power", 4, "quantity", 2, "kW"),  # 热功率
    ("flow_rate", 4, "quantity", 4, "m3/h"),  # 流量 XXXX.XXXX
    ("cumulative_flow", 4, "quantity", 2, "m3"),  # 累积流量
    ("supply_temperature", 3, "number", 2, "°C"),  # 供水温度 XXXX.XX
    ("return_temperature", 3, "number", 2, "°C"),  # 回水温度
    ("working_hours", 3, "number", 0, "h"),  # 累计工作时间 XXXXXX
    ("meter_time", 7, "time", 0, ""),
    ("status", 2, "status", 0, ""),
)
"""Current data (901FH) of heat meters: 43 bytes after DI and SER."""

_OTHER_LAYOUT = {
    name: (Field(f.name, f.offset, f.length, f.kind, f.decimals, "kWh") if f.unit else f)
    for name, f in WATER_LAYOUT.items()
}


def layout_of(family: Family) -> dict[str, Field]:
    """The current-data layout of a family (other meters count energy, default kWh)."""
    if family is Family.HEAT:
        return HEAT_LAYOUT
    return _OTHER_LAYOUT if family is Family.OTHER else WATER_LAYOUT


def body_length(layout: Mapping[str, Field]) -> int:
    return sum(f.size for f in layout.values())


# ---------------------------------------------------------------------------- status


@dataclass(frozen=True, slots=True)
class StatusBit:
    """A manufacturer-defined status bit (D3–D15; D0 is bit 0 of the first ST byte).

    ``fault`` marks a bit that says the measurement itself is impaired (a flow or
    temperature sensor fault): while it is set, the meter's values are ``uncertain``
    with reason ``sensor_failure``.
    """

    bit: int
    name: str
    fault: bool = False


STATUS_FIELDS = ("valve_open", "valve_closed", "valve_abnormal", "battery_low")
"""Boolean points from the standard's status bits: D0–D1 valve (00 open, 01 closed,
11 abnormal; 10 is undefined and read as abnormal), D2 battery low."""


def decode_status(word: int, extra: Sequence[StatusBit] = ()) -> dict[str, bool]:
    """The status word (ST0 | ST1 << 8) as named booleans, standard and extra bits."""
    valve = word & 0x03
    out = {
        "valve_open": valve == 0,
        "valve_closed": valve == 1,
        "valve_abnormal": valve in (2, 3),
        "battery_low": bool(word & 0x04),
    }
    for b in extra:
        out[b.name] = bool(word >> b.bit & 1)
    return out


def status_flags(status: Mapping[str, bool]) -> tuple[str, ...]:
    """The conditions worth a flag on every reading: all set bits but ``valve_open``.

    The standard's bits are flagged by name (``valve_closed``, ``valve_abnormal``,
    ``battery_low``), a manufacturer bit as ``status:NAME``, so a configured name can
    never pass for one of the flags the rest of metrogate raises.
    """
    return tuple(
        name if name in STATUS_FIELDS else f"status:{name}"
        for name, on in status.items()
        if on and name != "valve_open"
    )


# ---------------------------------------------------------------------------- frames


def encode_address(address: str) -> bytes:
    """``"00000012345678"`` → ``78 56 34 12 00 00 00``; ``"AAAAAAAAAAAAAA"`` is the wildcard.

    Fourteen hexadecimal digits: the standard lets the top bytes carry a
    manufacturer code, so they need not be decimal.
    """
    if len(address) != 14:
        raise ValueError(f"meter address {address!r}: 14 digits")
    try:
        return bytes.fromhex(address)[::-1]
    except ValueError:
        raise ValueError(f"meter address {address!r}: hexadecimal digits only") from None


def decode_address(raw: bytes) -> str:
    return raw[::-1].hex().upper()


def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def di_bytes(di: int, order: DiOrder = "low_first") -> bytes:
    """The two DI bytes as sent: ``901FH`` → ``1F 90`` low first, ``90 1F`` high first."""
    return di.to_bytes(2, "little" if order == "low_first" else "big")


def frame(meter_type: int, address: bytes, control: int, data: bytes) -> bytes:
    """One frame without preamble."""
    body = bytes((0x68, meter_type)) + address + bytes((control, len(data))) + data
    return body + bytes((checksum(body), 0x16))


def read_frame(
    meter_type: int,
    address: str,
    ser: int,
    *,
    di: int = CURRENT_DATA,
    di_order: DiOrder = "low_first",
    preamble: bytes = PREAMBLE,
) -> bytes:
    """The read-data request (control 01H) for ``di`` with sequence byte ``ser``."""
    data = di_bytes(di, di_order) + bytes((ser & 0xFF,))
    return preamble + frame(meter_type, encode_address(address), READ, data)


def reply_frame(
    meter_type: int,
    address: str,
    ser: int,
    body: bytes,
    *,
    di: int = CURRENT_DATA,
    di_order: DiOrder = "low_first",
) -> bytes:
    """A normal read reply (used by simulators and tests)."""
    data = di_bytes(di, di_order) + bytes((ser & 0xFF,)) + body
    return frame(meter_type, encode_address(address), READ_REPLY, data)


def error_frame(meter_type: int, address: str, ser: int, status: int) -> bytes:
    """An abnormal reply (C1H): SER and the status word."""
    data = bytes((ser & 0xFF,)) + status.to_bytes(2, "little")
    return frame(meter_type, encode_address(address), READ_ERROR, data)


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded frame: meter type, address (14 digits), control byte and DATA."""

    meter_type: int
    address: str
    control: int
    data: bytes


def find_frame(buf: bytes) -> tuple[int, int] | None:
    """``(start, end)`` of the first complete frame with a valid CS, skipping noise and FE."""
    for i in range(len(buf)):
        if buf[i] != 0x68 or len(buf) - i < HEADER + 2:
            continue
        length = buf[i + 10]
        if length > MAX_DATA:
            continue
        end = i + HEADER + length + 2
        if len(buf) < end:
            continue
        if buf[end - 1] == 0x16 and checksum(buf[i : end - 2]) == buf[end - 2]:
            return i, end
    return None


def parse_frame(raw: bytes) -> Frame:
    """Decode one frame (as delimited by :func:`find_frame`; leading FE allowed).

    Raises :class:`FrameRejected` on anything that is not exactly one valid frame.
    """
    raw = raw.lstrip(b"\xfe")
    if len(raw) < HEADER + 2 or raw[0] != 0x68 or raw[-1] != 0x16:
        raise FrameRejected("not a CJ/T 188 frame")
    length = raw[10]
    if len(raw) != HEADER + length + 2:
        raise FrameRejected(f"length byte {length} does not match frame of {len(raw)} bytes")
    if checksum(raw[:-2]) != raw[-2]:
        raise FrameRejected("checksum mismatch")
    return Frame(raw[1], decode_address(raw[2:9]), raw[9], raw[HEADER : HEADER + length])


def meter_finder(address: str, meter_type: int) -> FrameFinder:
    """Finds the reply from ``address`` (any address for the wildcard) of ``meter_type``.

    A valid frame from another meter or of another meter type is rejected; our own
    request echoed by a half-duplex adapter is skipped.
    """
    wildcard = address.upper() == WILDCARD

    def find(buf: bytes) -> tuple[int, int] | None:
        found = find_frame(buf)
        if found is None:
            return None
        reply = parse_frame(buf[found[0] : found[1]])
        if reply.control & 0x80 == 0:
            rest = find(buf[found[1] :])
            return None if rest is None else (found[1] + rest[0], found[1] + rest[1])
        if not wildcard and reply.address != address.upper():
            raise FrameRejected(f"reply from meter {reply.address}, expected {address}")
        if reply.meter_type != meter_type:
            raise FrameRejected(
                f"reply from a meter of type 0x{reply.meter_type:02X}, expected 0x{meter_type:02X}"
            )
        return found

    return find


# ---------------------------------------------------------------------------- current data


@dataclass(frozen=True, slots=True)
class FieldValue:
    """One field of a current-data reply: its value as the meter gave it, or why not.

    ``unit`` is the meter's unit code for a quantity (``None`` otherwise).
    """

    value: Decimal | str | int | None
    unit: int | None = None
    error: str | None = None


def _time(raw: bytes) -> str:
    ss, mm, hh, day, month, ylo, yhi = (bcd_decode(bytes((b,))) for b in raw)
    return dt.datetime(yhi * 100 + ylo, month, day, hh, mm, ss).isoformat()


def decode_current_data(family: Family, body: bytes) -> dict[str, FieldValue]:
    """The fields of a 901FH reply body (DATA after DI and SER) by name.

    Raises :class:`ValueError` when the body length is wrong for the family; a field
    that is not valid BCD, carries an unknown unit code or an impossible date comes
    back with ``error`` set and the others are unaffected.
    """
    layout = layout_of(family)
    want = body_length(layout)
    if len(body) != want:
        raise ValueError(f"{len(body)} data bytes, a {family} meter sends {want}")
    out: dict[str, FieldValue] = {}
    for f in layout.values():
        raw = body[f.offset : f.offset + f.length]
        try:
            if f.kind == "status":
                out[f.name] = FieldValue(int.from_bytes(raw, "little"))
            elif f.kind == "time":
                out[f.name] = FieldValue(_time(raw))
            else:
                number = Decimal(bcd_decode(raw)).scaleb(-f.decimals)
                code = body[f.offset + f.length] if f.kind == "quantity" else None
                if code is not None and code not in UNITS:
                    out[f.name] = FieldValue(None, code, f"unknown unit code 0x{code:02X}")
                    continue
                out[f.name] = FieldValue(number, code)
        except ValueError as exc:
            out[f.name] = FieldValue(None, None, str(exc))
    return out


def encode_current_data(
    family: Family,
    values: Mapping[str, float | Decimal],
    *,
    units: Mapping[str, int] | None = None,
    meter_time: dt.datetime | None = None,
    status: int = 0,
) -> bytes:
    """The body of a 901FH reply (simulators and tests): values in the fields' units.

    Quantities use ``units[name]`` (default: the field's default unit); numbers too
    large for their digits wrap as a meter's register does; negatives count as 0.
    """
    layout = layout_of(family)
    when = meter_time or dt.datetime(2000, 1, 1)
    out = bytearray()
    for f in layout.values():
        if f.kind == "status":
            out += (status & 0xFFFF).to_bytes(2, "little")
        elif f.kind == "time":
            year = when.year
            parts = (when.second, when.minute, when.hour, when.day, when.month)
            out += b"".join(bcd_encode(p, 1) for p in (*parts, year % 100, year // 100))
        else:
            scaled = int((Decimal(str(values.get(f.name, 0))).scaleb(f.decimals)).to_integral())
            out += bcd_encode(max(0, scaled) % 10 ** (2 * f.length), f.length)
            if f.kind == "quantity":
                out.append((units or {}).get(f.name, unit_code(f.unit)))
    return bytes(out)


# ---------------------------------------------------------------------------- driver


@dataclass(frozen=True, slots=True)
class Cjt188Point:
    """One point: a field of the current data or a status bit, and its unit.

    ``field`` is a name of the family's layout (``cumulative_flow``, ``current_heat``,
    ``supply_temperature``, ``meter_time``, ...), ``status`` (the raw word), one of
    :data:`STATUS_FIELDS` or the name of a configured :class:`StatusBit`. ``unit``
    (quantities only) is what the value is converted to, whatever unit code the meter
    sends; by default the field's unit (m³, kWh, kW, m³/h).
    """

    id: str
    field: str
    unit: str | None = None
    scale: float = 1.0
    offset: float = 0.0


class Cjt188Driver(Unconnected):
    """One CJ/T 188 meter (by address and type) on a shared serial bus.

    Each poll is one 901FH transaction. Timeouts and invalid frames raise
    (:class:`drivers.base.DeviceTimeout`, :class:`FrameError`); an abnormal reply
    raises :class:`drivers.base.DeviceRejected` with reason ``device_failure``. A
    field the meter sent badly (not BCD, unknown unit code, unit of another
    dimension) is a bad sample with reason ``invalid_value`` and the rest are read.
    Every sample carries the meter's status conditions as flags.
    """

    def __init__(
        self,
        device_id: str,
        bus: SerialBus,
        address: str,
        meter_type: int,
        points: Sequence[Cjt188Point],
        *,
        timeout: float,
        di_order: DiOrder = "low_first",
        preamble: int = 2,
        status_bits: Sequence[StatusBit] = (),
        clock: Clock = utc_now_us,
    ) -> None:
        encode_address(address)  # validates early
        self.family = family_of(meter_type)
        self.status_bits = check_status_bits(status_bits)
        self._targets = point_targets(self.family, points, self.status_bits)
        self.device_id = device_id
        self.address = address.upper()
        self.meter_type = meter_type
        self.endpoint = f"cjt188:{bus.endpoint}/{self.address}"
        self.points = tuple(points)
        self.di_order: DiOrder = di_order
        self._bus = bus
        self._timeout = timeout
        self._clock = clock
        self._preamble = b"\xfe" * preamble
        self._find = meter_finder(self.address, meter_type)
        self._ser = 0
        self._seen_address: str | None = None

    def _error(self, message: str) -> FrameError:
        return FrameError(self.device_id, self.endpoint, message)

    async def _transact(self) -> tuple[bytes, int]:
        """One read of the current data; returns the body after DI and SER, and its time."""
        ser = self._ser
        self._ser = (ser + 1) & 0xFF
        request = read_frame(
            self.meter_type, self.address, ser, di_order=self.di_order, preamble=self._preamble
        )
        try:
            raw = await self._bus.transact(
                self.device_id, request, self._find, timeout=self._timeout
            )
        except (DeviceTimeout, DeviceUnreachable, FrameError) as exc:
            # the bus speaks of its port; the meter's own endpoint says which meter
            raise type(exc)(self.device_id, self.endpoint, exc.message) from exc
        ts = self._clock()
        try:
            reply = parse_frame(raw)
        except FrameRejected as exc:
            raise self._error(str(exc)) from exc
        if reply.control == READ_ERROR:
            word = int.from_bytes(reply.data[1:3], "little") if len(reply.data) >= 3 else 0
            raise DeviceRejected(
                self.device_id,
                self.endpoint,
                f"abnormal reply to DI {CURRENT_DATA:04X} (status 0x{word:04X})",
                word,
                Reason.DEVICE_FAILURE,
            )
        if reply.control != READ_REPLY:
            raise self._error(f"unexpected control 0x{reply.control:02X}")
        data = reply.data
        expected = di_bytes(CURRENT_DATA, self.di_order)
        if data[:2] != expected:
            hint = " (check di_order)" if data[:2] == expected[::-1] else ""
            raise self._error(
                f"reply for DI {data[:2].hex().upper()}, asked {expected.hex().upper()}{hint}"
            )
        if len(data) < 3 or data[2] != ser:
            got = f"{data[2]:02X}" if len(data) >= 3 else "none"
            raise self._error(f"reply carries SER {got}, asked {ser:02X} (a late or stray reply)")
        self._seen_address = reply.address
        return data[3:], ts

    async def read(self) -> list[Sample]:
        """One poll (see the class docstring for what raises and what is a bad sample)."""
        body, ts = await self._transact()
        try:
            fields = decode_current_data(self.family, body)
        except ValueError as exc:
            raise self._error(str(exc)) from exc
        word = fields["status"].value
        status = decode_status(word if isinstance(word, int) else 0, self.status_bits)
        flags = status_flags(status)
        impaired = any(status[b.name] for b in self.status_bits if b.fault)
        return [self._sample(p, fields, status, flags, impaired, ts) for p in self.points]

    def _sample(
        self,
        p: Cjt188Point,
        fields: Mapping[str, FieldValue],
        status: Mapping[str, bool],
        flags: tuple[str, ...],
        impaired: bool,
        ts: int,
    ) -> Sample:
        if p.field in status:
            on = status[p.field]
            return Sample(p.id, on, on, Quality.GOOD, None, ts, flags)
        r = fields[p.field]
        if r.value is None or r.error is not None:
            return Sample(p.id, None, None, Quality.BAD, Reason.INVALID_VALUE, ts, flags)
        if isinstance(r.value, str | int):  # meter time, status word
            return Sample(p.id, r.value, r.value, Quality.GOOD, None, ts, flags)
        raw: float = float(r.value)
        number = r.value
        target = self._targets[p.id]
        if target is not None and r.unit is not None:
            try:
                number = convert(r.value, r.unit, target)
            except ValueError:
                return Sample(p.id, None, raw, Quality.BAD, Reason.INVALID_VALUE, ts, flags)
        value = scaled(float(number), p.scale, p.offset)
        if value is None:
            return Sample(p.id, None, raw, Quality.BAD, Reason.INVALID_VALUE, ts, flags)
        if impaired:
            return Sample(p.id, value, raw, Quality.UNCERTAIN, Reason.SENSOR_FAILURE, ts, flags)
        return Sample(p.id, value, raw, Quality.GOOD, None, ts, flags)

    def describe_plan(self) -> list[str]:
        return plan_lines(self.address, self.meter_type, self.points)

    def identity(self) -> dict[str, str]:
        """The meter's address (the one it answered with, for the wildcard) and type."""
        return {
            "address": self._seen_address or self.address,
            "meter_type": f"{self.meter_type:02X}",
        }


class PointError(ValueError):
    """A point cannot be read from the meter as configured: ``index`` is its position in
    the points given, ``key`` the setting at fault (``field`` or ``unit``)."""

    def __init__(self, index: int, key: str, message: str) -> None:
        super().__init__(message)
        self.index = index
        self.key = key


def point_targets(
    family: Family, points: Sequence[Cjt188Point], status_bits: Sequence[StatusBit] = ()
) -> dict[str, int | None]:
    """The unit code each point's value is converted to (None: not a quantity).

    Raises :class:`PointError` for a field the family's current data does not hold (nor
    a status bit), a unit of another dimension, or a unit on a field without one.
    """
    layout = layout_of(family)
    known = {*layout, *STATUS_FIELDS, *(b.name for b in status_bits)}
    targets: dict[str, int | None] = {}
    for i, p in enumerate(points):
        if p.field not in known:
            raise PointError(
                i,
                "field",
                f"point {p.id!r}: field {p.field!r} is not read from a {family} meter "
                f"(one of {', '.join(sorted(known))})",
            )
        f = layout.get(p.field)
        target = None
        if f is not None and f.kind == "quantity":
            try:
                target = unit_code(p.unit or f.unit)
            except ValueError as exc:
                raise PointError(i, "unit", f"point {p.id!r}: {exc}") from None
            dimension = UNITS[unit_code(f.unit)].dimension
            if UNITS[target].dimension != dimension:
                raise PointError(
                    i, "unit", f"point {p.id!r}: {p.unit} is not a unit of {dimension}"
                )
        elif p.unit is not None and (f is None or p.unit != f.unit):
            raise PointError(i, "unit", f"point {p.id!r}: field {p.field!r} has no unit to convert")
        targets[p.id] = target
    return targets


def plan_lines(address: str, meter_type: int, points: Sequence[Cjt188Point]) -> list[str]:
    """What one poll of a meter sends, as ``metrogate plan`` prints it (one transaction)."""
    family = family_of(meter_type)
    names = ", ".join(p.id for p in points)
    kind = METER_TYPES.get(meter_type, f"{family} meter")
    return [
        f"meter {address.upper()} ({kind}, type {meter_type:02X}): DI {CURRENT_DATA:04X} "
        f"({body_length(layout_of(family))} data bytes) → {names}"
    ]


def check_status_bits(bits: Sequence[StatusBit]) -> tuple[StatusBit, ...]:
    """The manufacturer bits, checked: D3–D15, each bit and name once, no standard name."""
    names: set[str] = set()
    seen: set[int] = set()
    for b in bits:
        if not 3 <= b.bit <= 15:
            raise ValueError(
                f"status bit {b.name!r}: bit {b.bit} (D3–D15; D0–D2 are the standard's)"
            )
        if b.name in names or b.name in STATUS_FIELDS or b.bit in seen:
            raise ValueError(f"status bit {b.name!r} (bit {b.bit}) given twice")
        names.add(b.name)
        seen.add(b.bit)
    return tuple(bits)
