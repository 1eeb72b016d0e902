"""The stall monitor sees the event loop blocked, and by how long (a lower bound)."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.common.stall import LATENESS_BUCKETS, StallMonitor
from tests.eventually import eventually


async def test_a_blocked_loop_is_measured() -> None:
    monitor = StallMonitor(0.01, threshold=0.1)
    task = asyncio.create_task(monitor.run(), name="loop-stall")
    try:
        await eventually(lambda: monitor.stats.ticks >= 3, "the timer running", within=5)
        assert monitor.stats.stalls == 0
        time.sleep(0.3)  # noqa: ASYNC251 — the defect under test: a call that blocks the loop
        ticks = monitor.stats.ticks
        await eventually(lambda: monitor.stats.ticks > ticks, "the timer again", within=5)
        assert 0.3 - monitor.interval <= monitor.stats.max_s
        assert monitor.stats.stalls == 1, "one stall counted once, not caught up tick by tick"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert monitor._handle is None, "the timer stops with the task"


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError):
        StallMonitor(0)


async def test_lateness_is_counted_per_bucket_so_a_window_shows_its_longest_stall() -> None:
    monitor = StallMonitor(0.005)
    task = asyncio.create_task(monitor.run(), name="stall")
    try:
        await eventually(lambda: monitor.stats.ticks >= 3, "ticks before the stall")
        before = list(monitor.stats.counts)
        time.sleep(0.12)  # noqa: ASYNC251 — blocks the loop: the next timer is late
        await eventually(lambda: monitor.stats.ticks >= sum(before) + 2, "ticks after it")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    gained = [a - b for a, b in zip(monitor.stats.counts, before, strict=True)]
    top = max(i for i, n in enumerate(gained) if n)
    assert top == len(LATENESS_BUCKETS) or LATENESS_BUCKETS[top] >= 0.12 - monitor.interval
    assert sum(monitor.stats.counts) == monitor.stats.ticks
