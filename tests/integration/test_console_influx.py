"""The console over a real InfluxDB 1.x: the same content as the SQLite tests, read
through InfluxQL, gives the same views; long ranges come back downsampled."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from supervision.config import load_config
from supervision.console.app import make_app
from supervision.console.service import Console
from tests.console_support import StoreWriter, console_yaml, reading
from tests.db_services import InfluxDB1
from tests.unit.test_console_app import fill, login

pytestmark = pytest.mark.services
DB = "mg"
S = 1_000_000


def influx_console(tmp: Path, influx: InfluxDB1, extra: str = "") -> Console:
    store = f"{{kind: influxdb_v1, url: '{influx.url}', database: {DB}}}"
    return Console.from_config(load_config(console_yaml(tmp, store, extra=extra)))


async def test_views_over_influxdb(tmp_path: Path, influx: InfluxDB1) -> None:
    port = int(influx.url.rsplit(":", 1)[1])
    fill(tmp_path, StoreWriter(influx=(port, DB)))
    extra = "  points:\n    - {match: 'gw-n/scale/mass', lower: 9.5, upper: 11.0}\n"
    async with TestClient(
        TestServer(make_app(influx_console(tmp_path, influx, extra)), host="127.0.0.1")
    ) as c:
        await login(c)
        fleet = await (await c.get("/fleet")).text()
        row = fleet.split('data-gateway="gw-n"', 1)[1].split("</tr>", 1)[0]
        assert "online" in row and "100.00 %" in row and "synchronised" in row
        assert "metrogate 0.1.0 sha256:abababababab" in row
        # the forgery filed twice (two InfluxDB points, one digest) counts once
        s_row = fleet.split('data-gateway="gw-s"', 1)[1].split("</tr>", 1)[0]
        assert "<td>1 / 1 / 1</td><td>1 / 1</td>" in s_row
        risk = await (await c.get("/risk")).text()
        assert "gw-s: seq ↺2; gw-s: log 4…" in risk
        inst = await (await c.get("/instruments")).text()
        assert 'data-instrument="WT-1" data-status="expired"' in inst and "NIM" in inst
        page = await (await c.get("/point/gw-n/scale/mass?range=24h")).text()
        m = re.search(r'id="point-data">(.*?)</script>', page)
        assert m
        d = json.loads(m.group(1))
        assert d["raw"] and len(d["samples"]) == 600
        assert len([x for x in d["markers"] if x[2] == "fail"]) == 10
        assert any(1 in v[2] for v in d["chart"]["violations"])
        assert "fail: 10" in page and "pass: 590" in page
        first = re.search(r'<tr data-kind="(\w+)" data-name="([^"]+)"', risk)
        assert first and first.groups() == ("site", "south")
        audit = await (await c.get("/audit/gw-s")).text()
        assert audit.count('data-check="ok"') == 3
        alarms = await (await c.get("/alarms")).text()
        assert 'data-alarm="scale/mass/high"' in alarms and "active, unacknowledged" in alarms
        assert (await c.get("/point/gw-n/scale/nope")).status == 404
        assert (await c.get("/audit/nope")).status == 404


async def test_ninety_days_come_back_downsampled(tmp_path: Path, influx: InfluxDB1) -> None:
    port = int(influx.url.rsplit(":", 1)[1])
    w = StoreWriter(influx=(port, DB))
    t0 = time.time_ns() // 1000 - 89 * 86400 * S
    rows: list[dict[str, Any]] = [
        reading(t0 + i * 600 * S, "d", "p", float(i % 50)) for i in range(89 * 144)
    ]
    w.readings("g", "s", rows)
    console = influx_console(tmp_path, influx)
    end = time.time_ns()
    series = console.reader.series("g", "d", "p", end - 90 * 86400 * 10**9, end, 1500)
    assert not series.raw and series.total == len(rows) and series.bucket_s == 7200
    assert 0 < len(series.samples) <= 1500 and sum(s.n for s in series.samples) == len(rows)
    short = console.reader.series("g", "d", "p", end - 86400 * 10**9, end, 1500)
    assert short.raw and short.total == len(short.samples) and 143 <= short.total <= 144


async def test_an_influxdb_v2_store_is_read_through_influxql_compatibility(
    tmp_path: Path, influx: InfluxDB1
) -> None:
    """``store.kind: influxdb_v2``: InfluxQL on ``/query`` with the bucket as database and
    the token as ``Authorization: Token`` (v1 compatibility). InfluxDB 1.x answers the same
    API (without checking the token), so the request path is exercised here."""
    port = int(influx.url.rsplit(":", 1)[1])
    fill(tmp_path, StoreWriter(influx=(port, DB)))
    store = f"{{kind: influxdb_v2, url: '{influx.url}', bucket: {DB}, token: t0k3n}}"
    console = Console.from_config(load_config(console_yaml(tmp_path, store)))
    assert console.reader.name == f"influxdb {influx.url} {DB}"
    async with TestClient(TestServer(make_app(console), host="127.0.0.1")) as c:
        await login(c)
        fleet = await (await c.get("/fleet")).text()
        assert 'data-gateway="gw-n"' in fleet and 'data-gateway="gw-s"' in fleet
