"""Whatever fails in one poll costs that device's poll: bad readings with a reason, never a raise.

The drivers here are stand-ins with a scripted failure (an exception no real driver
should raise, which is the point); gateway runs against real peers are in
tests/integration/test_gateway_containment.py.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest

from drivers.base import DeviceTimeout, Quality, Reason, Sample, utc_now_us
from gateway.acquisition.poller import DevicePoller
from gateway.metrology.pipeline import DeviceMetrology
from tests.unit.ops_support import one_device_config

TS = 1_700_000_000_000_000


class ScriptedDriver:
    """A driver (satisfies drivers.base.Driver) whose reads fail while ``fail`` is set."""

    def __init__(self, device_id: str, points: list[str]) -> None:
        self.device_id = device_id
        self.endpoint = f"test://{device_id}"
        self.points = points
        self.fail: BaseException | None = None
        self.serial = "A1"

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
        if self.fail is not None:
            raise self.fail
        return [Sample(p, 2.5, 2.5, Quality.GOOD, None, TS) for p in self.points]

    def describe_plan(self) -> list[str]:
        return ["one request"]

    def identity(self) -> dict[str, str]:
        return {"serial_number": self.serial}


class BrokenMetrology(DeviceMetrology):
    """Calibration and rules that fail while ``broken`` is set (a defect in judging)."""

    broken = False

    def process(self, readings: Any, now_us: int) -> list[dict[str, Any]]:
        if self.broken:
            for r in readings:  # half-way through, as a real defect would leave them
                r.value = -1.0
                r.uncertainty = 0.1
            raise ZeroDivisionError("float division by zero")
        return super().process(readings, now_us)


class Harness:
    def __init__(self, tmp: Path) -> None:
        dev = one_device_config(tmp).config.devices[0]
        points = [(str(p.id), p, p.unit) for p in dev.points]
        self.driver = ScriptedDriver(dev.id, ["p0"])
        self.metrology = BrokenMetrology(dev.id, points, dev, {}, utc_now_us)
        self.emitted: list[tuple[str, list[dict[str, Any]]]] = []
        self.store_fails: Exception | None = None
        self.identities: list[dict[str, str]] = []
        self.identity_fails: Exception | None = None
        self.poller = DevicePoller(
            dev,
            self.driver,
            self.metrology,
            self.emit,
            on_identity=self.identity,
        )

    def emit(self, kind: str, records: list[dict[str, Any]]) -> None:
        if self.store_fails is not None:
            raise self.store_fails
        self.emitted.append((kind, records))

    def identity(self, device: str, identity: dict[str, str]) -> None:
        if self.identity_fails is not None:
            raise self.identity_fails
        self.identities.append(identity)

    def data(self) -> list[dict[str, Any]]:
        return [r for kind, records in self.emitted if kind == "data" for r in records]


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "metrogate.runtime" and r.levelno == level]


async def test_an_unexpected_exception_in_read_is_a_failed_poll(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="metrogate.runtime")
    h = Harness(tmp_path)
    await h.poller.poll_once()
    h.driver.fail = AttributeError("'NoneType' object has no attribute 'replace'")
    for _ in range(3):
        readings = await h.poller.poll_once()
    assert [(r.point, r.value, r.quality, r.reason) for r in readings] == [
        ("p0", None, Quality.BAD, Reason.DEVICE_FAILURE)
    ]
    health = h.poller.health
    assert health.state == "failing" and health.exceptions == {"read": 3}
    assert health.failures == 3 and health.polls == 4
    assert health.last_error == "read: AttributeError: 'NoneType' object has no attribute 'replace'"
    assert h.data()[-1]["quality"] == "bad" and h.data()[-1]["reason"] == "device_failure"
    errors = messages(caplog, logging.ERROR)
    assert len(errors) == 1 and errors[0].exc_info is not None  # once, with its traceback
    assert "test://dev1" in errors[0].getMessage()  # names device and endpoint
    assert len(messages(caplog, logging.DEBUG)) == 2  # while it keeps failing

    h.driver.fail = None
    await h.poller.poll_once()
    await h.poller.poll_once()
    assert health.state == "ok"
    infos = [r.getMessage() for r in messages(caplog, logging.INFO)]
    assert infos == ["device dev1 recovered after 3 failed polls"]
    # a new episode is reported again
    h.driver.fail = AttributeError("again")
    await h.poller.poll_once()
    assert len(messages(caplog, logging.ERROR)) == 2


async def test_an_expected_driver_error_is_logged_once_without_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(tmp_path)
    h.driver.fail = DeviceTimeout("dev1", "test://dev1", "no reply within 0.1s")
    for _ in range(2):
        readings = await h.poller.poll_once()
    assert readings[0].reason is Reason.NO_COMMUNICATION
    (error,) = messages(caplog, logging.ERROR)
    assert error.exc_info is None and h.poller.health.exceptions == {}


async def test_a_failure_while_judging_gives_bad_readings_with_config_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(tmp_path)
    h.metrology.broken = True
    readings = await h.poller.poll_once()
    (r,) = readings
    assert (r.value, r.raw, r.quality, r.reason) == (None, 2.5, Quality.BAD, Reason.CONFIG_ERROR)
    assert r.uncertainty is None  # nothing half-judged goes out as evidence
    assert h.data() == [
        {"ts": TS, "device": "dev1", "point": "p0", "value": None, "quality": "bad",
         "raw": 2.5, "unit": "bar", "reason": "config_error"}
    ]  # fmt: skip
    health = h.poller.health
    assert health.state == "failing" and health.exceptions == {"judge": 1}
    assert health.failures == 0, "the device itself answered: no back-off"
    assert len(messages(caplog, logging.ERROR)) == 1
    h.metrology.broken = False
    await h.poller.poll_once()
    assert health.state == "ok" and h.data()[-1]["quality"] == "good"


async def test_a_failing_store_is_counted_not_raised(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.store_fails = ValueError("one data record seals to 20000000 bytes")
    await h.poller.poll_once()
    await h.poller.poll_once()
    health = h.poller.health
    assert health.lost == 2 and health.exceptions == {"store": 2}
    assert health.state == "failing" and health.last_error is not None
    assert health.last_error.startswith("store: ValueError")
    h.store_fails = None
    await h.poller.poll_once()
    assert health.state == "ok" and health.lost == 2 and len(h.data()) == 1


async def test_a_failing_audit_callback_is_retried_and_the_readings_still_go_out(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    h.identity_fails = OSError(28, "No space left on device")
    await h.poller.poll_once()
    assert len(h.data()) == 1 and h.data()[0]["quality"] == "good"
    assert h.poller.health.exceptions == {"evidence": 1}
    assert h.poller.health.state == "failing"
    h.identity_fails = None
    await h.poller.poll_once()
    await h.poller.poll_once()
    assert h.identities == [{"serial_number": "A1"}]  # handed over once it could be
    assert h.poller.health.state == "ok"


async def test_the_device_task_outlives_every_failure(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    sleeps: list[float] = []
    enough = asyncio.Event()

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) >= 6:
            enough.set()
        await asyncio.sleep(0)

    poller = DevicePoller(
        h.poller.device,
        h.driver,
        h.metrology,
        h.emit,
        sleep=sleep,
        monotonic=lambda: 1000.0,
    )
    h.driver.fail = KeyError("status")
    h.metrology.broken = True
    h.store_fails = RuntimeError("boom")
    task = asyncio.create_task(poller.run(), name="device-under-test")
    async with asyncio.timeout(5):
        await enough.wait()
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert poller.health.polls >= 6
    assert poller.health.exceptions["read"] >= 6 and poller.health.exceptions["store"] >= 6
    assert min(sleeps[1:]) >= 1.0, "a device that fails backs off"
