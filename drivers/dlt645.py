"""DL/T 645-2007 electricity meters on RS-485 (one frame per data identifier).

Frame: ``[FE × 0..4] 68 A0..A5 68 C L DATA CS 16``. The address is 6 BCD bytes,
low byte first; every DATA byte is sent + 0x33 and received − 0x33; the data
identifier (DI) leads DATA, low byte first; values are BCD, low byte first; CS is
the byte sum from the first 0x68 through the last data byte, mod 256. A normal read
reply has control 0x91, an abnormal one 0xD1 and one error byte.

Pure codec functions first (test vectors from the standard's worked frames), then
:class:`Dlt645Driver`, which reads one DI per transaction through a shared
:class:`drivers.serial_line.SerialBus`. A reply is accepted only when its address,
direction bit, DI and checksum all match the request: a value is never attributed
to the wrong meter or the wrong quantity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from drivers.base import (
    Clock,
    DeviceRejected,
    DeviceTimeout,
    DriverError,
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
    "DATA_ITEMS",
    "TAMPER_DIS",
    "DataItem",
    "Dlt645Driver",
    "Dlt645Point",
    "Reply",
    "bcd_decode",
    "bcd_encode",
    "checksum",
    "decode_address",
    "encode_address",
    "error_reason",
    "find_frame",
    "parse_frame",
    "plan_lines",
    "read_frame",
    "reply_frame",
]

READ = 0x11
READ_REPLY = 0x91
READ_ERROR = 0xD1
READ_ADDRESS = 0x13
"""Read the communication address: broadcast (AAAAAAAAAAAA) to the single meter of a line."""
READ_ADDRESS_REPLY = 0x93
BROADCAST = "A" * 12
PREAMBLE = b"\xfe\xfe\xfe\xfe"
MAX_DATA = 200


@dataclass(frozen=True, slots=True)
class DataItem:
    """How the value of one DI is laid out: BCD bytes, decimals, unit, sign bit."""

    length: int
    decimals: int
    unit: str
    signed: bool = False
    name: str = ""


DATA_ITEMS: dict[int, DataItem] = {
    0x00000000: DataItem(4, 2, "kWh", True, "combined active energy total"),
    0x00010000: DataItem(4, 2, "kWh", False, "forward active energy total"),
    0x00020000: DataItem(4, 2, "kWh", False, "reverse active energy total"),
    0x02010100: DataItem(2, 1, "V", False, "phase A voltage"),
    0x02010200: DataItem(2, 1, "V", False, "phase B voltage"),
    0x02010300: DataItem(2, 1, "V", False, "phase C voltage"),
    0x02020100: DataItem(3, 3, "A", True, "phase A current"),
    0x02020200: DataItem(3, 3, "A", True, "phase B current"),
    0x02020300: DataItem(3, 3, "A", True, "phase C current"),
    0x02030000: DataItem(3, 4, "kW", True, "total active power"),
    0x02030100: DataItem(3, 4, "kW", True, "phase A active power"),
    0x02060000: DataItem(2, 3, "", True, "total power factor"),
    0x02800002: DataItem(2, 2, "Hz", False, "grid frequency"),
    0x03300D00: DataItem(3, 0, "", False, "meter cover open count"),
    0x03300E00: DataItem(3, 0, "", False, "terminal cover open count"),
    0x03300000: DataItem(3, 0, "", False, "programming count"),
    0x03300400: DataItem(3, 0, "", False, "clock set count"),
    0x03110000: DataItem(3, 0, "", False, "power down count"),
}
"""The identifiers this driver knows the layout of; others need length/decimals in config."""

TAMPER_DIS = frozenset({0x03300D00, 0x03300E00, 0x03300000, 0x03300400, 0x03110000})
"""Counters that are evidence of tampering: meter cover and terminal cover opened,
programming, clock set, power down. Their values belong in the audit trail."""


def encode_address(address: str) -> bytes:
    """``"123456789012"`` → ``12 90 78 56 34 12`` (BCD, low byte first). ``"AAAAAAAAAAAA"`` ok."""
    if len(address) != 12:
        raise ValueError(f"meter address {address!r}: 12 digits")
    if address.upper() == "A" * 12:
        return b"\xaa" * 6
    if not address.isdigit():
        raise ValueError(f"meter address {address!r}: decimal digits only")
    return bytes.fromhex(address)[::-1]


def decode_address(raw: bytes) -> str:
    return raw[::-1].hex().upper()


def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def _frame(address: bytes, control: int, data: bytes) -> bytes:
    body = b"\x68" + address + b"\x68" + bytes((control, len(data)))
    body += bytes((b + 0x33) & 0xFF for b in data)
    return body + bytes((checksum(body), 0x16))


def read_frame(address: str, di: int, preamble: bytes = PREAMBLE) -> bytes:
    """The read-data request for ``di`` (e.g. ``0x00010000``) to meter ``address``."""
    return preamble + _frame(encode_address(address), READ, di.to_bytes(4, "little"))


def read_address_frame(preamble: bytes = PREAMBLE) -> bytes:
    """The broadcast request for the communication address (control 13H, no data): what a
    master sends to learn the address of the single meter on a line. It changes nothing."""
    return preamble + _frame(encode_address(BROADCAST), READ_ADDRESS, b"")


def address_reply_frame(address: str) -> bytes:
    """A meter's answer to :func:`read_address_frame` (simulators and tests)."""
    return _frame(encode_address(address), READ_ADDRESS_REPLY, encode_address(address))


