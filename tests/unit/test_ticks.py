"""The tick batcher: the polls of one tick in one batch, bounded in time and size."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.delivery.ticks import TickBatcher
from tests.eventually import eventually


def poll(device: str, n: int = 2) -> list[dict[str, Any]]:
    return [{"device": device, "point": f"p{i}"} for i in range(n)]


class Store:
    def __init__(self) -> None:
        self.batches: list[tuple[list[dict[str, Any]], str | None]] = []

    def put(self, records: list[dict[str, Any]], stream: str | None) -> None:
        self.batches.append((records, stream))


async def test_polls_within_linger_are_one_batch_in_the_order_they_came() -> None:
    store = Store()
    ticks = TickBatcher(store.put, linger=0.02, max_records=100)
    task = asyncio.create_task(ticks.run(), name="ticks")
    try:
        ticks.add(poll("dev1"), "dev1")
        ticks.add(poll("dev2"), "dev2")
        ticks.add(poll("dev1"), "dev1")
        assert store.batches == []  # still open
        await eventually(lambda: len(store.batches) == 1, "the first tick sealed")
        ticks.add(poll("dev3"), "dev3")
        await eventually(lambda: len(store.batches) == 2, "the second tick sealed")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    (first, stream1), (second, stream2) = store.batches
    assert [r["device"] for r in first] == ["dev1"] * 2 + ["dev2"] * 2 + ["dev1"] * 2
    assert stream1 is not None and stream1.startswith("set:")
    assert [r["device"] for r in second] == ["dev3"] * 2 and stream2 == "dev3"
    assert ticks.batches == 2


def test_a_full_batch_goes_at_once_and_flush_seals_the_rest() -> None:
    store = Store()
    ticks = TickBatcher(store.put, linger=10, max_records=4)
    ticks.add(poll("a"), "a")
    ticks.add(poll("b", 3), "b")  # 5 >= 4: sealed now, not in 10 s
    assert len(store.batches) == 1 and len(store.batches[0][0]) == 5
    ticks.add(poll("c"), "c")
    ticks.flush()
    assert [len(r) for r, _ in store.batches] == [5, 2]
    ticks.flush()  # nothing waits: nothing sealed
    assert len(store.batches) == 2


def test_linger_zero_seals_every_poll_alone() -> None:
    store = Store()
    ticks = TickBatcher(store.put, linger=0, max_records=100)
    ticks.add(poll("a"), "a")
    ticks.add(poll("b"), "b")
    assert [s for _, s in store.batches] == ["a", "b"]


def test_the_same_set_of_devices_is_the_same_stream() -> None:
    store = Store()
    ticks = TickBatcher(store.put, linger=10, max_records=100)
    for order in (("a", "b"), ("b", "a"), ("a", "c")):
        for d in order:
            ticks.add(poll(d), d)
        ticks.flush()
    streams = [s for _, s in store.batches]
    assert streams[0] == streams[1] != streams[2]


@pytest.mark.parametrize("bad", [{"linger": -1, "max_records": 1}, {"linger": 0, "max_records": 0}])
def test_bad_settings_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        TickBatcher(Store().put, **bad)
