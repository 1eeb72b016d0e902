"""What an instrument says about its own values reaches the store: a meter's status
flags and an OPC UA server's timestamp travel from the driver's sample to the wire,
through the ingest's checks, into InfluxDB line protocol and the SQLite store."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]  # no types-jsonschema in the dev deps

from drivers.base import Quality, Reason, Sample
from gateway.wire.reading import Reading, to_wire
from supervision.model import check_reading, parse_document
from supervision.sinks.line_protocol import batch_lines, reading_lines
from supervision.sinks.sqlite import SqliteSink

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "gateway/wire/schema/batch.schema.json").read_text()
)
T0 = 1_767_225_600_000_000


def _body(readings: list[dict[str, object]]) -> dict[str, object]:
    return {
        "v": 1, "type": "data", "gateway": "gw", "site": "s", "seq": 1, "sealed": T0,
        "readings": readings,
    }  # fmt: skip


def test_sample_flags_and_server_time_reach_the_wire() -> None:
    meter = Sample("volume", 12.5, 1250, Quality.GOOD, None, T0, ("valve_closed", "status:magnet"))
    plc = Sample("temp", 80.25, 80.25, Quality.GOOD, None, T0, server_ts_us=T0 + 40)
    wire = [to_wire(Reading.from_sample("d", s, "u")) for s in (meter, plc)]
    assert wire[0]["flags"] == ["valve_closed", "status:magnet"] and "server_ts" not in wire[0]
    assert wire[1]["server_ts"] == T0 + 40 and "flags" not in wire[1]
    jsonschema.validate(_body(wire), SCHEMA)
    # the reading's own list: rules append to it, the sample stays what the driver said
    r = Reading.from_sample("d", meter, "m3")
    r.degrade(Quality.UNCERTAIN, Reason.SENSOR_FAILURE, "stale")
    assert r.flags == ["valve_closed", "status:magnet", "stale"]
    assert meter.flags == ("valve_closed", "status:magnet")


def test_unknown_flags_and_bad_server_times_are_refused_by_the_schema() -> None:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    base = {"ts": T0, "device": "d", "point": "p", "value": 1.0, "quality": "good"}
    assert validator.is_valid(_body([{**base, "flags": ["battery_low", "status:x-1"]}]))
    assert not validator.is_valid(_body([{**base, "flags": ["flow_sensor_fault"]}]))
    assert not validator.is_valid(_body([{**base, "server_ts": -1}]))
    assert not validator.is_valid(_body([{**base, "server_ts": 1.5}]))


def test_the_server_time_is_stored() -> None:
    reading = {"ts": T0, "device": "plc", "point": "temp", "value": 80.25, "raw": 80.25,
               "quality": "good", "server_ts": T0 + 40}  # fmt: skip
    row = check_reading(reading, 0)
    assert row.server_ts_us == T0 + 40
    batch = parse_document(_body([reading, reading | {"ts": T0 + 1}]), "s", "gw", "data")
    lines = batch_lines(batch)
    assert lines[0].endswith(f",server_ts={T0 + 40}i,seq=1i {T0}000"), lines[0]
    # the one-pass encoder (a reading like one already checked) writes the same line
    again = reading_lines("s", "gw", "seq=1i", [reading, reading | {"ts": T0 + 1}])
    assert again == lines[:2]
    without = reading_lines(
        "s", "gw", "seq=1i", [{k: v for k, v in reading.items() if k != "server_ts"}]
    )
    assert "server_ts" not in without[0]


async def test_sqlite_keeps_the_server_time_and_upgrades_an_old_store(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    old = sqlite3.connect(path)  # a store made before readings had a server time
    old.execute(
        "CREATE TABLE readings (site TEXT NOT NULL, gateway TEXT NOT NULL, device TEXT NOT NULL, "
        "point TEXT NOT NULL, instrument TEXT, unit TEXT, ts_us INTEGER NOT NULL, value, raw, "
        "quality TEXT NOT NULL, reason TEXT, flags TEXT, U REAL, k REAL, verdict TEXT, "
        "certificate TEXT, seq INTEGER NOT NULL, PRIMARY KEY (gateway, device, point, ts_us)) "
        "WITHOUT ROWID"
    )
    old.close()
    sink = SqliteSink(path)
    await sink.open()
    try:
        reading = {"ts": T0, "device": "plc", "point": "temp", "value": 1.0, "quality": "good",
                   "server_ts": T0 + 40, "flags": ["battery_low"]}  # fmt: skip
        batch = parse_document(_body([reading]), "s", "gw", "data")
        await sink.write([sink.encode(batch)])
    finally:
        await sink.aclose()
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT flags, server_ts_us FROM readings").fetchall()
    finally:
        db.close()
    assert rows == [("battery_low", T0 + 40)]


def test_degrade_only_ever_lowers_the_quality_and_keeps_the_reason_of_the_worst() -> None:
    order = [Quality.GOOD, Quality.UNCERTAIN, Quality.BAD]
    for start in order:
        for new in order:
            r = Reading(T0, "d", "p", 1.0, 1.0, None, start, Reason.SENSOR_FAILURE)
            r.degrade(new, Reason.CLOCK_NOT_SYNCHRONISED)
            worse = order.index(new) > order.index(start)
            assert r.quality is (new if worse else start), (start, new)
            assert r.reason is (Reason.CLOCK_NOT_SYNCHRONISED if worse else Reason.SENSOR_FAILURE)
    wire = to_wire(Reading(T0, "d", "p", 1.0, None, None, Quality.BAD, Reason.INVALID_VALUE))
    assert wire["quality"] == "bad" and type(wire["quality"]) is str
    assert wire["reason"] == "invalid_value" and type(wire["reason"]) is str
