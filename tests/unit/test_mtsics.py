"""MT-SICS balances: reply parsing and the driver against a simulated balance on a pty."""

from __future__ import annotations

import pytest

from drivers.base import DeviceTimeout, Quality, Reason
from drivers.mtsics import MtSicsDriver, WeightReply, parse_identity, parse_weight
from drivers.serial_line import LineSettings, SerialBus
from simulators.pty import SimLine
from simulators.serial_instruments import Fault, MtSicsSim


def test_parse_weight() -> None:
    assert parse_weight("S S     100.00 g") == WeightReply("S", 100.0, "g")
    assert parse_weight("S D      -0.12 kg") == WeightReply("D", -0.12, "kg")
    assert parse_weight("S +") == WeightReply("+", None, None)
    assert parse_weight("S I") == WeightReply("I", None, None)
    assert parse_weight("EL") == WeightReply("EL", None, None)
    with pytest.raises(ValueError):
        parse_weight("Z A")
    assert parse_identity('I4 A "0123456789"', "I4") == "0123456789"
    assert parse_identity("I4 I", "I4") is None


async def _read(sim: MtSicsSim, command: str = "S", unit: str | None = "g") -> tuple:  # type: ignore[type-arg]
    with SimLine(sim, baudrate=9600) as line:
        async with SerialBus(LineSettings(line.path, 9600, "N")) as bus:
            drv = MtSicsDriver("bal", bus, command=command, unit=unit, timeout=0.3)  # type: ignore[arg-type]
            samples = await drv.read()
            return samples[0], drv.identity()


async def test_identity_and_stable_weight() -> None:
    sample, ident = await _read(MtSicsSim(weight=100.0))
    assert (sample.value, sample.quality, sample.reason) == (100.0, Quality.GOOD, None)
    assert ident == {"serial_number": "0123456789", "software": "3.2.0.5.4"}


@pytest.mark.parametrize(
    ("fault", "command", "quality", "reason", "has_value"),
    [
        (Fault.UNSTABLE, "SI", Quality.UNCERTAIN, Reason.NOT_STABLE, True),
        (Fault.UNSTABLE, "S", Quality.BAD, Reason.NOT_STABLE, False),
        (Fault.OVERLOAD, "S", Quality.UNCERTAIN, Reason.UNITS_EXCEEDED, False),
        (Fault.UNDERLOAD, "SI", Quality.UNCERTAIN, Reason.UNITS_EXCEEDED, False),
        (Fault.BUSY, "S", Quality.BAD, Reason.NOT_STABLE, False),
    ],
)
async def test_balance_states(
    fault: Fault, command: str, quality: Quality, reason: Reason, has_value: bool
) -> None:
    sim = MtSicsSim(weight=5.5)
    sim.faults = {fault}
    sample, _ = await _read(sim, command)
    assert (sample.quality, sample.reason) == (quality, reason)
    assert (sample.value == 5.5) if has_value else sample.value is None


async def test_unit_mismatch_is_bad() -> None:
    sample, _ = await _read(MtSicsSim(weight=1.0, unit="kg"), unit="g")
    assert (sample.value, sample.quality, sample.reason) == (None, Quality.BAD, Reason.CONFIG_ERROR)


async def test_noise_before_reply_is_ignored() -> None:
    sim = MtSicsSim(weight=42.0)
    sim.faults = {Fault.NOISE}
    sample, _ = await _read(sim)
    assert sample.value == 42.0


async def test_silent_and_truncated_balance() -> None:
    for fault in (Fault.SILENT, Fault.TRUNCATED):
        sim = MtSicsSim()
        sim.faults = {fault}
        with pytest.raises(DeviceTimeout if fault is Fault.SILENT else Exception):
            await _read(sim)


async def test_unknown_command_reports_syntax_error() -> None:
    sim = MtSicsSim()
    assert sim.respond("XYZ") == "ES"
    with SimLine(sim) as line:
        async with SerialBus(LineSettings(line.path, 9600)) as bus:
            drv = MtSicsDriver("bal", bus, timeout=0.3)
            await drv.read()
            await drv.read()
    # identity is asked once, then only weights
    assert sim.commands == ["I4", "I5", "S", "S"]
