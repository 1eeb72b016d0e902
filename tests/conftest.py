"""Fixtures shared by every test: real services, and a leak check on async tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.services import Mosquitto

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real Mosquitto on a free loopback port; ``stop()``/``start()`` inject outages."""
    with Mosquitto(tmp_path / "mosquitto") as broker:
        yield broker


@pytest.fixture
async def no_task_leak() -> AsyncIterator[None]:
    """Fail an async test that leaves tasks running behind it."""
    before = set(asyncio.all_tasks())
    yield
    current = asyncio.current_task()
    deadline = asyncio.get_running_loop().time() + 2.0
    while True:
        left = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
        if not left or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.01)
    if left:
        names = ", ".join(sorted(t.get_name() for t in left))
        for t in left:
            t.cancel()
        pytest.fail(f"test left {len(left)} task(s) running: {names}")


@pytest.fixture(autouse=True)
def no_thread_leak() -> Iterator[None]:
    """Fail a test that leaves non-daemon threads behind it."""
    before = set(threading.enumerate())
    yield
    deadline = 2.0
    import time

    end = time.monotonic() + deadline
    while True:
        # asyncio_N threads are the event loop's default executor, closed with the loop
        left = [
            t
            for t in set(threading.enumerate()) - before
            if t.is_alive() and not t.daemon and not t.name.startswith("asyncio_")
        ]
        if not left or time.monotonic() > end:
            break
        time.sleep(0.01)
    if left:
        pytest.fail(f"test left threads running: {', '.join(t.name for t in left)}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # every async test gets the task-leak check
    for item in items:
        if isinstance(item, pytest.Function) and asyncio.iscoroutinefunction(item.obj):
            item.fixturenames.insert(0, "no_task_leak")
