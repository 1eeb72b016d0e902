"""The publisher's lanes over a real outbox: urgent, then live, then a paced backlog."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from gateway.delivery.lanes import Lane, Lanes
from gateway.delivery.outbox import Outbox
from tests.unit.test_outbox import make, recs


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def drain(lanes: Lanes, *, sent: bool = True) -> list[tuple[Lane, int]]:
    """Everything the lanes hand out now (each publish finishing at once when ``sent``)."""
    out: list[tuple[Lane, int]] = []
    for _ in range(10_000):
        picked = lanes.next()
        if picked is None:
            return out
        lane, row = picked
        out.append((lane, row.seq))
        if sent:
            lanes.sent(lane)
    raise AssertionError("the lanes never ran dry")


def backlog_of(ob: Outbox, n: int) -> None:
    """``n`` data batches and, among them, an alarm and an event (sealed before a connection)."""
    for i in range(n):
        ob.put("data", recs(1, i))
        if i == n // 2:
            ob.put("alarm", recs(1))
            ob.put("event", recs(1))


def test_urgent_then_live_then_backlog_each_in_seq_order(tmp_path: Path) -> None:
    with make(tmp_path / "o.db") as ob:
        backlog_of(ob, 10)  # data 1..6, alarm 7, event 8, data 9..12
        lanes = Lanes(ob, live_from=ob.next_seq, prefetch=3)  # small: refills are exercised
        ob.put("data", recs(1))  # 13: live
        ob.put("alarm", recs(1))  # 14: live alarm
        ob.put("data", recs(1))  # 15: live
        order = drain(lanes)
    assert order == [
        (Lane.URGENT, 7),
        (Lane.URGENT, 8),
        (Lane.URGENT, 14),
        (Lane.LIVE, 13),
        (Lane.LIVE, 15),
        *[(Lane.BACKLOG, s) for s in (1, 2, 3, 4, 5, 6, 9, 10, 11, 12)],
    ]
    assert lanes.backlog_done and lanes.handed == {Lane.URGENT: 3, Lane.LIVE: 2, Lane.BACKLOG: 10}


def test_new_puts_overtake_the_backlog_at_once(tmp_path: Path) -> None:
    with make(tmp_path / "o.db") as ob:
        backlog_of(ob, 20)
        lanes = Lanes(ob, live_from=ob.next_seq, prefetch=4, backlog_window=10)
        first = [lanes.next() for _ in range(4)]
        assert [p[0] for p in first if p] == [Lane.URGENT, Lane.URGENT, Lane.BACKLOG, Lane.BACKLOG]
        live = ob.put("data", recs(1))
        alarm = ob.put("alarm", recs(1))
        picked = [lanes.next(), lanes.next(), lanes.next()]
    assert [(p[0], p[1].seq) for p in picked if p] == [
        (Lane.URGENT, alarm[0]),
        (Lane.LIVE, live[0]),
        (Lane.BACKLOG, 3),  # the backlog goes on where it was
    ]


def test_drain_rate_paces_the_backlog_only(tmp_path: Path) -> None:
    clock = FakeMonotonic()
    with make(tmp_path / "o.db") as ob:
        backlog_of(ob, 10)
        lanes = Lanes(ob, live_from=ob.next_seq, drain_rate=4, backlog_window=100, monotonic=clock)
        first = drain(lanes)
        assert first == [(Lane.URGENT, 7), (Lane.URGENT, 8), (Lane.BACKLOG, 1)]
        for _ in range(5):
            ob.put("data", recs(1))
            ob.put("event", recs(1))
        unpaced = drain(lanes)  # live data and events are never paced
        assert [lane for lane, _ in unpaced] == [Lane.URGENT] * 5 + [Lane.LIVE] * 5
        clock.now += 0.2  # a quarter second is one slot: not yet
        assert lanes.next() is None
        clock.now += 0.05
        assert [s for _, s in drain(lanes)] == [2]
        handed = []
        for _ in range(40):
            clock.now += 0.25
            handed += drain(lanes)
    assert [s for _, s in handed] == [3, 4, 5, 6, 9, 10, 11, 12]
    assert lanes.backlog_done


def test_backlog_keeps_half_the_window_free(tmp_path: Path) -> None:
    with make(tmp_path / "o.db") as ob:
        backlog_of(ob, 10)
        lanes = Lanes(ob, live_from=ob.next_seq, backlog_window=3)
        held = drain(lanes, sent=False)  # no PUBACK comes
        assert [lane for lane, _ in held] == [Lane.URGENT, Lane.URGENT] + [Lane.BACKLOG] * 3
        ob.put("data", recs(1))
        live = lanes.next()
        assert live is not None and live[0] is Lane.LIVE  # not queued behind the backlog
        assert lanes.next() is None
        lanes.sent(Lane.BACKLOG)
        freed = lanes.next()
    assert freed is not None and (freed[0], freed[1].seq) == (Lane.BACKLOG, 4)


def test_prefetched_rows_that_were_dropped_are_not_handed_out(tmp_path: Path) -> None:
    with make(tmp_path / "o.db", max_bytes=35 * 90) as ob:  # 35 to 38 batches of this size
        for i in range(30):
            ob.put("data", recs(1, i))
        lanes = Lanes(ob, live_from=ob.next_seq, prefetch=8)
        first = lanes.next()
        assert first is not None and first[1].seq == 1  # 2..8 are prefetched now
        lanes.sent(first[0])
        for i in range(20):
            ob.put("data", recs(1, i))  # the bound drops the oldest
        dropped_to = min(b.seq for b in ob.take(1000)) - 1
        rest = drain(lanes)
    assert dropped_to > 8
    assert [s for lane, s in rest if lane is Lane.BACKLOG] == list(range(dropped_to + 1, 31))
    assert [s for lane, s in rest if lane is Lane.LIVE] == list(range(31, 51))


async def test_wait_wakes_on_a_put_and_on_a_freed_backlog_slot(tmp_path: Path) -> None:
    with make(tmp_path / "o.db") as ob:
        backlog_of(ob, 4)
        lanes = Lanes(ob, live_from=ob.next_seq, backlog_window=1)
        assert [lane for lane, _ in drain(lanes, sent=False)] == [Lane.URGENT] * 2 + [Lane.BACKLOG]
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        loop.call_later(0.05, ob.put, "data", recs(1))
        await lanes.wait(10)
        woke = lanes.next()
        assert woke is not None and woke[0] is Lane.LIVE
        loop.call_later(0.05, lanes.sent, Lane.BACKLOG)
        await lanes.wait(10)
        freed = lanes.next()
        assert freed is not None and freed[0] is Lane.BACKLOG
        assert loop.time() - t0 < 5  # woken, not timed out
        await lanes.wait(0.01)  # nothing comes: returns at the timeout
        await asyncio.sleep(0)  # the done-callbacks of the cancelled futures run
        assert ob._waiters == set()  # nothing left registered with the outbox


def test_old_outbox_files_get_the_urgent_index(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with make(path) as ob:
        ob.put("alarm", recs(1))
    with closing(sqlite3.connect(path)) as db:
        db.execute("DROP INDEX batches_urgent")
        db.commit()  # as a file written before the index
    with make(path) as ob:
        assert ob.last_urgent_seq == 1 and ob.last_data_seq == 0
        assert [b.seq for b in ob.take_urgent(10)] == [1]
    with closing(sqlite3.connect(path)) as db:
        plan = db.execute(
            "EXPLAIN QUERY PLAN SELECT seq FROM batches WHERE kind != 'data' AND seq > 0"
            " ORDER BY seq"
        ).fetchall()
    assert "batches_urgent" in str(plan)


@pytest.mark.parametrize("bad", [{"drain_rate": 0}, {"backlog_window": 0}, {"prefetch": 0}])
def test_bad_settings_are_refused(tmp_path: Path, bad: dict[str, Any]) -> None:
    with make(tmp_path / "o.db") as ob, pytest.raises(ValueError):
        Lanes(ob, live_from=1, **bad)


def test_a_refused_kind_is_passed_over_and_offered_again_whole_after_a_rewind(
    tmp_path: Path,
) -> None:
    """Held back data (the broker refuses it) must come again from the lowest number
    passed over, even where the backlog lane was still behind the refused live batch."""
    with make(tmp_path / "o.db") as ob:
        backlog_of(ob, 4)  # data 1..3, alarm 4, event 5, data 6
        lanes = Lanes(ob, live_from=ob.next_seq, prefetch=2)
        ob.put("data", recs(1))  # 7: live, refused
        ob.put("data", recs(1))  # 8: live
        assert lanes.next() == (Lane.URGENT, ob.take(1, after_seq=3)[0])  # alarm 4
        lane, row = lanes.next() or (None, None)
        assert (lane, row and row.seq) == (Lane.URGENT, 5)
        lane, row = lanes.next() or (None, None)
        assert (lane, row and row.seq) == (Lane.LIVE, 7)  # the broker refuses this one
        ob.settle([4, 5])
        ob.put("alarm", recs(1))  # 9: alarms still flow while data is held
        held = [(lane, row.seq) for lane, row in iter(lambda: lanes.next(skip={"data"}), None)]
        assert held == [(Lane.URGENT, 9)], "no data batch while data is held back"
        ob.settle([9])
        lanes.rewind(7)  # the publisher's retry: from the first refused batch on
        again = drain(lanes)
    assert again == [(Lane.LIVE, 7), (Lane.LIVE, 8), *[(Lane.BACKLOG, s) for s in (1, 2, 3, 6)]]


def test_a_rewind_without_anything_refused_or_passed_over_changes_nothing(tmp_path: Path) -> None:
    with make(tmp_path / "o.db") as ob:
        backlog_of(ob, 2)
        lanes = Lanes(ob, live_from=ob.next_seq)
        first = drain(lanes)
        lanes.rewind(None)
        assert drain(lanes) == [] and len(first) == 4


def test_an_outbox_from_before_streams_and_lanes_opens_with_its_backlog_whole(
    tmp_path: Path,
) -> None:
    """A gateway upgraded with a backlog: its file has no stream column, no urgent index
    and no thinning mark; it opens, keeps every batch and drains them in lane order."""
    path = tmp_path / "o.db"
    with make(path) as ob:
        backlog_of(ob, 4)  # data 1..3, alarm 4, event 5, data 6
    with closing(sqlite3.connect(path)) as conn:  # back to the file format before them
        conn.executescript(
            "DROP INDEX batches_urgent;"
            "CREATE TABLE old (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL,"
            " sealed_us INTEGER NOT NULL, records INTEGER NOT NULL,"
            " nbytes INTEGER NOT NULL, payload BLOB NOT NULL);"
            "INSERT INTO old SELECT seq, kind, sealed_us, records, nbytes, payload FROM batches;"
            "DROP TABLE batches; ALTER TABLE old RENAME TO batches;"
            "DELETE FROM meta WHERE key = 'thinned_upto';"
        )
        assert "stream" not in {r[1] for r in conn.execute("PRAGMA table_info(batches)")}
    with make(path) as ob:
        lanes = Lanes(ob, live_from=ob.next_seq)
        ob.put("data", recs(1), stream="dev1")  # 7: live, with its stream
        order = drain(lanes)
        assert ob.stats().batches == 7
    assert order == [
        (Lane.URGENT, 4),
        (Lane.URGENT, 5),
        (Lane.LIVE, 7),
        *[(Lane.BACKLOG, s) for s in (1, 2, 3, 6)],
    ]
