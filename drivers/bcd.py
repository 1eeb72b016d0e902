"""Packed BCD, low byte first: the number format of DL/T 645 and CJ/T 188 meters.

Two decimal digits per byte, the least significant byte sent first:
``123456`` in three bytes is ``56 34 12``. Pure functions, shared by the meter
drivers and their simulators.
"""

from __future__ import annotations

__all__ = ["bcd_decode", "bcd_encode"]


def bcd_encode(value: int, length: int) -> bytes:
    """Non-negative integer → ``length`` BCD bytes, low byte first.

    Raises :class:`ValueError` for a negative value or one that needs more digits.
    """
    if value < 0:
        raise ValueError(f"{value}: BCD holds non-negative numbers only")
    digits = f"{value:0{2 * length}d}"
    if len(digits) > 2 * length:
        raise ValueError(f"{value} needs more than {length} BCD bytes")
    return bytes.fromhex(digits)[::-1]


def bcd_decode(raw: bytes, signed: bool = False) -> int:
    """BCD bytes, low byte first → integer; the top bit of the last byte is the sign if
    ``signed``. Raises :class:`ValueError` on a nibble above 9."""
    data = bytearray(raw)
    negative = False
    if signed and data and data[-1] & 0x80:
        negative = True
        data[-1] &= 0x7F
    text = bytes(data[::-1]).hex()
    if not text.isdigit():
        raise ValueError(f"not BCD: {bytes(raw).hex(' ')}")
    value = int(text) if text else 0
    return -value if negative else value
