"""Frame parsers fed random bytes: they never crash and never accept an invalid frame.

And whole drivers fed any reply: ``read()`` returns samples that keep the contract
(no value without a reason, no non-finite value) or raises a ``DriverError`` —
never anything else, which the gateway would have to contain.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import cjt188, dlt645
from drivers.ascii_generic import AsciiDriver, AsciiSpec, parse_line
from drivers.base import DeviceTimeout, DriverError, Quality, Reason, Sample
from drivers.modbus_codec import DataType, Order, PointSpec, Table
from drivers.modbus_common import compile_request
from drivers.modbus_plan import plan
from drivers.modbus_serial import (
    ModbusSerialDriver,
    ascii_finder,
    ascii_frame,
    crc16,
    lrc,
    rtu_finder,
    rtu_frame,
)
from drivers.mtsics import MtSicsDriver, parse_weight
from drivers.serial_line import FrameError, FrameRejected
from drivers.toledo import ToledoDriver, ToledoParser, encode_frame, toledo_checksum

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


# -- optional groups: a status-only line is a reading, never an exception --------------------

OPTIONAL_PATTERNS = [
    r"^(?P<status>ST|US|OL),?(?P<value>[-+ 0-9.]+)?\s*(?P<unit>\w+)?$",
    r"(?P<value>-?\d+(?:\.\d+)?)?",
    r"^(?P<status>\w+)?(?:,(?P<value>[^ ]*))?(?: (?P<unit>\w*))?",
    r"(?:(?P<value>\S+) )?(?P<unit>g|kg)?$",
]
optional_specs = st.builds(
    lambda pattern, unit, scale: AsciiSpec(
        pattern=re.compile(pattern),
        status_map={
            "ST": (Quality.GOOD, None),
            "US": (Quality.UNCERTAIN, Reason.NOT_STABLE),
            "OL": (Quality.UNCERTAIN, Reason.UNITS_EXCEEDED),
        },
        unit=unit,
        scale=scale,
    ),
    st.sampled_from(OPTIONAL_PATTERNS),
    st.sampled_from([None, "g", "kg"]),
    st.sampled_from([1.0, -2.5, 1e300]),
)
optional_lines = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda status, sep, value, unit: f"{status}{sep}{value}{unit}",
        st.sampled_from(["ST", "US", "OL", "", "XX"]),
        st.sampled_from([",", "", " "]),
        numbers,
        st.sampled_from([" g", " kg", "", " gg"]),
    ),
)


@settings(max_examples=500)
@given(optional_specs, optional_lines)
def test_ascii_parser_is_total_over_optional_groups(spec: AsciiSpec, line: str) -> None:
    sample = parse_line(spec, line, 0)  # any line: a sample, never an exception
    if sample.value is None:
        assert sample.quality is not Quality.GOOD and sample.reason is not None
    else:
        assert isinstance(sample.value, float) and math.isfinite(sample.value)
        m = spec.pattern.search(line)
        assert m is not None and m.group("value") is not None


# -- whole drivers fed whatever a line can carry ----------------------------------------------


class ScriptedLine:
    """Stands in for :class:`drivers.serial_line.SerialBus` with replies drawn by hypothesis.

    It keeps the bus's contract of ``transact`` (the driver's finder delimits the
    reply; FrameRejected → FrameError; bytes without a frame → FrameError; nothing →
    DeviceTimeout) without a pseudo-terminal, so hundreds of replies take milliseconds.
    The drivers' real lines are exercised against simulators elsewhere.
    """

    endpoint = "fuzz"

    def __init__(self, replies: list[bytes]) -> None:
        self.replies = list(replies)

    async def transact(
        self,
        device: str,
        request: bytes,
        find: Callable[[bytes], tuple[int, int] | None],
        *,
        timeout: float,  # noqa: ASYNC109 — the bus's signature
    ) -> bytes:
        buf = self.replies.pop(0) if self.replies else b""
        try:
            found = find(buf)
        except FrameRejected as exc:
            raise FrameError(device, self.endpoint, str(exc)) from exc
        if found is None:
            if buf:
                raise FrameError(device, self.endpoint, "no valid reply")
            raise DeviceTimeout(device, self.endpoint, "no reply")
        return buf[found[0] : found[1]]


def poll(driver: Any) -> list[Sample] | None:
    """One ``read()``: its samples, each checked, or None when it raised a DriverError."""
    try:
        samples: list[Sample] = asyncio.run(driver.read())
    except DriverError:
        return None  # the contract's failure: the poller backs off
    for s in samples:
        assert isinstance(s, Sample)
        if s.value is None:
            assert s.quality is not Quality.GOOD and s.reason is not None
        elif isinstance(s.value, float):
            assert math.isfinite(s.value)
    return samples


def mutated(frames: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Valid frames, cut, padded or with one byte changed — and plain junk."""

    def change(frame: bytes, where: int, byte: int, cut: int, pad: bytes) -> bytes:
        i = where % (len(frame) or 1)
        out = frame[:i] + bytes((byte,)) + frame[i + 1 :] if frame else frame
        return out[: len(out) - cut % 3] + pad

    return st.one_of(
        junk,
        frames,
        st.builds(
            change,
            frames,
            st.integers(0, 400),
            st.integers(0, 255),
            st.integers(0, 5),
            st.binary(max_size=4),
        ),
    )