def address_finder() -> FrameFinder:
    """Finds the answer to :func:`read_address_frame`: any meter's 93H reply (our own
    broadcast, echoed by a half-duplex adapter, is skipped)."""

    def find(buf: bytes) -> tuple[int, int] | None:
        found = find_frame(buf)
        if found is None:
            return None
        reply = parse_frame(buf[found[0] : found[1]])
        if reply.control != READ_ADDRESS_REPLY:
            rest = find(buf[found[1] :])
            return None if rest is None else (found[1] + rest[0], found[1] + rest[1])
        return found

    return find


def reply_frame(address: str, di: int, value: bytes) -> bytes:
    """A normal read reply (used by simulators and tests)."""
    return _frame(encode_address(address), READ_REPLY, di.to_bytes(4, "little") + value)


def error_frame(address: str, error: int) -> bytes:
    """An abnormal reply carrying one error byte."""
    return _frame(encode_address(address), READ_ERROR, bytes((error,)))


@dataclass(frozen=True, slots=True)
class Reply:
    """A decoded frame: address (12 digits), control byte, DATA with 0x33 removed."""

    address: str
    control: int
    data: bytes


def find_frame(buf: bytes) -> tuple[int, int] | None:
    """``(start, end)`` of the first complete frame with a valid CS, skipping noise/FE."""
    for i in range(len(buf)):
        if buf[i] != 0x68:
            continue
        if len(buf) - i < 10:
            continue  # may become a frame; a later 0x68 may already be one
        if buf[i + 7] != 0x68:
            continue
        length = buf[i + 9]
        if length > MAX_DATA:
            continue
        end = i + 12 + length
        if len(buf) < end:
            continue
        if buf[end - 1] == 0x16 and checksum(buf[i : end - 2]) == buf[end - 2]:
            return i, end
    return None


def parse_frame(frame: bytes) -> Reply:
    """Decode one frame (as delimited by :func:`find_frame`; leading FE allowed)."""
    frame = frame.lstrip(b"\xfe")
    if len(frame) < 12 or frame[0] != 0x68 or frame[7] != 0x68 or frame[-1] != 0x16:
        raise FrameRejected("not a DL/T 645 frame")
    length = frame[9]
    if len(frame) != 12 + length:
        raise FrameRejected(f"length byte {length} does not match frame of {len(frame)} bytes")
    if checksum(frame[:-2]) != frame[-2]:
        raise FrameRejected("checksum mismatch")
    data = bytes((b - 0x33) & 0xFF for b in frame[10 : 10 + length])
    return Reply(decode_address(frame[1:7]), frame[8], data)


def error_reason(error: int) -> tuple[Reason, str]:
    """Reading reason and text for the error byte of an abnormal reply."""
    if error & 0x02:
        return Reason.CONFIG_ERROR, "no such data"
    if error & 0x04:
        return Reason.CONFIG_ERROR, "password wrong or unauthorised"
    return Reason.DEVICE_FAILURE, f"meter error 0x{error:02X}"


def meter_finder(address: str) -> FrameFinder:
    """Finds a valid frame from ``address``; a valid reply from another meter is rejected."""

    def find(buf: bytes) -> tuple[int, int] | None:
        found = find_frame(buf)
        if found is None:
            return None
        reply = parse_frame(buf[found[0] : found[1]])
        if reply.control & 0x80 == 0:
            # our own request echoed (half-duplex adapters echo): skip past it
            rest = find(buf[found[1] :])
            return None if rest is None else (found[1] + rest[0], found[1] + rest[1])
        if reply.address != address:
            raise FrameRejected(f"reply from meter {reply.address}, expected {address}")
        return found

    return find


