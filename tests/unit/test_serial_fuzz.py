"""Frame parsers fed random bytes: they never crash and never accept an invalid frame."""

from __future__ import annotations

import contextlib
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import dlt645
from drivers.ascii_generic import AsciiSpec, parse_line
from drivers.modbus_serial import ascii_finder, crc16, lrc, rtu_finder, rtu_frame
from drivers.mtsics import parse_weight
from drivers.serial_line import FrameRejected
from drivers.toledo import ToledoParser, encode_frame, toledo_checksum

junk = st.binary(max_size=600)


@settings(max_examples=400)
@given(junk, st.integers(1, 247), st.sampled_from([1, 2, 3, 4]))
def test_rtu_finder(buf: bytes, unit: int, fc: int) -> None:
    try:
        found = rtu_finder(unit, fc)(buf)
    except FrameRejected:
        return
    if found is not None:
        frame = buf[found[0] : found[1]]
        assert frame[0] == unit and frame[1] & 0x7F == fc
        assert crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


@settings(max_examples=300)
@given(junk, junk)
def test_rtu_frame_found_between_noise(before: bytes, after: bytes) -> None:
    frame = rtu_frame(7, bytes((3, 4, 1, 2, 3, 4)))
    try:
        found = rtu_finder(7, 3)(before + frame + after)
    except FrameRejected:
        return  # noise that happens to be a valid frame of another slave
    assert found is not None


@settings(max_examples=300)
@given(junk, st.integers(1, 247))
def test_ascii_finder(buf: bytes, unit: int) -> None:
    try:
        found = ascii_finder(unit, 3)(buf)
    except FrameRejected:
        return
    if found is not None:
        body = bytes.fromhex(buf[found[0] + 1 : found[1] - 2].decode())
        assert body[0] == unit and lrc(body[:-1]) == body[-1]


@settings(max_examples=400)
@given(junk)
def test_dlt645_finder(buf: bytes) -> None:
    try:
        found = dlt645.meter_finder("123456789012")(buf)
    except FrameRejected:
        return
    if found is not None:
        frame = buf[found[0] : found[1]]
        reply = dlt645.parse_frame(frame)
        assert reply.address == "123456789012"
        assert dlt645.checksum(frame[:-2]) == frame[-2]


@settings(max_examples=300)
@given(st.lists(junk, max_size=8))
def test_toledo_parser(chunks: list[bytes]) -> None:
    parser = ToledoParser()
    for chunk in chunks:
        for frame in parser.feed(chunk):
            assert frame.unit in ("kg", "lb")
    # and a good frame after any garbage is still found
    assert parser.feed(b"\x00" * 20 + encode_frame(1.0))[-1].weight == 1.0
    assert toledo_checksum(encode_frame(1.0)[:-1]) == encode_frame(1.0)[-1]


@settings(max_examples=300)
@given(st.text(max_size=80))
def test_text_parsers(line: str) -> None:
    with contextlib.suppress(ValueError):
        parse_weight(line)
    spec = AsciiSpec(
        pattern=re.compile(r"(?P<status>\w+)?,(?P<value>[^ ]+) (?P<unit>\w*)"), unit="g"
    )
    parse_line(spec, line, 0)
