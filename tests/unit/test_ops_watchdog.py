"""sd_notify over a real datagram socket; the watchdog withholds pings when a loop hangs."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.base import utc_now_us
from gateway.acquisition.poller import DevicePoller
from gateway.config.loader import LoadedConfig
from gateway.metrology.pipeline import DeviceMetrology
from gateway.ops.sdnotify import Notifier
from gateway.ops.watchdog import FAILING_ALLOWANCE_S, Watchdog
from tests.eventually import eventually
from tests.unit.ops_support import FakeClock, HangableDriver, NotifySocket, one_device_config


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    s = NotifySocket(tmp_path)
    yield s
    s.close()


class Gate:
    """The poller's sleep: returns when the test opens the gate (one poll per opening)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def __call__(self, delay: float) -> None:
        self.event.clear()
        async with asyncio.timeout(10):
            await self.event.wait()

    def open(self) -> None:
        self.event.set()


class View:
    """The parts of a Gateway the watchdog reads, around real DevicePollers."""

    def __init__(self, pollers: dict[str, DevicePoller]) -> None:
        self.pollers = pollers


def make_poller(
    loaded: LoadedConfig, index: int, clock: FakeClock, gate: Gate
) -> tuple[DevicePoller, HangableDriver]:
    dev = loaded.config.devices[index]
    driver = HangableDriver(dev.id, ["p0"])
    points = [(str(p.id), p, getattr(p, "unit", None)) for p in dev.points]
    metro = DeviceMetrology(dev.id, points, dev, {}, utc_now_us)
    poller = DevicePoller(dev, driver, metro, lambda kind, recs: None, monotonic=clock, sleep=gate)
    return poller, driver


def test_notifier_sends_datagrams(notify_socket: NotifySocket) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "20000000"})
    assert n.enabled and n.watchdog_interval == 10.0
    assert n.ready("3 devices") and n.watchdog() and n.reloading()
    got = notify_socket.messages()
    assert got[0] == "READY=1\nSTATUS=3 devices"
    assert got[1] == "WATCHDOG=1"
    assert got[2].startswith("RELOADING=1\nMONOTONIC_USEC=")


def test_notifier_outside_systemd_is_a_noop() -> None:
    n = Notifier.from_env({})
    assert not n.enabled and n.watchdog_interval is None
    assert n.ready() is False and n.watchdog() is False


def test_watchdog_usec_for_another_pid_is_ignored(notify_socket: NotifySocket) -> None:
    env = {
        "NOTIFY_SOCKET": str(notify_socket.path),
        "WATCHDOG_USEC": "1000000",
        "WATCHDOG_PID": str(os.getpid() + 1),
    }
    assert Notifier.from_env(env).watchdog_interval is None


async def test_watchdog_stops_pinging_when_a_poll_loop_hangs(
    tmp_path: Path, notify_socket: NotifySocket, caplog: pytest.LogCaptureFixture
) -> None:
    loaded = one_device_config(tmp_path, poll="1s", devices=2)
    clock, gate = FakeClock(), Gate()
    p1, d1 = make_poller(loaded, 0, clock, gate)
    p2, _ = make_poller(loaded, 1, clock, gate)
    publisher_alive = True
    dog = Watchdog(
        View({"dev1": p1, "dev2": p2}),
        Notifier(str(notify_socket.path)),
        interval=5.0,
        alive=lambda: publisher_alive,
        monotonic=clock,
    )
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(p.run(), name=f"poller-{i}") for i, p in enumerate((p1, p2))]
        await eventually(
            lambda: p1.health.polls == 1 and p2.health.polls == 1, "first polls", within=5
        )
        assert dog.tick().healthy
        assert notify_socket.messages() == ["WATCHDOG=1"]

        # both loops keep polling: 8 s later, still pinging
        clock.now += 8
        gate.open()
        await eventually(
            lambda: p1.health.polls == 2 and p2.health.polls == 2, "second polls", within=5
        )
        assert dog.tick().healthy
        assert notify_socket.messages() == ["WATCHDOG=1"]

        # inject the hang: dev1's next read never returns
        d1.hang = True
        clock.now += 1
        gate.open()
        await eventually(
            lambda: d1.reads == 3 and p2.health.polls == 3, "dev1 stuck in its read", within=5
        )
        clock.now += 9  # 9 s since dev1 started the hung poll: within max(3×1 s, 10 s)
        assert dog.tick().healthy
        assert notify_socket.messages() == ["WATCHDOG=1"]
        clock.now += 2  # 11 s: over the limit
        gate.open()  # dev2 polls on, so only dev1 is stuck
        await eventually(lambda: p2.health.polls == 4, "dev2 still polling", within=5)
        with caplog.at_level(logging.ERROR, logger="metrogate.watchdog"):
            verdict = dog.tick()
            dog.tick()
        assert not verdict.healthy
        assert len(verdict.stuck) == 1 and verdict.stuck[0].startswith("device dev1:")
        assert notify_socket.messages() == [], "a hung loop must not be pinged for"
        assert len([r for r in caplog.records if "withholding" in r.message]) == 1  # once
        for t in tasks:
            t.cancel()

    # a dead publisher task alone also stops the pings
    publisher_alive = False
    p1.health.progress_monotonic = p2.health.progress_monotonic = clock.now
    verdict = dog.tick()
    assert not verdict.healthy and verdict.stuck == ("publisher task not running",)
    assert notify_socket.messages() == []


def test_failing_device_in_backoff_is_not_a_hang(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    loaded = one_device_config(tmp_path, poll="1s")
    clock = FakeClock()
    poller, _ = make_poller(loaded, 0, clock, Gate())
    poller.health.progress_monotonic = clock.now
    dog = Watchdog(
        View({"dev1": poller}), Notifier(str(notify_socket.path)), interval=5.0, monotonic=clock
    )
    poller.health.state = "failing"
    clock.now += 50  # a failing device waits up to 60 s between attempts
    assert dog.tick().healthy
    clock.now += 10 + FAILING_ALLOWANCE_S
    assert not dog.tick().healthy
    poller.health.state = "ok"
    poller.health.progress_monotonic = clock.now
    assert dog.tick().healthy
    assert notify_socket.messages() == ["WATCHDOG=1", "WATCHDOG=1"]


async def test_run_pings_every_interval(tmp_path: Path, notify_socket: NotifySocket) -> None:
    loaded = one_device_config(tmp_path)
    clock = FakeClock()
    poller, _ = make_poller(loaded, 0, clock, Gate())
    poller.health.progress_monotonic = clock.now
    delays: list[float] = []

    async def sleep(d: float) -> None:
        delays.append(d)
        if len(delays) == 3:
            raise asyncio.CancelledError  # stop the endless loop after three rounds
        await asyncio.sleep(0)

    dog = Watchdog(
        View({"dev1": poller}), Notifier(str(notify_socket.path)), interval=7.5,
        monotonic=clock, sleep=sleep,
    )  # fmt: skip
    with pytest.raises(asyncio.CancelledError):
        await dog.run()
    assert delays == [7.5, 7.5, 7.5]
    assert notify_socket.messages() == ["WATCHDOG=1"] * 3


def test_interval_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="interval"):
        Watchdog(View({}), Notifier(None), interval=0)
