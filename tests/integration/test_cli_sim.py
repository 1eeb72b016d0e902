"""`metrogate sim`: every kind's simulator, found through the driver registry, answers
the driver the same registry builds for the device."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from drivers.base import DriverError, Quality, Sample
from gateway.acquisition.build import build_drivers
from gateway.cli.simulate import run_simulators
from gateway.config.loader import load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"


async def read_good(driver: object, device: str) -> list[Sample]:
    """One poll that got a reply (a streaming scale needs its first frame first)."""
    async with asyncio.timeout(10):
        for _ in range(500):
            try:
                return await driver.read()  # type: ignore[attr-defined, no-any-return]
            except DriverError as exc:
                if device != "scale-1":
                    raise
                last = exc
            await asyncio.sleep(0.02)
    raise AssertionError(f"{device}: no reply: {last}")


@pytest.mark.parametrize(
    ("example", "kinds"),
    [
        (
            "serial-line.yaml",
            {"modbus_rtu", "modbus_ascii", "dlt645", "mtsics", "toledo_continuous"},
        ),
        ("modbus-tcp.yaml", {"modbus_tcp"}),
    ],
)
async def test_every_simulated_device_reads_good(example: str, kinds: set[str]) -> None:
    loaded = load_config(EXAMPLES / example)
    async with run_simulators(loaded.config, free_ports=True) as sims:
        assert {s.kind for s in sims} == kinds
        served = {d for s in sims for d in s.devices}
        # generic ASCII instruments are not simulated: their replies follow no protocol
        assert served == {d.id for d in loaded.config.devices if d.driver != "ascii"}
        async with AsyncExitStack() as stack:
            drivers = await build_drivers(loaded, stack, clock=lambda: 1)
            for dev in loaded.config.devices:
                if dev.id not in served:
                    continue
                samples = await read_good(drivers[dev.id], dev.id)
                assert sorted(s.point for s in samples) == sorted(str(p.id) for p in dev.points)
                assert [s for s in samples if s.quality is not Quality.GOOD] == []
