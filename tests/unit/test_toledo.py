"""Toledo continuous output: the worked frame, resynchronisation, and the driver on a pty."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from drivers.base import DeviceTimeout, Quality, Reason, Sample
from drivers.serial_line import LineSettings, SerialBus
from drivers.toledo import ToledoDriver, ToledoParser, encode_frame, toledo_checksum
from simulators.pty import SimLine
from simulators.serial_instruments import Fault, ToledoSim
from tests.eventually import eventually

WORKED = bytes.fromhex("02 2C 30 20") + b"001234000000" + bytes.fromhex("0D 2B")


def test_worked_frame() -> None:
    assert toledo_checksum(WORKED[:-1]) == 0x2B
    [frame] = ToledoParser().feed(WORKED)
    assert (frame.weight, frame.unit, frame.motion, frame.net) == (12.34, "kg", False, False)
    assert encode_frame(12.34) == WORKED


def test_resynchronises_after_garbage_and_split_frames() -> None:
    parser = ToledoParser()
    stream = b"\x02\x02junk\x0d" + WORKED + b"\xff\x00" + encode_frame(-1.5, motion=True)
    frames = []
    for i in range(0, len(stream), 5):
        frames += parser.feed(stream[i : i + 5])
    assert [f.weight for f in frames] == [12.34, -1.5]
    assert frames[1].motion
    assert parser.discarded > 0


def test_bad_checksum_and_no_checksum_mode() -> None:
    assert ToledoParser().feed(WORKED[:-1] + b"\x00") == []
    assert ToledoParser(checksum=False).feed(WORKED[:-1])[0].weight == 12.34


async def _arrival(drv: ToledoDriver, seen: int) -> None:
    """Wait, bounded, until the stream delivered (or rejected) a frame after the first ``seen``."""
    await eventually(
        lambda: drv.frames + drv.parser.bad_frames > seen, f"frame {seen + 1}", within=3
    )


async def _poll(sim: ToledoSim, *, unit: str | None = "kg") -> list[Sample] | DeviceTimeout:
    with SimLine(sim, baudrate=9600) as line:
        bus = SerialBus(LineSettings(line.path, 9600, "E", bytesize=7))
        async with bus, ToledoDriver("scale", bus, unit=unit) as drv:
            await _arrival(drv, 0)
            try:
                return await drv.read()
            except DeviceTimeout as exc:
                return exc


async def _samples(sim: ToledoSim, *, unit: str | None = "kg") -> list[Sample]:
    result = await _poll(sim, unit=unit)
    assert isinstance(result, list), result
    return result


async def test_driver_samples_stable_weight() -> None:
    samples = await _samples(ToledoSim(weight=12.34, tare=1.0))
    weight, tare = samples
    assert (weight.value, weight.quality) == (12.34, Quality.GOOD)
    assert tare.value == 1.0


async def test_motion_and_out_of_range() -> None:
    sim = ToledoSim()
    sim.faults = {Fault.UNSTABLE}
    samples = await _samples(sim)
    assert (samples[0].quality, samples[0].reason) == (Quality.UNCERTAIN, Reason.NOT_STABLE)
    sim.faults = {Fault.OVERLOAD}
    samples = await _samples(sim)
    assert (samples[0].value, samples[0].reason) == (None, Reason.UNITS_EXCEEDED)


async def test_noise_and_bad_checksums() -> None:
    sim = ToledoSim(weight=3.21)
    sim.faults = {Fault.NOISE}
    samples = await _samples(sim)
    assert samples[0].value == 3.21
    sim.faults = {Fault.BAD_CRC}
    result = await _poll(sim)
    assert isinstance(result, DeviceTimeout)


async def test_silent_scale_raises_instead_of_repeating() -> None:
    sim = ToledoSim()
    with SimLine(sim) as line:
        bus = SerialBus(LineSettings(line.path, 9600))
        async with bus, ToledoDriver("scale", bus) as drv:
            await _arrival(drv, 0)
            assert (await drv.read())[0].value == 12.34
            sim.faults = {Fault.SILENT}
            # let a frame already on the wire land, drain it, then a silent window
            await asyncio.sleep(0.05)
            with contextlib.suppress(DeviceTimeout):
                await drv.read()
            await asyncio.sleep(0.1)
            with pytest.raises(DeviceTimeout):
                await drv.read()


async def test_unit_mismatch() -> None:
    samples = await _samples(ToledoSim(kg=False), unit="kg")
    assert (samples[0].quality, samples[0].reason) == (Quality.BAD, Reason.CONFIG_ERROR)
