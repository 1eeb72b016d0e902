"""The SQLite store: write, idempotent redelivery, read back (a real file, a real thread)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from supervision.model import Status, parse_batch
from supervision.sinks.sqlite import SqliteSink

T0 = 1_767_225_600_000_000


def body(seq: int, readings: list[dict[str, object]], kind: str = "data") -> bytes:
    key = {"data": "readings", "alarm": "alarms", "event": "events"}[kind]
    doc = {"v": 1, "type": kind, "gateway": "gw1", "site": "s1", "seq": seq,
           "sealed": T0 + seq, key: readings}  # fmt: skip
    return json.dumps(doc).encode()


READINGS = [
    {"ts": T0 + 1, "device": "d", "point": "p", "value": 1.5, "raw": 15, "unit": "bar",
     "quality": "good", "flags": ["out_of_tolerance", "spc:rule1"], "U": 0.1, "k": 2,
     "instrument": "I-1", "certificate": "C-1", "verdict": "fail"},
    {"ts": T0 + 2, "device": "d", "point": "q", "value": None, "quality": "bad",
     "reason": "no_communication"},
    {"ts": T0 + 3, "device": "d", "point": "b", "value": True, "quality": "good"},
]  # fmt: skip
ALARM = {
    "ts": T0 + 5, "alarm": "d/p/high", "device": "d", "point": "p", "rule": "high",
    "event": "raised", "state": "active_unacknowledged", "previous": "normal",
    "severity": "high", "active": True, "value": 9.5, "limit": 9.0, "message": "hot",
}  # fmt: skip


def rows(path: Path, q: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return list(db.execute(q))


async def test_write_duplicate_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "store" / "mg.sqlite"
    sink = SqliteSink(path)
    await sink.open()
    try:
        data = sink.encode(parse_batch(body(1, READINGS), "s1", "gw1", "data"))
        alarm = sink.encode(parse_batch(body(2, [ALARM], "alarm"), "s1", "gw1", "alarm"))
        status = sink.encode_status(Status("s1", "gw1", "online", T0, "1.2.3"), 0)
        assert sink.lines_in(data) == 4 and sink.lines_in(alarm) == 2
        await sink.write([data, alarm, status])
        # a redelivery of the same batches (same natural keys) changes nothing
        await sink.write([data, alarm])
    finally:
        await sink.aclose()
    cols = "point, ts_us, value, raw, quality, reason, flags, U, k, instrument, certificate"
    got = rows(path, f"SELECT {cols}, verdict, unit, seq FROM readings ORDER BY ts_us")
    assert got == [
        ("p", T0 + 1, 1.5, 15.0, "good", None, "out_of_tolerance,spc:rule1", 0.1, 2.0,
         "I-1", "C-1", "fail", "bar", 1),
        ("q", T0 + 2, None, None, "bad", "no_communication", None, None, None, None, None,
         None, None, 1),
        ("b", T0 + 3, 1, None, "good", None, None, None, None, None, None, None, None, 1),
    ]  # fmt: skip
    assert rows(path, "SELECT gateway, seq, kind, sealed_us, n FROM batches ORDER BY seq") == [
        ("gw1", 1, "data", T0 + 1, 3),
        ("gw1", 2, "alarm", T0 + 2, 1),
    ]
    ((tags, fields),) = rows(path, "SELECT tags, fields FROM items")
    assert isinstance(tags, str) and isinstance(fields, str)
    assert json.loads(tags) == {"alarm": "d/p/high", "device": "d", "point": "p",
                                "severity": "high"}  # fmt: skip
    f = json.loads(fields)
    assert (f["event"], f["state"], f["previous"], f["value"]) == (
        "raised", "active_unacknowledged", "normal", 9.5,
    )  # fmt: skip
    assert rows(path, "SELECT gateway, state, version, ts_us FROM gateway_status") == [
        ("gw1", "online", "1.2.3", T0)
    ]


async def test_reopen_keeps_data_and_a_locked_store_is_unavailable(tmp_path: Path) -> None:
    from supervision.sinks import StoreUnavailable

    path = tmp_path / "mg.sqlite"
    sink = SqliteSink(path)
    await sink.open()
    await sink.write([sink.encode(parse_batch(body(1, READINGS), "s1", "gw1", "data"))])
    await sink.aclose()
    sink = SqliteSink(path)
    await sink.open()
    try:
        assert rows(path, "SELECT count(*) FROM readings") == [(3,)]
        # another writer holds the database: the write fails as *unavailable* (retried)
        blocker = sqlite3.connect(path, timeout=0)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            chunk = sink.encode(parse_batch(body(2, READINGS[:1]), "s1", "gw1", "data"))
            with pytest.raises(StoreUnavailable):
                await sink.write([chunk])
        finally:
            blocker.rollback()
            blocker.close()
        await sink.write([chunk])
    finally:
        await sink.aclose()
    assert rows(path, "SELECT count(*) FROM batches") == [(2,)]
