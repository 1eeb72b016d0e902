"""``metrogate report`` over real stores: real gateway batches → Mosquitto → ingest →
InfluxDB 1.x and the SQLite store, then the report's numbers checked by hand."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from drivers.base import Quality
from gateway.config.models.metrology import AlarmSeverity
from gateway.metrology.alarms import Alarm
from supervision.report import Report, report_influx, report_sqlite
from tests.db_services import InfluxDB1
from tests.eventually import eventually
from tests.ingest_support import Publisher, RealGateway, make_reading, new_signer, register
from tests.integration.test_ingest import config, in_process
from tests.services import Mosquitto

pytestmark = pytest.mark.services  # the test command installs the servers: never skipped
ROOT = Path(__file__).resolve().parents[2]
DB = "mg"
TEMPS = [10.0, 10.2, 9.9, 10.1, 10.3, 9.8, 10.0, 10.4, 9.7, 10.1]
LIMITS = {"temp": (9.0, 11.0)}


def scenario(gw: RealGateway, t0: int) -> list[tuple[str, bytes]]:
    """The gateway's batches; seq 6 is never sent (a gap). Returns (topic, payload)."""
    out: list[tuple[str, bytes]] = []
    temp = [
        make_reading(t0 + i * 1_000_000, "tt-1", "temp", v, uncertainty=0.05, coverage=2.0,
                     instrument="TT-101", certificate="CAL-1",
                     flags=["out_of_tolerance"] if i in (2, 7) else [],
                     verdict="fail" if i == 4 else "pass")
        for i, v in enumerate(TEMPS)
    ]  # fmt: skip
    out.append(gw.data(temp[:5], t0 + 5_000_000))  # seq 1
    out.append(gw.data(temp[5:], t0 + 10_000_000))  # seq 2
    # TT-102: its certificate ran out between the two readings
    expired = [
        make_reading(t0 + 1, "pt-2", "pressure", 4.0, instrument="TT-102", certificate="CAL-2"),
        make_reading(t0 + 20_000_000, "pt-2", "pressure", 4.1, instrument="TT-102",
                     certificate="CAL-2", flags=["calibration_expired"],
                     quality=Quality.UNCERTAIN),
    ]  # fmt: skip
    out.append(gw.data(expired, t0 + 20_000_000))  # seq 3
    # TT-103: valid readings, but its calibration falls due soon (an audit-trail event)
    out.append(gw.data([make_reading(t0 + 2, "ft-3", "flow", 7.0, instrument="TT-103",
                                     certificate="CAL-3")], t0 + 21_000_000))  # seq 4  # fmt: skip
    due = {"ts": t0 + 3, "event": "calibration_due_soon", "device": "ft-3",
           "instrument": "TT-103", "certificate": "CAL-3", "valid_until": "2099-01-10",
           "days_left": 9, "message": "calibration of TT-103 is due in 9 day(s)"}  # fmt: skip
    gone = {"ts": t0 + 4, "event": "calibration_expired", "device": "lt-4",
            "instrument": "TT-104", "certificate": "CAL-4", "valid_until": "2020-01-01",
            "days_left": -100, "message": "calibration of TT-104 expired 100 days ago"}  # fmt: skip
    entries = [("calibration_due_soon", due, "calibration"),
               ("calibration_expired", gone, "calibration")]  # fmt: skip
    out.append(gw.event(entries, t0 + 22_000_000))  # seq 5
    gw.seq += 1  # seq 6 lost
    alarm = Alarm("tt-1/temp/high", device="tt-1", point="temp", rule="high",
                  severity=AlarmSeverity.HIGH)  # fmt: skip
    recs = alarm.update(True, t0 + 30, 10.4, 10.3) + alarm.acknowledge("op", t0 + 31)
    recs += alarm.update(False, t0 + 32, 10.0, 10.3) + alarm.update(True, t0 + 33, 10.5, 10.3)
    out.append(gw.alarm(recs, t0 + 30_000_000))  # seq 7: raised twice
    return out


def expected_cpk() -> float:
    mean = sum(TEMPS) / len(TEMPS)
    mr = sum(abs(b - a) for a, b in itertools.pairwise(TEMPS)) / (len(TEMPS) - 1)
    return min(11.0 - mean, mean - 9.0) / (3 * mr / 1.128)


