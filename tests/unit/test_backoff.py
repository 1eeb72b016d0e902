"""The one back-off (drivers/backoff.py): its bounds, and each user's documented rule."""

from __future__ import annotations

import asyncio
import math
import random
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.backoff import Backoff
from drivers.base import DeviceUnreachable, Sample, utc_now_us
from gateway.acquisition.poller import BACKOFF_CAP_S, DevicePoller
from gateway.metrology.pipeline import DeviceMetrology
from tests.unit.ops_support import FakeClock, one_device_config

seconds = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)
jitters = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@given(
    initial=seconds,
    cap=seconds,
    jitter=jitters,
    seed=st.integers(0, 2**32),
    runs=st.lists(st.integers(1, 80), min_size=1, max_size=4),
)
def test_every_delay_lies_within_its_step_and_the_cap(
    initial: float, cap: float, jitter: float, seed: int, runs: list[int]
) -> None:
    b = Backoff(initial, cap, jitter=jitter, rng=random.Random(seed))
    for failures in runs:  # several outages, each ended by a success
        for n in range(1, failures + 1):
            step = min(cap, initial * 2.0 ** (n - 1))
            delay = b.next_delay()
            assert (1 - jitter) * step <= delay <= step <= cap
            assert b.failures == n and b.delay == delay
        b.reset()
        assert b.failures == 0 and b.delay == 0.0


@given(initial=st.floats(min_value=1e-3, max_value=1e300), jitter=jitters)
def test_thousands_of_failures_stay_at_the_cap(initial: float, jitter: float) -> None:
    cap = 1e308  # doubling past it would overflow to inf
    b = Backoff(initial, cap, jitter=jitter, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(3000)]
    assert all(math.isfinite(d) and d <= cap for d in delays)
    assert delays[-1] >= (1 - jitter) * cap


def test_without_jitter_the_steps_are_exact_and_reset_starts_over() -> None:
    b = Backoff(1.0, 8.0, jitter=0)
    assert [b.next_delay() for _ in range(6)] == [1, 2, 4, 8, 8, 8]
    b.reset()
    assert b.next_delay() == 1.0


def test_a_seeded_rng_gives_the_same_delays() -> None:
    def delays(seed: int) -> list[float]:
        b = Backoff(0.5, 60.0, rng=random.Random(seed))
        return [b.next_delay() for _ in range(10)]

    assert delays(7) == delays(7) != delays(8)


def test_remaining_follows_the_injected_clock() -> None:
    clock = FakeClock(100.0)
    b = Backoff(2.0, 10.0, jitter=0, clock=clock)
    assert b.remaining() == 0.0
    assert b.next_delay() == 2.0 and b.until == 102.0
    clock.now = 101.5
    assert b.remaining() == 0.5
    clock.now = 102.0
    assert b.remaining() == 0.0


@pytest.mark.parametrize(
    ("initial", "cap", "jitter"),
    [(-1, 1, 0.5), (1, -1, 0.5), (math.nan, 1, 0.5), (1, math.inf, 0.5), (1, 1, 1.5), (1, 1, -0.1)],
)
def test_nonsense_parameters_are_refused(initial: float, cap: float, jitter: float) -> None:
    with pytest.raises(ValueError, match="back-off"):
        Backoff(initial, cap, jitter=jitter)


# -- the poller's rule (docs/architecture.md): jittered, doubling up to 60 s ------------------


class DeadDriver:
    """A driver (satisfies drivers.base.Driver) whose device never answers."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.endpoint = f"test://{device_id}"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def read(self) -> list[Sample]:
        raise DeviceUnreachable(self.device_id, self.endpoint, "no answer")

    def describe_plan(self) -> list[str]:
        return ["one request"]

    def identity(self) -> dict[str, str]:
        return {}


async def test_a_failing_device_backs_off_doubling_up_to_60_s(tmp_path: Path) -> None:
    loaded = one_device_config(tmp_path, poll="1s")
    dev = loaded.config.devices[0]
    clock = FakeClock()
    waits: list[float] = []

    async def sleep(delay: float) -> None:
        waits.append(delay)
        clock.now += delay
        if len(waits) == 12:
            raise asyncio.CancelledError  # end the endless loop after twelve polls

    metro = DeviceMetrology(dev.id, [(str(p.id), p, None) for p in dev.points], dev, {}, utc_now_us)
    poller = DevicePoller(
        dev, DeadDriver(dev.id), metro, lambda kind, recs: None,
        monotonic=clock, sleep=sleep, rng=random.Random(3),
    )  # fmt: skip
    with pytest.raises(asyncio.CancelledError):
        await poller.run()
    assert poller.health.failures == 12 and poller.health.state == "failing"
    period = 1.0
    for n, wait in enumerate(waits, start=1):
        step = min(BACKOFF_CAP_S, period * 2 ** (n - 1))
        # the back-off, then the next slot of the fixed-rate grid (at most one period later)
        assert step / 2 <= wait <= step + period, (n, wait)
    assert max(waits) <= BACKOFF_CAP_S + period
    assert poller.health.missed == 0  # slots skipped while failing are not "missed"
