"""Devices are spread over their period: their first polls are not due at one instant."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.daemon import Gateway
from tests.unit.ops_support import HangableDriver, one_device_config


async def test_the_first_polls_are_spread_over_the_period(tmp_path: Path) -> None:
    loaded = one_device_config(tmp_path, poll="2s", devices=4)
    gw = Gateway(loaded)
    drivers = {d.id: HangableDriver(d.id, ["p0"]) for d in loaded.config.devices}
    await gw._build_pollers(drivers)  # type: ignore[arg-type]
    # a quarter of the period apart, at most one second in all
    assert [p.phase for p in gw.pollers.values()] == [0.0, 0.25, 0.5, 0.75]


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
