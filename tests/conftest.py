"""Fixtures shared by every test: real services, and a leak check on async tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.eventually import eventually, eventually_blocking
from tests.services import Mosquitto

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real Mosquitto on a free loopback port; ``stop()``/``start()`` inject outages."""
    with Mosquitto(tmp_path / "mosquitto") as broker:
        yield broker


@pytest.fixture
async def no_task_leak() -> AsyncIterator[None]:
    """Fail an async test that leaves tasks running behind it (after 2 s to finish)."""
    before = set(asyncio.all_tasks())
    yield
    current = asyncio.current_task()

    def left() -> list[asyncio.Task[object]]:
        return [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]

    try:
        await eventually(lambda: not left(), "the test's tasks to finish", within=2.0)
    except AssertionError:
        if tasks := left():  # (one may have finished since)
            names = ", ".join(sorted(t.get_name() for t in tasks))
            for t in tasks:
                t.cancel()
            pytest.fail(f"test left {len(tasks)} task(s) running: {names}")


@pytest.fixture(autouse=True)
def no_thread_leak() -> Iterator[None]:
    """Fail a test that leaves non-daemon threads behind it (after 2 s to finish)."""
    before = set(threading.enumerate())
    yield

    def left() -> list[threading.Thread]:
        # asyncio_N threads are the event loop's default executor, closed with the loop
        return [
            t
            for t in set(threading.enumerate()) - before
            if t.is_alive() and not t.daemon and not t.name.startswith("asyncio_")
        ]

    try:
        eventually_blocking(lambda: not left(), "the test's threads to finish", within=2.0)
    except AssertionError:
        if threads := left():  # (one may have finished since)
            pytest.fail(f"test left threads running: {', '.join(t.name for t in threads)}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # every async test gets the task-leak check
    for item in items:
        if isinstance(item, pytest.Function) and asyncio.iscoroutinefunction(item.obj):
            item.fixturenames.insert(0, "no_task_leak")
