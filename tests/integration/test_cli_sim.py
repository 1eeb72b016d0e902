"""`metrogate sim`: every kind's simulator, found through the driver registry, answers
the driver the same registry builds for the device."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from drivers.base import Driver, DriverError, Quality, Sample
from gateway.acquisition.build import build_drivers
from gateway.cli.simulate import run_simulators
from gateway.config.loader import load_config
from gateway.config.models.registry import KINDS

# ingest.yaml configures the platform ingest service, not a gateway
EXAMPLES = sorted(
    p
    for p in (Path(__file__).resolve().parents[2] / "config" / "examples").glob("*.yaml")
    if p.name != "ingest.yaml"
)


async def read_good(driver: Driver, device: str, points: set[str]) -> list[Sample]:
    """Polls until every point has a sample: one poll that got a reply (a streaming scale
    needs its first frame first; a subscription delivers each point's first value by
    itself, after the poll that connected)."""
    got: dict[str, Sample] = {}
    last: Exception | None = None
    async with asyncio.timeout(10):
        for _ in range(500):
            try:
                for s in await driver.read():
                    got.setdefault(s.point, s)
                if set(got) >= points:
                    return list(got.values())
            except DriverError as exc:
                if getattr(driver, "frames", None) != 0:
                    raise  # only a stream that has not started yet is worth waiting for
                last = exc
            await asyncio.sleep(0.02)
    raise AssertionError(f"{device}: no reply: {last}, got {sorted(got)}")


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
async def test_every_simulated_device_reads_good(example: Path) -> None:
    loaded = load_config(example)
    devices = [d for d in loaded.config.devices if d.enabled]
    async with run_simulators(loaded.config, free_ports=True) as sims:
        served = {d for s in sims for d in s.devices}
        # every device whose kind has a simulator (generic ASCII instruments have none:
        # their replies follow no protocol)
        assert served == {d.id for d in devices if KINDS[d.driver].simulator is not None}
        assert {s.kind for s in sims} == {KINDS[d.driver].name for d in devices if d.id in served}
        async with AsyncExitStack() as stack:
            drivers = await build_drivers(loaded, stack, clock=lambda: 1)
            for dev in devices:
                if dev.id not in served:
                    continue
                wanted = {str(p.id) for p in dev.points}
                samples = await read_good(drivers[dev.id], dev.id, wanted)
                assert sorted(s.point for s in samples) == sorted(wanted)
                assert [s for s in samples if s.quality is not Quality.GOOD] == []
