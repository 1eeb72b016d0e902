"""Fixtures of the supervision-side integration tests: broker and databases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.db_services import InfluxDB1, VictoriaMetrics
from tests.services import Mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real Mosquitto on a free loopback port (see tests/services.py)."""
    with Mosquitto(tmp_path / "mosquitto") as m:
        yield m


@pytest.fixture
def influx(tmp_path: Path) -> Iterator[InfluxDB1]:
    """A real InfluxDB 1.x on free loopback ports, data in the test's temp dir."""
    i = InfluxDB1(tmp_path / "influxdb")
    i.start()
    yield i
    i.close()


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    """A real VictoriaMetrics (v2 write API) on a free loopback port."""
    v = VictoriaMetrics(tmp_path / "victoria")
    v.start()
    yield v
    v.close()
