"""Modbus RTU and Modbus ASCII over a shared serial line.

The framing (CRC-16/MODBUS, LRC, reply delimiting) is written here rather than
taken from pymodbus's serial client: one :class:`drivers.serial_line.SerialBus`
owns the port, enforces the inter-frame gap and quarantines silent slaves, which
pymodbus's client (one transport per client, its own timing) cannot share. Replies
are decoded by the same :class:`drivers.modbus_common.CompiledRequest` and exception
table as Modbus TCP, from the same compiled read plan.

Reply frames are delimited by the length the function code implies (user space
cannot time 1.5-character gaps), found by scanning past noise for a frame with the
expected address and function and a valid checksum: a reply from another address,
a bad CRC/LRC or a truncated frame never yields a value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from drivers.base import (
    Clock,
    DeviceTimeout,
    DriverError,
    Quality,
    Reason,
    Sample,
    Unconnected,
    utc_now_us,
)
from drivers.modbus_codec import Table
from drivers.modbus_common import EXCEPTION_REASONS, compile_request, plan_lines
from drivers.modbus_plan import Request
from drivers.serial_line import FrameError, FrameFinder, FrameRejected, SerialBus

__all__ = [
    "FUNCTION_CODES",
    "Framing",
    "ModbusSerialDriver",
    "ascii_finder",
    "ascii_frame",
    "crc16",
    "lrc",
    "parse_read_reply",
    "read_pdu",
    "reply_length",
    "rtu_finder",
    "rtu_frame",
]

Framing = Literal["rtu", "ascii"]

FUNCTION_CODES: dict[Table, int] = {
    Table.COIL: 0x01,
    Table.DISCRETE: 0x02,
    Table.HOLDING: 0x03,
    Table.INPUT: 0x04,
}


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-16/MODBUS (preset 0xFFFF, reflected poly 0xA001); send the low byte first."""
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ b) & 0xFF]
    return crc


def lrc(data: bytes) -> int:
    """Modbus ASCII LRC: two's complement of the 8-bit sum of the binary bytes."""
    return (-sum(data)) & 0xFF


def read_pdu(req: Request) -> bytes:
    """The request PDU (function, start address, quantity) of one read."""
    fc = FUNCTION_CODES[req.table]
    return bytes((fc,)) + req.address.to_bytes(2, "big") + req.count.to_bytes(2, "big")


def rtu_frame(unit: int, pdu: bytes) -> bytes:
    body = bytes((unit,)) + pdu
    return body + crc16(body).to_bytes(2, "little")


def ascii_frame(unit: int, pdu: bytes) -> bytes:
    body = bytes((unit,)) + pdu
    return b":" + (body + bytes((lrc(body),))).hex().upper().encode() + b"\r\n"


def reply_length(fc: int, byte_count: int) -> int:
    """RTU length of a read reply with ``byte_count`` data bytes (address … CRC)."""
    return 3 + byte_count + 2 if fc & 0x80 == 0 else 5


def rtu_finder(unit: int, fc: int) -> FrameFinder:
    """Finds the RTU reply of ``unit`` to function ``fc`` (normal or exception) in a buffer."""
    exc_fc = fc | 0x80

    def find(buf: bytes) -> tuple[int, int] | None:
        foreign: int | None = None
        for i in range(len(buf) - 1):
            f = buf[i + 1]
            if f == exc_fc:
                need = 5
            elif f == fc:
                if i + 2 >= len(buf):
                    continue
                need = 5 + buf[i + 2]
            else:
                continue
            if len(buf) - i < need:
                continue
            frame = buf[i : i + need]
            if crc16(frame[:-2]) != int.from_bytes(frame[-2:], "little"):
                continue
            if buf[i] == unit:
                return i, i + need
            foreign = buf[i]
        if foreign is not None:
            raise FrameRejected(f"reply from slave {foreign}, expected {unit}")
        return None

    return find


