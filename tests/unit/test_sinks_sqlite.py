"""The SQLite store: write, idempotent redelivery, read back (a real file, a real thread)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from supervision.model import Status, parse_batch
from supervision.sinks import StoreRejected
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
            later = [READINGS[0] | {"ts": T0 + 10}]
            chunk = sink.encode(parse_batch(body(2, later), "s1", "gw1", "data"))
            with pytest.raises(StoreUnavailable):
                await sink.write([chunk])
        finally:
            blocker.rollback()
            blocker.close()
        await sink.write([chunk])
    finally:
        await sink.aclose()
    assert rows(path, "SELECT count(*) FROM batches") == [(2,)]


# -- nothing stored is rewritten; durable commits; what a restarted worker asks --------


async def test_commits_are_durable(tmp_path: Path) -> None:
    """synchronous=FULL: each commit syncs the WAL, so an acknowledged write survives a
    power cut (NORMAL would sync only at checkpoints)."""
    sink = SqliteSink(tmp_path / "mg.sqlite")
    await sink.open()
    try:
        assert sink._db is not None
        ((mode,),) = sink._db.execute("PRAGMA synchronous").fetchall()
        ((journal,),) = sink._db.execute("PRAGMA journal_mode").fetchall()
    finally:
        await sink.aclose()
    assert (mode, journal) == (2, "wal")  # 2 = FULL


async def test_same_number_other_bytes_is_refused_and_history_stays(tmp_path: Path) -> None:
    from supervision.sinks import StoreConflict

    path = tmp_path / "mg.sqlite"
    sink = SqliteSink(path)
    await sink.open()
    try:
        await sink.write([sink.encode(parse_batch(body(1, READINGS), "s1", "gw1", "data"))])
        # a gateway that lost its outbox numbers again from 1, with new readings
        other = [r | {"ts": r["ts"] + 1000, "value": 99.0} for r in READINGS]
        forged = sink.encode(parse_batch(body(1, other), "s1", "gw1", "data"))
        with pytest.raises(StoreConflict):
            await sink.write([forged])
        # nor with other batches in the same write: the whole transaction is refused
        fine = sink.encode(parse_batch(body(2, [READINGS[0] | {"ts": T0 + 50}]), "s1", "gw1",
                                       "data"))  # fmt: skip
        with pytest.raises(StoreConflict):
            await sink.write([fine, forged])
        # a reading another batch already holds is not replaced either
        clash = sink.encode(parse_batch(body(3, [READINGS[0] | {"value": 7.0}]), "s1", "gw1",
                                        "data"))  # fmt: skip
        with pytest.raises(StoreRejected):
            await sink.write([clash])
        await sink.write([fine])
    finally:
        await sink.aclose()
    assert rows(path, "SELECT seq, ts_us, value FROM readings ORDER BY ts_us") == [
        (1, T0 + 1, 1.5), (1, T0 + 2, None), (1, T0 + 3, 1), (2, T0 + 50, 1.5)
    ]  # fmt: skip
    assert rows(path, "SELECT seq FROM batches ORDER BY seq") == [(1,), (2,)]


async def test_security_events_status_order_and_lookups(tmp_path: Path) -> None:
    from supervision.model import SecurityEvent
    from supervision.sinks import GatewayHigh, StoredBatch

    path = tmp_path / "mg.sqlite"
    sink = SqliteSink(path)
    await sink.open()
    events = [
        {"ts": T0 + 10 * n, "n": n, "type": "startup", "source": "daemon", "data": {},
         "software": "ab", "prev": "0" * 64, "sig": "x"}
        for n in (4, 5, 7)
    ]  # fmt: skip
    try:
        data = parse_batch(body(1, READINGS), "s1", "gw1", "data")
        ev = parse_batch(body(2, events, "event"), "s1", "gw1", "event")
        sec = SecurityEvent("s1", "gw1", "conflict", 1, T0, "seq 1 with other bytes")
        await sink.write([sink.encode(data), sink.encode(ev), sink.encode_security(sec)])
        await sink.write([sink.encode_security(sec)])  # filed once
        newer = sink.encode_status(Status("s1", "gw1", "online", T0 + 100, "2"), 0)
        older = sink.encode_status(Status("s1", "gw1", "offline", T0 + 50, None), 0)
        await sink.write([newer, older])  # a late, older status does not win
        assert await sink.stored_batch("gw1", 1, 0) == StoredBatch(data.digest, T0 + 1)
        assert await sink.stored_batch("gw1", 3, 0) is None
        assert await sink.highs() == [GatewayHigh("gw1", 2, T0 + 2, 7, T0 + 70)]
        assert await sink.event_numbers("gw1", 4, 7) == {4, 5, 7}
    finally:
        await sink.aclose()
    assert rows(path, "SELECT gateway, kind, seq, ts_us, detail FROM security") == [
        ("gw1", "conflict", 1, T0, "seq 1 with other bytes")
    ]
    assert rows(path, "SELECT state, ts_us FROM gateway_status") == [("online", T0 + 100)]


async def test_a_store_from_before_digests_opens_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE batches (gateway TEXT NOT NULL, seq INTEGER NOT NULL, site TEXT NOT "
            "NULL, kind TEXT NOT NULL, sealed_us INTEGER NOT NULL, n INTEGER NOT NULL, "
            "PRIMARY KEY (gateway, seq)) WITHOUT ROWID"
        )
        db.execute("INSERT INTO batches VALUES ('gw1', 1, 's1', 'data', 5, 3)")
    sink = SqliteSink(path)
    await sink.open()
    try:
        # a stored batch without a digest is taken as stored: not written again
        await sink.write([sink.encode(parse_batch(body(1, READINGS), "s1", "gw1", "data"))])
        await sink.write([sink.encode(parse_batch(body(2, READINGS), "s1", "gw1", "data"))])
    finally:
        await sink.aclose()
    assert rows(path, "SELECT seq, digest IS NULL FROM batches ORDER BY seq") == [
        (1, 1), (2, 0)
    ]  # fmt: skip
    assert rows(path, "SELECT count(*) FROM readings") == [(3,)]


async def test_message_records_are_one_per_payload_and_an_old_security_table_is_migrated(
    tmp_path: Path,
) -> None:
    """Forgeries and dead letters share the ``security`` table with the numbering events,
    keyed by their payload digest: a redelivery (a later receipt) files nothing new. A
    table made before message records keeps its rows and gets the new key."""
    from supervision.model import SecurityEvent

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # the table as stores made before had it
        db.execute(
            "CREATE TABLE security (gateway TEXT NOT NULL, kind TEXT NOT NULL, seq INTEGER NOT "
            "NULL, site TEXT NOT NULL, ts_us INTEGER NOT NULL, detail TEXT NOT NULL, "
            "PRIMARY KEY (gateway, kind, seq)) WITHOUT ROWID"
        )
        db.execute("INSERT INTO security VALUES ('gw1', 'reset', 9, 's1', 5, 'went back')")
    forged = SecurityEvent.of_message("gw1", "bad_signature", "x", "p/v1/s/gw1/data", T0, b"a")
    again = SecurityEvent.of_message("gw1", "bad_signature", "x", "p/v1/s/gw1/data", T0 + 9, b"a")
    other = SecurityEvent.of_message(None, "bad_topic", "y\nz", "p/\x00", T0, b"b")
    assert (forged.kind, forged.site, other.kind, other.gateway) == (
        "forgery", "-", "dead_letter", "-"
    )  # fmt: skip
    sink = SqliteSink(path)
    await sink.open()
    try:
        await sink.write([sink.encode_security(e) for e in (forged, other)])
        await sink.write([sink.encode_security(again)])
    finally:
        await sink.aclose()
    assert rows(
        path, "SELECT gateway, kind, seq, ts_us, detail, reason, topic FROM security ORDER BY 2"
    ) == [
        ("-", "dead_letter", 0, T0, "y?z", "bad_topic", "p/?"),
        ("gw1", "forgery", 0, T0, "x", "bad_signature", "p/v1/s/gw1/data"),
        ("gw1", "reset", 9, 5, "went back", "", ""),
    ]  # fmt: skip