def check(rep: Report) -> None:
    pts = {(p.device, p.point): p for p in rep.points}
    temp = pts[("tt-1", "temp")]
    assert (temp.gateway, temp.count, temp.last_value) == ("gw1", 10, 10.1)
    assert temp.oot_rate == pytest.approx(0.3)  # two flagged, one verdict fail
    assert temp.cpk == pytest.approx(expected_cpk(), rel=1e-9)
    mean = sum(TEMPS) / len(TEMPS)
    sd = math.sqrt(sum((x - mean) ** 2 for x in TEMPS) / 9)
    assert temp.ppk == pytest.approx(min(11.0 - mean, mean - 9.0) / (3 * sd), rel=1e-9)
    assert temp.alarms == 2
    assert pts[("pt-2", "pressure")].alarms == 0
    inst = {i.instrument: i for i in rep.instruments}
    assert set(inst) == {"TT-101", "TT-102", "TT-103", "TT-104"}
    assert (inst["TT-101"].status, inst["TT-101"].certificate, inst["TT-101"].readings) == (
        "valid", "CAL-1", 10,
    )  # fmt: skip
    assert (inst["TT-102"].status, inst["TT-102"].expired_readings) == ("expired", 1)
    assert (inst["TT-103"].status, inst["TT-103"].days_left) == ("due_soon", 9)
    t4 = inst["TT-104"]
    assert (t4.status, t4.valid_until, t4.readings, t4.certificate) == (
        "expired", "2020-01-01", 0, "CAL-4",
    )  # fmt: skip
    (g,) = rep.gateways
    assert (g.gateway, g.received, g.expected, g.missing) == ("gw1", 6, 7, [(6, 6)])
    assert g.state == "online" and g.last_seen_ns is not None
    assert sum(d.received for d in rep.days) == 6


async def test_report_from_influxdb_and_sqlite(
    tmp_path: Path, broker: Mosquitto, influx: InfluxDB1
) -> None:
    signer = new_signer()
    register(tmp_path / "keys", "gw1", signer)
    gw = RealGateway(signer, "gw1", "site1", tmp_path / "gw")
    t0 = (time.time_ns() // 1000) - 3_600_000_000  # an hour ago: inside --since 24h
    batches = scenario(gw, t0)
    gw.close()
    status = json.dumps({"v": 1, "state": "online", "gateway": "gw1", "site": "site1",
                         "since": t0, "software": {"version": "1.0"}}).encode()  # fmt: skip
    sqlite_path = tmp_path / "store.sqlite"
    v1 = {"kind": "influxdb_v1", "url": influx.url, "database": DB, "create_database": True}
    to_influx = config(tmp_path, broker, v1, client_id="wi", group="gi")
    to_sqlite = config(tmp_path, broker, {"kind": "sqlite", "path": str(sqlite_path)},
                       client_id="ws", group="gs")  # fmt: skip
    pub = Publisher(broker.port)
    try:
        async with in_process(to_influx) as a, in_process(to_sqlite) as b:
            sent = [*batches, ("metrogate/v1/site1/gw1/status", status)]
            await asyncio.to_thread(pub.publish, sent)
            for ingest in (a, b):
                await eventually(lambda i=ingest: i.counts["acked"] == len(sent), "acks", within=20)
                assert ingest.counts["dead_letter"] == 0, ingest.counts
    finally:
        pub.close()
    since = t0 * 1000 - 10**9
    check(report_influx(influx.url, DB, since_ns=since, limits=LIMITS))
    check(report_sqlite(sqlite_path, since_ns=since, limits=LIMITS))
    # and the command line over the SQLite store, as JSON
    cfg = tmp_path / "report.yaml"
    cfg.write_text(json.dumps(to_sqlite))
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway", "report", "-c", str(cfg), "--since", "2d", "--json",
         "--limit", "temp=9:11"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    temp = next(p for p in doc["points"] if p["point"] == "temp")
    assert temp["alarms_raised"] == 2 and temp["cpk"] == pytest.approx(expected_cpk())
    assert {i["instrument"]: i["status"] for i in doc["instruments"]} == {
        "TT-101": "valid", "TT-102": "expired", "TT-103": "due_soon", "TT-104": "expired",
    }  # fmt: skip
    assert doc["gateways"][0]["missing"] == [[6, 6]]
