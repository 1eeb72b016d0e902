"""Devices poll on one grid (polls that end together share a wake-up of the loop); a
poller given a phase delays its first poll and keeps its grid."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.daemon import Gateway
from tests.unit.ops_support import HangableDriver, one_device_config


async def test_the_daemon_starts_every_device_on_one_grid(tmp_path: Path) -> None:
    loaded = one_device_config(tmp_path, poll="2s", devices=4)
    gw = Gateway(loaded)
    drivers = {d.id: HangableDriver(d.id, ["p0"]) for d in loaded.config.devices}
    await gw._build_pollers(drivers)  # type: ignore[arg-type]
    # spread phases doubled the CPU per reading (docs/architecture.md)
    assert [p.phase for p in gw.pollers.values()] == [0.0, 0.0, 0.0, 0.0]


class Enough(Exception):
    """Ends the poll loop under test after a few periods."""


async def test_a_phase_delays_the_first_poll_and_keeps_the_grid(tmp_path: Path) -> None:
    loaded = one_device_config(tmp_path, poll="1s")
    gw = Gateway(loaded)
    await gw._build_pollers({"dev1": HangableDriver("dev1", ["p0"])})  # type: ignore[arg-type]
    poller = gw.pollers["dev1"]
    now = [100.0]
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds
        if len(sleeps) == 3:
            raise Enough

    poller.phase, poller.sleep, poller.monotonic = 0.4, sleep, lambda: now[0]
    with pytest.raises(Enough):
        await poller.run()
    assert sleeps == [0.4, 1.0, 1.0] and poller.health.polls == 2