def ascii_finder(unit: int, fc: int) -> FrameFinder:
    """Finds the ASCII reply (``:`` hex LRC CR LF) of ``unit`` to function ``fc``."""

    def find(buf: bytes) -> tuple[int, int] | None:
        foreign: int | None = None
        pos = 0
        for _ in range(len(buf)):
            start = buf.find(b":", pos)
            if start < 0:
                break
            end = buf.find(b"\r\n", start)
            if end < 0:
                break
            pos = start + 1
            try:
                body = bytes.fromhex(buf[start + 1 : end].decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                continue
            if len(body) < 3 or lrc(body[:-1]) != body[-1] or body[1] & 0x7F != fc:
                continue
            if body[0] == unit:
                return start, end + 2
            foreign = body[0]
        if foreign is not None:
            raise FrameRejected(f"reply from slave {foreign}, expected {unit}")
        return None

    return find


def ascii_to_rtu_body(frame: bytes) -> bytes:
    """The binary address+PDU of an ASCII frame (LRC already checked by the finder)."""
    return bytes.fromhex(frame[1:-2].decode("ascii"))[:-1]


def parse_read_reply(req: Request, body: bytes) -> list[int] | list[bool] | int:
    """Registers or bits of a read reply, or the exception code (an ``int``).

    ``body`` is address + PDU without checksum. Raises :class:`FrameRejected` when the
    byte count does not match what was asked for, or the reply is too short to carry
    one (an ASCII frame's LRC can be right over just an address and a function code).
    """
    if len(body) < 3:
        raise FrameRejected(f"a reply of {len(body)} bytes carries no data")
    fc = body[1]
    if fc & 0x80:
        return body[2]
    count = body[2]
    data = body[3 : 3 + count]
    if req.table.is_bit:
        if count != (req.count + 7) // 8 or len(data) != count:
            raise FrameRejected(f"{count} data bytes for {req.count} bits")
        return [bool(data[i // 8] >> (i % 8) & 1) for i in range(req.count)]
    if count != 2 * req.count or len(data) != count:
        raise FrameRejected(f"{count} data bytes for {req.count} registers")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, count, 2)]


class ModbusSerialDriver(Unconnected):
    """One Modbus slave on a shared serial line (RTU or ASCII framing).

    ``read()`` keeps the :mod:`drivers.base` contract: a request that timed out or
    got a garbled reply gives bad samples (``no_communication``); an exception reply
    gives bad samples with the mapped reason; when every request failed the last
    error is raised so the runtime backs off.
    """

    def __init__(
        self,
        device_id: str,
        bus: SerialBus,
        unit: int,
        requests: Sequence[Request],
        *,
        framing: Framing = "rtu",
        timeout: float,
        clock: Clock = utc_now_us,
    ) -> None:
        self.device_id = device_id
        self.endpoint = f"{framing}:{bus.endpoint}/{unit}"
        self.unit = unit
        self.framing = framing
        self.requests = tuple(requests)
        self._bus = bus
        self._timeout = timeout
        self._clock = clock
        self._compiled = tuple(compile_request(r) for r in self.requests)
        self._frames: list[tuple[bytes, FrameFinder]] = []
        for req in self.requests:
            pdu = read_pdu(req)
            if framing == "rtu":
                self._frames.append((rtu_frame(unit, pdu), rtu_finder(unit, pdu[0])))
            else:
                self._frames.append((ascii_frame(unit, pdu), ascii_finder(unit, pdu[0])))

    async def read(self) -> list[Sample]:
        samples: list[Sample] = []
        failures: list[DriverError] = []
        for compiled, (frame, find) in zip(self._compiled, self._frames, strict=True):
            req = compiled.request
            try:
                reply = await self._bus.transact(self.device_id, frame, find, timeout=self._timeout)
            except (DeviceTimeout, FrameError) as exc:
                failures.append(exc)
                samples += _bad(req, exc.reason, self._clock())
                continue
            # Quarantined and DeviceUnreachable propagate: the rest of the poll cannot succeed
            ts = self._clock()
            body = reply[:-2] if self.framing == "rtu" else ascii_to_rtu_body(reply)
            try:
                data = parse_read_reply(req, body)
            except FrameRejected as exc:
                failures.append(FrameError(self.device_id, self.endpoint, str(exc)))
                samples += _bad(req, Reason.DEVICE_FAILURE, ts)
                continue
            if isinstance(data, int):
                samples += _bad(req, EXCEPTION_REASONS.get(data, Reason.DEVICE_FAILURE), ts)
            else:
                samples += compiled.decode(data, ts)
        if self.requests and len(failures) == len(self.requests):
            raise failures[-1]
        return samples

    def describe_plan(self) -> list[str]:
        return plan_lines(self.requests, self.unit, self.framing)

    def identity(self) -> dict[str, str]:
        return {}


def _bad(req: Request, reason: Reason, ts: int) -> list[Sample]:
    return [Sample(p.id, None, None, Quality.BAD, reason, ts) for p in req.points]