MODBUS_POINTS = [
    PointSpec("f", Table.HOLDING, 0, DataType.FLOAT32),
    PointSpec("d", Table.HOLDING, 2, DataType.FLOAT64, Order.DCBA, scale=1e300),
    PointSpec("i", Table.HOLDING, 6, DataType.INT16, scale=0.1, offset=-5),
    PointSpec("s", Table.HOLDING, 7, DataType.STRING, length=3),
    PointSpec("b", Table.HOLDING, 10, DataType.BOOL, bit=3),
    PointSpec("c", Table.COIL, 0, DataType.BOOL),
    PointSpec("u", Table.INPUT, 0, DataType.UINT64, Order.BADC),
]
MODBUS_REQUESTS = plan(MODBUS_POINTS)


def modbus_replies(framing: str) -> st.SearchStrategy[bytes]:
    def frame(unit: int, fc: int, body: bytes) -> bytes:
        pdu = bytes((fc,)) + body
        return rtu_frame(unit, pdu) if framing == "rtu" else ascii_frame(unit, pdu)

    bodies = st.one_of(
        st.binary(max_size=30).map(lambda b: bytes((len(b),)) + b),  # a byte count, then data
        st.binary(max_size=30),
    )
    return mutated(
        st.builds(frame, st.sampled_from([7, 8]), st.sampled_from([1, 2, 3, 4, 0x83]), bodies)
    )


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["rtu", "ascii"]), st.data())
def test_modbus_serial_driver_reads_any_reply(framing: str, data: st.DataObject) -> None:
    replies = data.draw(st.lists(modbus_replies(framing), max_size=len(MODBUS_REQUESTS)))
    line = ScriptedLine(replies)
    drv = ModbusSerialDriver("m", line, 7, MODBUS_REQUESTS, framing=framing, timeout=0.1)  # type: ignore[arg-type]
    poll(drv)


@settings(max_examples=300)
@given(st.lists(st.integers(0, 0xFFFF), max_size=14), st.lists(st.booleans(), max_size=3))
def test_modbus_decoding_of_any_registers(words: list[int], bits: list[bool]) -> None:
    for req in MODBUS_REQUESTS:
        compiled = compile_request(req)
        samples = compiled.decode(bits if req.table.is_bit else words, 0)
        assert [s.point for s in samples] == [p.id for p in req.points]
        for s in samples:
            if s.value is None:
                assert s.quality is Quality.BAD and s.reason is not None
            elif isinstance(s.value, float):
                assert math.isfinite(s.value) or s.point == "d"  # scaled: metrology judges it


METER_POINTS = [
    dlt645.Dlt645Point("e", 0x00010000, dlt645.DATA_ITEMS[0x00010000]),
    dlt645.Dlt645Point("i", 0x02020100, dlt645.DATA_ITEMS[0x02020100], scale=2.0),
]


def meter_replies() -> st.SearchStrategy[bytes]:
    frames = st.one_of(
        st.builds(
            dlt645.reply_frame,
            st.sampled_from(["123456789012", "000000000001"]),
            st.sampled_from([0x00010000, 0x02020100, 0x00020000]),
            st.binary(max_size=8),
        ),
        st.builds(dlt645.error_frame, st.just("123456789012"), st.integers(0, 255)),
        st.builds(
            lambda c, d: dlt645._frame(dlt645.encode_address("123456789012"), c, d),
            st.integers(0, 255),
            st.binary(max_size=12),
        ),
    )
    return mutated(frames)


@settings(max_examples=400, deadline=None)
@given(st.lists(meter_replies(), max_size=2))
def test_dlt645_driver_reads_any_reply(replies: list[bytes]) -> None:
    drv = dlt645.Dlt645Driver("kwh", ScriptedLine(replies), "123456789012", METER_POINTS,  # type: ignore[arg-type]
                              timeout=0.1)  # fmt: skip
    poll(drv)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(weight_lines.map(str.encode), junk).map(lambda b: b + b"\r\n"),
                max_size=3), st.sampled_from([None, "g"]))  # fmt: skip
def test_mtsics_driver_reads_any_reply(replies: list[bytes], unit: str | None) -> None:
    drv = MtSicsDriver("bal", ScriptedLine(replies), unit=unit, timeout=0.1)  # type: ignore[arg-type]
    poll(drv)


@settings(max_examples=300, deadline=None)
@given(optional_specs, st.lists(st.one_of(optional_lines.map(str.encode), junk), max_size=4))
def test_ascii_driver_reads_any_reply_polled_or_streamed(
    spec: AsciiSpec, lines: list[bytes]
) -> None:
    polled = AsciiDriver("a", ScriptedLine([b + b"\r\n" for b in lines[:1]]),  # type: ignore[arg-type]
                         replace(spec, request=b"R\r\n"), timeout=0.1)  # fmt: skip
    poll(polled)
    streamed = AsciiDriver("a", ScriptedLine([]), spec, timeout=0.1)  # type: ignore[arg-type]
    for chunk in lines:
        streamed._on_data(chunk + b"\r\n", 0.0)  # what the stream task hands over
    poll(streamed)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(mutated(st.builds(lambda w, t, m: encode_frame(w, t, motion=m),
                               st.floats(-9999, 9999), st.floats(0, 999), st.booleans())),
             max_size=4),
    st.sampled_from([None, "kg", "lb"]),
)  # fmt: skip
def test_toledo_driver_reads_any_stream(chunks: list[bytes], unit: str | None) -> None:
    drv = ToledoDriver("scale", ScriptedLine([]), unit=unit)  # type: ignore[arg-type]
    for chunk in chunks:
        drv._on_data(chunk, 0.0)
    poll(drv)
