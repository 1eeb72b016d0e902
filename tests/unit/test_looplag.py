"""The event-loop lag monitor: buckets, the rolling maximum, and a real stall measured."""

from __future__ import annotations

import asyncio
import time

from gateway.ops.looplag import LAG_BUCKETS, LoopLag


def test_buckets_and_the_maximum_of_the_last_window() -> None:
    lag = LoopLag(window=10)
    lag.record(0.0001, now=0)
    lag.record(0.004, now=1)  # into the 5 ms bucket
    lag.record(0.002, now=2)
    lag.record(2.0, now=3)  # beyond every bound: +Inf
    assert lag.counts[0] == 1 and lag.counts[LAG_BUCKETS.index(0.005)] == 1
    assert lag.counts[LAG_BUCKETS.index(0.002)] == 1 and lag.counts[-1] == 1
    assert lag.samples == 4 and lag.max_since_start == 2.0
    assert lag.recent_max(now=5) == 2.0
    assert lag.recent_max(now=13.5) == 0.0  # everything older than the window
    lag.record(0.003, now=14)
    lag.record(0.001, now=15)
    assert lag.recent_max(now=15) == 0.003
    assert lag.recent_max(now=24.5) == 0.001


def stall(seconds: float) -> None:
    """A callback that holds the event loop (what the monitor must see)."""
    time.sleep(seconds)


async def test_a_blocking_callback_shows_as_lag() -> None:
    lag = LoopLag(interval=0.005)
    task = asyncio.create_task(lag.run(), name="loop-lag")
    try:
        await asyncio.sleep(0.02)
        asyncio.get_running_loop().call_soon(stall, 0.05)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if lag.max_since_start >= 0.03:
                break
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert lag.max_since_start >= 0.03
    assert lag.recent_max() == lag.max_since_start
