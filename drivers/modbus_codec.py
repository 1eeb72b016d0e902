"""Register codec: Modbus register words and bits ↔ typed values. Pure functions.

Byte and word order use the letters of a 32-bit value ``0xAABBCCDD`` as the field
names them: ``ABCD`` is big-endian (Modbus default), ``DCBA`` little-endian,
``BADC`` big-endian words with swapped bytes, ``CDAB`` swapped words with
big-endian bytes. The same two switches (byte swap inside each register, reversal
of register order) apply to 16- and 64-bit values: for 16-bit values only the byte
swap matters.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from drivers.base import Value, scaled

__all__ = [
    "DataType",
    "Order",
    "PointSpec",
    "Table",
    "decode",
    "decode_bits",
    "encode",
    "engineering",
    "numeric_code",
    "raw_from_engineering",
]


class Table(StrEnum):
    """The four Modbus data tables."""

    COIL = "coil"
    DISCRETE = "discrete"
    INPUT = "input"
    HOLDING = "holding"

    @property
    def is_bit(self) -> bool:
        return self in (Table.COIL, Table.DISCRETE)


class DataType(StrEnum):
    BOOL = "bool"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"


class Order(StrEnum):
    ABCD = "ABCD"
    DCBA = "DCBA"
    BADC = "BADC"
    CDAB = "CDAB"

    @property
    def byte_swap(self) -> bool:
        return self in (Order.BADC, Order.DCBA)

    @property
    def word_swap(self) -> bool:
        return self in (Order.CDAB, Order.DCBA)


# struct format and register count per numeric type
_NUMERIC: dict[DataType, tuple[str, int]] = {
    DataType.INT16: (">h", 1),
    DataType.UINT16: (">H", 1),
    DataType.INT32: (">i", 2),
    DataType.UINT32: (">I", 2),
    DataType.INT64: (">q", 4),
    DataType.UINT64: (">Q", 4),
    DataType.FLOAT32: (">f", 2),
    DataType.FLOAT64: (">d", 4),
}


def numeric_code(data_type: DataType) -> tuple[str, int] | None:
    """The ``struct`` code (big-endian, ABCD) and register count of a numeric type."""
    entry = _NUMERIC.get(data_type)
    return (entry[0][1:], entry[1]) if entry else None


def register_count(data_type: DataType) -> int | None:
    """Registers a numeric type occupies; ``None`` for types whose length is configured."""
    entry = _NUMERIC.get(data_type)
    return entry[1] if entry else None


@dataclass(frozen=True, slots=True)
class PointSpec:
    """Where a point lives in a device's register map and how to decode it.

    ``address`` is the 0-based protocol address. ``length`` is the register count of
    a string (ignored otherwise). ``bit`` selects one bit (0 = least significant) of
    a 16-bit register for a ``bool`` point in a register table. ``chars_per_register``
    is 2 (high byte first) or 1 (low byte only), for strings.
    """

    id: str
    table: Table
    address: int
    type: DataType
    order: Order = Order.ABCD
    length: int = 0
    bit: int | None = None
    scale: float = 1.0
    offset: float = 0.0
    chars_per_register: int = 2

    @property
    def width(self) -> int:
        """How many registers (or bits, for bit tables) the point covers."""
        if self.table.is_bit or self.type is DataType.BOOL:
            return 1
        if self.type is DataType.STRING:
            return self.length
        return _NUMERIC[self.type][1]

    @property
    def end(self) -> int:
        """One past the last address covered."""
        return self.address + self.width


def _words_to_bytes(words: Sequence[int], order: Order) -> bytes:
    ordered = reversed(words) if order.word_swap else words
    out = bytearray()
    for w in ordered:
        hi, lo = (w >> 8) & 0xFF, w & 0xFF
        out += bytes((lo, hi)) if order.byte_swap else bytes((hi, lo))
    return bytes(out)


def _bytes_to_words(data: bytes, order: Order) -> list[int]:
    words = []
    for i in range(0, len(data), 2):
        hi, lo = data[i], data[i + 1]
        words.append((lo << 8 | hi) if order.byte_swap else (hi << 8 | lo))
    if order.word_swap:
        words.reverse()
    return words


def decode(spec: PointSpec, words: Sequence[int]) -> Value:
    """Decode a register-table point from exactly ``spec.width`` register words."""
    if len(words) != spec.width:
        raise ValueError(f"{spec.id}: need {spec.width} registers, got {len(words)}")
    if spec.type is DataType.BOOL:
        return bool((words[0] >> (spec.bit or 0)) & 1)
    if spec.type is DataType.STRING:
        if spec.chars_per_register == 1:
            chars = bytes(w & 0xFF for w in words)
        else:
            chars = _words_to_bytes(words, Order.BADC if spec.order.byte_swap else Order.ABCD)
        return chars.split(b"\x00", 1)[0].decode("latin-1").rstrip()
    fmt, _ = _NUMERIC[spec.type]
    value: int | float = struct.unpack(fmt, _words_to_bytes(words, spec.order))[0]
    return value


@functools.cache
def _struct(fmt: str) -> struct.Struct:
    """One compiled format per layout, shared by every point that has it."""
    return struct.Struct(fmt)


BlockDecoder = Callable[[bytes, int], Value]
"""Decodes one point from a reply block (big-endian register bytes) at a byte offset."""


def block_decoder(spec: PointSpec) -> BlockDecoder:
    """A fast decoder of ``spec`` from the raw bytes of a whole register block.

    Equivalent to :func:`decode` on the point's registers; compiled once per point
    so that a poll does one ``unpack_from`` per point instead of rebuilding bytes.
    """
    if spec.type is DataType.BOOL or spec.type is DataType.STRING:
        width = spec.width

        def generic(block: bytes, off: int) -> Value:
            words = struct.unpack_from(f">{width}H", block, off)
            return decode(spec, words)

        return generic
    fmt, _ = _NUMERIC[spec.type]
    if spec.order is Order.ABCD:
        unpack = _struct(fmt).unpack_from

        def direct(block: bytes, off: int) -> Value:
            value: int | float = unpack(block, off)[0]
            return value

        return direct
    width = spec.width
    order = spec.order
    words_fmt = _struct(f">{width}H")
    unpack_value = _struct(fmt).unpack

    def reordered(block: bytes, off: int) -> Value:
        raw = _words_to_bytes(words_fmt.unpack_from(block, off), order)
        value: int | float = unpack_value(raw)[0]
        return value

    return reordered


def decode_bits(spec: PointSpec, bits: Sequence[bool]) -> bool:
    """Decode a coil or discrete-input point from its one bit."""
    return bool(bits[0])


def encode(spec: PointSpec, raw: Value) -> list[int]:
    """Register words for a raw value (the inverse of :func:`decode`; simulators use it).

    For a ``bool`` point on a register table only the point's bit is set; merge it
    into the register yourself if other bits share it.
    """
    if spec.type is DataType.BOOL:
        return [(1 << (spec.bit or 0)) if raw else 0]
    if spec.type is DataType.STRING:
        text = str(raw).encode("latin-1")
        if spec.chars_per_register == 1:
            padded = text[: spec.length].ljust(spec.length, b"\x00")
            return list(padded)
        padded = text[: 2 * spec.length].ljust(2 * spec.length, b"\x00")
        return _bytes_to_words(padded, Order.BADC if spec.order.byte_swap else Order.ABCD)
    fmt, _ = _NUMERIC[spec.type]
    packed = struct.pack(fmt, float(raw)) if fmt[-1] in "fd" else struct.pack(fmt, int(raw))
    return _bytes_to_words(packed, spec.order)


def engineering(spec: PointSpec, raw: Value) -> Value | None:
    """Apply scale and offset to a numeric raw value (others pass through); None when
    they take it past the float range (:func:`drivers.base.scaled`)."""
    if isinstance(raw, (bool, str)):
        return raw
    if spec.scale == 1.0 and spec.offset == 0.0:
        return raw
    return scaled(raw, spec.scale, spec.offset)


def raw_from_engineering(spec: PointSpec, value: Value) -> Value:
    """Invert scale/offset, rounding and clamping to the raw type (simulators use it).

    Integer types round to the nearest integer and clamp to their range (NaN gives
    0); ``bool`` points take the truth of the value; floats pass through.
    """
    if isinstance(value, (bool, str)) or spec.type is DataType.STRING:
        return value
    if spec.type is DataType.BOOL:
        return bool(value)
    raw = (value - spec.offset) / spec.scale if spec.scale else value
    if spec.type in (DataType.FLOAT32, DataType.FLOAT64):
        return raw
    if math.isnan(raw):
        return 0
    lo, hi = _int_range(spec.type)
    # infinities clamp like any other out-of-range value
    return max(lo, min(hi, round(raw))) if math.isfinite(raw) else (hi if raw > 0 else lo)


def _int_range(data_type: DataType) -> tuple[int, int]:
    bits = {DataType.INT16: 16, DataType.UINT16: 16, DataType.INT32: 32}.get(data_type)
    bits = bits or {DataType.UINT32: 32, DataType.INT64: 64, DataType.UINT64: 64}[data_type]
    if data_type.value.startswith("u"):
        return 0, (1 << bits) - 1
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