@dataclass(frozen=True, slots=True)
class Dlt645Point:
    """One point: a DI and how to read its value (defaults from :data:`DATA_ITEMS`)."""

    id: str
    di: int
    item: DataItem
    scale: float = 1.0
    offset: float = 0.0

    def decode(self, value: bytes) -> float | int:
        raw = bcd_decode(value, self.item.signed)
        return raw / 10**self.item.decimals if self.item.decimals else raw


def plan_lines(address: str, points: Sequence[Dlt645Point]) -> list[str]:
    """One line per data identifier a poll reads (``metrogate plan``)."""
    return [
        f"meter {address}: DI {p.di:08X} → {p.id} ({p.item.length} BCD bytes, "
        f"{p.item.decimals} decimals{', ' + p.item.unit if p.item.unit else ''})"
        for p in points
    ]


class Dlt645Driver(Unconnected):
    """One DL/T 645-2007 meter (by address) on a shared RS-485 bus."""

    def __init__(
        self,
        device_id: str,
        bus: SerialBus,
        address: str,
        points: Sequence[Dlt645Point],
        *,
        timeout: float,
        preamble: int = 4,
        clock: Clock = utc_now_us,
    ) -> None:
        encode_address(address)  # validates early
        self.device_id = device_id
        self.address = address
        self.endpoint = f"dlt645:{bus.endpoint}/{address}"
        self.points = tuple(points)
        self._bus = bus
        self._timeout = timeout
        self._clock = clock
        self._preamble = b"\xfe" * preamble
        self._find = meter_finder(address)

    async def _read_point(self, p: Dlt645Point) -> Sample:
        frame = read_frame(self.address, p.di, self._preamble)
        raw_frame = await self._bus.transact(
            self.device_id, frame, self._find, timeout=self._timeout
        )
        ts = self._clock()
        try:
            reply = parse_frame(raw_frame)
        except FrameRejected as exc:
            raise FrameError(self.device_id, self.endpoint, str(exc)) from exc
        if reply.control == READ_ERROR:
            code = reply.data[0] if reply.data else 0
            reason, text = error_reason(code)
            raise DeviceRejected(
                self.device_id, self.endpoint, f"DI {p.di:08X}: {text}", code, reason
            )
        if reply.control != READ_REPLY or len(reply.data) < 4:
            raise FrameError(
                self.device_id, self.endpoint, f"unexpected control 0x{reply.control:02X}"
            )
        di = int.from_bytes(reply.data[:4], "little")
        if di != p.di:
            raise FrameError(
                self.device_id, self.endpoint, f"reply for DI {di:08X}, asked {p.di:08X}"
            )
        value = reply.data[4 : 4 + p.item.length]
        if len(value) != p.item.length:
            return Sample(p.id, None, None, Quality.BAD, Reason.DEVICE_FAILURE, ts)
        try:
            raw = p.decode(value)
        except ValueError:
            return Sample(p.id, None, None, Quality.BAD, Reason.INVALID_VALUE, ts)
        eng = raw if (p.scale, p.offset) == (1.0, 0.0) else scaled(raw, p.scale, p.offset)
        if eng is None:
            return Sample(p.id, None, None, Quality.BAD, Reason.INVALID_VALUE, ts)
        return Sample(p.id, eng, raw, Quality.GOOD, None, ts)

    async def read(self) -> list[Sample]:
        """One poll; per-point failures give bad samples, all failing raises the last error."""
        samples: list[Sample] = []
        failures: list[DriverError] = []
        for p in self.points:
            try:
                samples.append(await self._read_point(p))
            except (DeviceTimeout, FrameError) as exc:
                failures.append(exc)
                samples.append(Sample(p.id, None, None, Quality.BAD, exc.reason, self._clock()))
            except DeviceRejected as exc:
                samples.append(Sample(p.id, None, None, Quality.BAD, exc.reason, self._clock()))
        if self.points and len(failures) == len(self.points):
            raise failures[-1]
        return samples

    def describe_plan(self) -> list[str]:
        return plan_lines(self.address, self.points)

    def identity(self) -> dict[str, str]:
        return {"address": self.address}
