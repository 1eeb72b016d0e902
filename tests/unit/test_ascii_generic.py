"""Generic ASCII instruments from YAML-only descriptions."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest
from pydantic import TypeAdapter, ValidationError

from drivers.ascii_generic import AsciiDriver, AsciiSpec, parse_line
from drivers.base import DeviceTimeout, ProtocolError, Quality, Reason
from drivers.serial_line import LineSettings, SerialBus
from gateway.config.models.registry import device_union
from gateway.config.models.serial import AsciiDevice
from simulators.pty import SimLine
from simulators.serial_instruments import AsciiInstrumentSim, Fault
from tests.eventually import eventually

PATTERN = re.compile(r"^(?P<status>ST|US|OL),(?P<value>[-+ 0-9.]+)\s*(?P<unit>\w+)$")
SPEC = AsciiSpec(
    pattern=PATTERN,
    request=b"R\r\n",
    status_map={"ST": (Quality.GOOD, None), "US": (Quality.UNCERTAIN, Reason.NOT_STABLE)},
    point="mass",
    unit="kg",
)


def test_parse_line() -> None:
    good = parse_line(SPEC, "ST,+0012.50 kg", 1)
    assert (good.value, good.quality) == (12.5, Quality.GOOD)
    unstable = parse_line(SPEC, "US,+0012.40 kg", 1)
    assert (unstable.value, unstable.reason) == (12.4, Reason.NOT_STABLE)
    unknown = parse_line(SPEC, "OL,+9999.99 kg", 1)
    assert (unknown.value, unknown.quality) == (None, Quality.BAD)
    assert parse_line(SPEC, "ST,+0012.50 lb", 1).reason is Reason.CONFIG_ERROR
    assert parse_line(SPEC, "garbage", 1).quality is Quality.BAD
    assert parse_line(SPEC, "ST,1.2.3 kg", 1).reason is Reason.INVALID_VALUE


def test_spec_requires_value_group() -> None:
    with pytest.raises(ValueError):
        AsciiSpec(pattern=re.compile(r"(?P<v>\d+)"))


async def test_polled_instrument() -> None:
    sim = AsciiInstrumentSim({"R": "ST,+0012.50 kg"})
    with SimLine(sim) as line:
        bus = SerialBus(LineSettings(line.path, 9600))
        async with bus, AsciiDriver("a", bus, SPEC, timeout=0.3) as drv:
            [sample] = await drv.read()
            sim.faults = {Fault.SILENT}
            with pytest.raises(DeviceTimeout):
                await drv.read()
    assert sample.value == 12.5


async def test_streaming_instrument_with_noise() -> None:
    spec = AsciiSpec(pattern=re.compile(r"(?P<value>-?\d+\.\d+)"), point="t")
    sim = AsciiInstrumentSim({}, period=0.01, stream_lines=["T=21.50", "T=21.60"])
    sim.faults = {Fault.NOISE}
    with SimLine(sim, baudrate=9600) as line:
        bus = SerialBus(LineSettings(line.path, 9600))
        async with bus, AsciiDriver("s", bus, spec, timeout=0.3) as drv:
            seen: set[float] = set()
            for _ in range(300):
                await asyncio.sleep(0.01)
                try:
                    [sample] = await drv.read()
                except DeviceTimeout:
                    continue
                if sample.value is not None:
                    seen.add(float(sample.value))
                if len(seen) == 2:
                    break
    assert seen == {21.5, 21.6}


OPTIONAL_VALUE = AsciiSpec(
    pattern=re.compile(r"^(?P<status>ST|OL),?(?P<value>[-+ 0-9.]+)?\s*(?P<unit>\w+)?$"),
    request=b"R\r\n",
    status_map={"ST": (Quality.GOOD, None), "OL": (Quality.UNCERTAIN, Reason.UNITS_EXCEEDED)},
    point="mass",
    unit="kg",
)


def test_a_line_without_value_takes_its_status() -> None:
    ol = parse_line(OPTIONAL_VALUE, "OL", 1)  # was: AttributeError on the missing group
    assert (ol.value, ol.quality, ol.reason) == (None, Quality.UNCERTAIN, Reason.UNITS_EXCEEDED)
    st = parse_line(OPTIONAL_VALUE, "ST", 1)  # "good" without a value is no good reading
    assert (st.value, st.quality, st.reason) == (None, Quality.BAD, Reason.DEVICE_FAILURE)
    bare = AsciiSpec(pattern=re.compile(r"^(?P<value>\d+)?$"))
    assert parse_line(bare, "", 1).reason is Reason.DEVICE_FAILURE
    assert parse_line(bare, "", 1).quality is Quality.BAD


async def test_an_instrument_answering_a_status_alone() -> None:
    sim = AsciiInstrumentSim({"R": "OL"})
    with SimLine(sim) as line:
        bus = SerialBus(LineSettings(line.path, 9600))
        async with bus, AsciiDriver("a", bus, OPTIONAL_VALUE, timeout=0.3) as drv:
            [overload] = await drv.read()
            sim.replies["R"] = "ST,+0012.50 kg"
            [good] = await drv.read()
    assert (overload.value, overload.reason) == (None, Reason.UNITS_EXCEEDED)
    assert (good.value, good.quality) == (12.5, Quality.GOOD)


class FragileStream(AsciiDriver):
    """A streaming driver whose parser fails on every chunk while ``broken`` is set."""

    broken = False

    def _feed(self, data: bytes, when: float) -> None:
        if self.broken:
            raise RuntimeError("a parser bug")
        super()._feed(data, when)


async def test_a_failing_stream_parser_fails_the_poll_not_the_stream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="drivers.serial_line")
    spec = AsciiSpec(pattern=re.compile(r"(?P<value>-?\d+\.\d+)"), point="t")
    sim = AsciiInstrumentSim({}, period=0.01, stream_lines=["T=21.50"])
    with SimLine(sim, baudrate=9600) as line:
        bus = SerialBus(LineSettings(line.path, 9600))
        async with bus, FragileStream("s", bus, spec, timeout=0.3) as drv:
            await eventually(lambda: drv._latest is not None, "a first line", within=5)
            drv.broken = True
            await drv.read()  # what arrived before
            await eventually(lambda: drv._error is not None, "a chunk that fails", within=5)
            with pytest.raises(ProtocolError, match="cannot parse the stream"):
                await drv.read()
            assert drv._task is not None and not drv._task.done()  # the stream goes on
            drv.broken = False
            await eventually(lambda: drv._latest is not None, "a line again", within=5)
            [sample] = await drv.read()
    assert sample.value == 21.5
    failures = [r for r in caplog.records if "cannot parse the stream" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None  # logged once, traceback
    assert any("parses again" in r.getMessage() for r in caplog.records)


def test_config_model() -> None:
    adapter: TypeAdapter[object] = TypeAdapter(device_union())
    dev = adapter.validate_python(
        {
            "driver": "ascii",
            "id": "hyg",
            "bus": "b",
            "request": "R\r\n",
            "response": PATTERN.pattern,
            "status": {"ST": "good", "US": "uncertain/not_stable"},
            "points": [{"id": "mass", "unit": "kg"}],
        }
    )
    assert isinstance(dev, AsciiDevice)
    assert dev.ascii_spec().status_map["US"] == (Quality.UNCERTAIN, Reason.NOT_STABLE)
    for bad in (
        {"response": "(?P<x>1)"},
        {"response": "("},
        {"response": "(?P<value>1)", "status": {"X": "bad"}},
        {"response": "(?P<value>1)", "status": {"X": "bad/nonsense"}},
        {"response": "(?P<value>1)", "respone": "x"},
    ):
        with pytest.raises(ValidationError):
            adapter.validate_python(
                {"driver": "ascii", "id": "x", "bus": "b", "points": [{"id": "v"}], **bad}
            )
