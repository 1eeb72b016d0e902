"""Frame parsers fed random bytes: they never crash and never accept an invalid frame."""

from __future__ import annotations

import math
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import cjt188, dlt645
from drivers.ascii_generic import AsciiSpec, parse_line
from drivers.base import Quality, Reason
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


numbers = st.one_of(
    st.sampled_from(["12.50", "-0.01", "nan", "inf", "-inf", "1e999", "1,5", ""]),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers(-(10**6), 10**6).map(str),
    st.text(alphabet="0123456789.-+eEinfa ", max_size=10),
)
# near-valid lines as well as any text: random text alone would hardly ever match
weight_lines = st.one_of(
    st.text(max_size=80),
    st.builds(
        lambda head, status, value, unit: f"{head} {status} {value} {unit}".strip(),
        st.sampled_from(["S", "SI", "ES", "s"]),
        st.sampled_from(["S", "D", "I", "+", "-", "X", ""]),
        numbers,
        st.sampled_from(["g", "kg", "", "g g"]),
    ),
)
ascii_lines = st.one_of(
    st.text(max_size=80),
    st.builds(
        lambda status, value, unit: f"{status},{value} {unit}",
        st.sampled_from(["OK", "UR", "ER", "", "ok"]),
        numbers,
        st.sampled_from(["g", "kg", "", "gg"]),
    ),
)

HYGRO = AsciiSpec(
    pattern=re.compile(r"(?P<status>\w+)?,(?P<value>[^ ]+) (?P<unit>\w*)"),
    status_map={"OK": (Quality.GOOD, None), "UR": (Quality.UNCERTAIN, Reason.NOT_STABLE)},
    unit="g",
)


@settings(max_examples=300)
@given(weight_lines)
def test_weight_parser_accepts_only_weight_replies(line: str) -> None:
    try:
        reply = parse_weight(line)
    except ValueError:
        return  # refused: the driver turns it into a frame error
    fields = line.split()
    if reply.status in ("ES", "ET", "EL"):
        assert fields == [reply.status] and reply.value is None
        return
    assert fields[:2] == ["S", reply.status]
    if reply.status in ("I", "+", "-"):
        assert reply.value is None and reply.unit is None
        return
    assert reply.status in ("S", "D") and len(fields) == 4
    assert reply.value is not None and reply.unit == fields[3]
    assert math.isfinite(reply.value) and reply.value == float(fields[2])


@settings(max_examples=300)
@given(ascii_lines)
def test_ascii_parser_accepts_only_lines_the_pattern_and_status_allow(line: str) -> None:
    sample = parse_line(HYGRO, line, 0)
    m = HYGRO.pattern.search(line)
    if sample.value is None:
        assert sample.quality is not Quality.GOOD and sample.reason is not None
        return
    # a value only from a line that matches, in the configured unit, with a known
    # status, and a finite number exactly as sent
    assert m is not None and m.group("unit") == "g"
    assert (sample.quality, sample.reason) == HYGRO.status_map[m.group("status")]
    assert math.isfinite(sample.value) and sample.value == float(m.group("value"))


@settings(max_examples=400)
@given(junk)
def test_cjt188_finder(buf: bytes) -> None:
    try:
        found = cjt188.meter_finder("00000012345678", 0x10)(buf)
    except FrameRejected:
        return
    if found is not None:
        frame = buf[found[0] : found[1]]
        reply = cjt188.parse_frame(frame)
        assert reply.address == "00000012345678" and reply.meter_type == 0x10
        assert reply.control & 0x80 and cjt188.checksum(frame[:-2]) == frame[-2]


@settings(max_examples=300)
@given(junk, junk, st.integers(0, 255))
def test_cjt188_reply_found_between_noise(before: bytes, after: bytes, ser: int) -> None:
    body = cjt188.encode_current_data(cjt188.Family.WATER, {"cumulative_flow": 12.5})
    reply = cjt188.reply_frame(0x10, "00000012345678", ser, body)
    try:
        found = cjt188.meter_finder("00000012345678", 0x10)(before + reply + after)
    except FrameRejected:
        return  # noise that happens to be a valid frame of another meter
    assert found is not None


@settings(max_examples=400)
@given(st.binary(min_size=0, max_size=60), st.sampled_from(list(cjt188.Family)))
def test_cjt188_current_data_decoder(body: bytes, family: cjt188.Family) -> None:
    # any body either is refused as a whole or yields every field, good or with a reason
    try:
        fields = cjt188.decode_current_data(family, body)
    except ValueError:
        return
    assert set(fields) == set(cjt188.layout_of(family))
    for f in fields.values():
        assert (f.value is None) == (f.error is not None)
