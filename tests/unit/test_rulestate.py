"""Rule state that cannot be written is logged once and kept, never raised."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from drivers.base import utc_now_us
from gateway.acquisition.rulestate import RuleStore
from gateway.metrology.pipeline import DeviceMetrology
from tests.unit.ops_support import one_device_config


def metrologies(tmp: Path) -> list[DeviceMetrology]:
    out = []
    for dev in one_device_config(tmp, devices=2).config.devices:
        points = [(str(p.id), p, p.unit) for p in dev.points]
        out.append(DeviceMetrology(dev.id, points, dev, {}, utc_now_us))
    return out


async def test_a_failing_write_is_logged_once_and_the_next_save_writes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="metrogate.runtime")
    metros = metrologies(tmp_path)
    blocked = tmp_path / "rules"
    blocked.write_text("a file where the directory should be")  # every write fails
    store = RuleStore(blocked)
    assert store.save(metros[0]) is False
    await store.save_all(metros)  # in a worker thread: must not raise either
    assert store.failures == 3
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2  # one per device, not one per attempt
    blocked.unlink()
    await store.save_all(metros)
    assert sorted(p.name for p in blocked.iterdir()) == ["dev1.json", "dev2.json"]
    assert sum("saved again" in r.getMessage() for r in caplog.records) == 2
    fresh = metrologies(tmp_path)[0]
    store.restore(fresh)
    assert fresh.to_state() == metros[0].to_state()
