"""A full disk under the outbox costs held or counted records, never an exception.

The outbox is real; SQLite's ``max_page_count`` stops its file from growing, so
writes fail with SQLite's own "database or disk is full" — the error a full SD
card gives — without a tiny filesystem (which would need root to mount).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.delivery.outbox import Outbox
from gateway.delivery.writer import RETRY_INITIAL_S, OutboxWriter
from tests.unit.ops_support import FakeClock


def seal(kind: str, seq: int, sealed_us: int, records: list[dict[str, Any]]) -> bytes:
    return (
        json.dumps({"type": kind, "seq": seq, "records": records}).encode() + b" " * 5000
    )  # > a page: every put needs a new one


def connection(outbox: Outbox) -> sqlite3.Connection:
    """The outbox's own connection: ``max_page_count`` is a setting of a connection."""
    conn = outbox._conn
    assert conn is not None
    return conn


def fill_disk(outbox: Outbox) -> None:
    """From now on the file cannot grow by a single page."""
    conn = connection(outbox)
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")


def free_disk(outbox: Outbox) -> None:
    connection(outbox).execute("PRAGMA max_page_count = 1073741823")


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox(tmp_path / "outbox.db", seal=seal, max_bytes=10**9) as ob:
        yield ob


def stored(outbox: Outbox) -> list[dict[str, Any]]:
    rows = outbox.take(10_000)
    return [r for row in rows for r in json.loads(row.payload.rstrip())["records"]]


def test_records_are_held_while_the_disk_is_full_and_stored_in_order_after(
    outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="metrogate.outbox")
    clock = FakeClock()
    writer = OutboxWriter(outbox, monotonic=clock)
    writer.put("data", [{"n": 0}])
    fill_disk(outbox)
    for n in range(1, 40):
        writer.put("data", [{"n": n}])  # never raises
        if n == 20:
            writer.put("alarm", [{"alarm": "a"}])
    st = writer.stats
    assert st.failing and st.held_records > 0
    assert st.last_error is not None and "database or disk is full" in st.last_error
    attempts = st.failures
    assert attempts <= 2, "one failed attempt per back-off period, not one per put"
    clock.now += RETRY_INITIAL_S * 4
    assert not writer.retry() and st.failures == attempts + 1  # due, and still full
    free_disk(outbox)
    assert not writer.retry(), "not before the back-off period is over"
    clock.now += 60
    assert writer.retry()
    assert not st.failing and st.held_records == 0 and st.lost_records == 0
    records = stored(outbox)
    numbers = [r["n"] for r in records if "n" in r]
    assert numbers == list(range(40)), "nothing lost, nothing reordered"
    assert records.index({"alarm": "a"}) == numbers.index(20) + 1
    levels = [(r.levelname, r.getMessage().split(":")[0]) for r in caplog.records]
    assert [lv for lv, _ in levels].count("ERROR") == 1  # logged once when it started
    assert [lv for lv, _ in levels].count("INFO") == 1  # and once when it recovered
    writer.put("data", [{"n": 40}])
    assert stored(outbox)[-1] == {"n": 40}


def test_beyond_the_bound_the_oldest_data_is_lost_and_counted(
    outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    writer = OutboxWriter(outbox, max_held=10, monotonic=clock)
    fill_disk(outbox)
    writer.put("event", [{"event": "e"}])
    for n in range(12):
        writer.put("data", [{"n": n}])
    writer.put("alarm", [{"alarm": "a"}])
    st = writer.stats
    assert st.held_records == 10
    assert st.lost == {"data": 4}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    free_disk(outbox)
    clock.now += 60
    assert writer.retry()
    records = stored(outbox)
    assert records[0] == {"event": "e"} and records[-1] == {"alarm": "a"}
    assert [r["n"] for r in records if "n" in r] == list(range(4, 12))


def test_a_put_that_no_retry_can_cure_is_lost_at_once(outbox: Outbox) -> None:
    writer = OutboxWriter(outbox)
    writer.put("bogus", [{"n": 1}, {"n": 2}])
    assert writer.stats.lost == {"bogus": 2} and not writer.stats.failing
    writer.put("data", [{"n": 3}])
    assert stored(outbox) == [{"n": 3}]


def test_what_is_still_held_at_shutdown_is_counted_as_lost(outbox: Outbox) -> None:
    writer = OutboxWriter(outbox)
    fill_disk(outbox)
    writer.put("data", [{"n": 1}, {"n": 2}])
    assert writer.abandon() == 2
    assert writer.stats.lost == {"data": 2} and writer.stats.held_records == 0


def test_an_age_bound_that_cannot_be_applied_is_a_write_failure(outbox: Outbox) -> None:
    writer = OutboxWriter(outbox)
    writer.put("data", [{"n": 1}])
    connection(outbox).execute("PRAGMA query_only = 1")  # every write now fails
    outbox._max_age_us = 1  # the batch above is older than that: a delete is due
    writer.enforce_bounds()
    assert writer.stats.failing and writer.stats.failures == 1


def test_held_puts_keep_their_stream_and_are_merged_only_within_it(outbox: Outbox) -> None:
    """The ``thin`` policy thins per stream: a full-disk episode must not mix them."""
    writer = OutboxWriter(outbox, monotonic=FakeClock(0.0))
    fill_disk(outbox)
    writer.put("data", [{"n": 1}], stream="dev1")
    writer.put("data", [{"n": 2}], stream="dev1")
    writer.put("data", [{"n": 3}], stream="dev2")
    assert writer.stats.held_records == 3
    free_disk(outbox)
    assert writer.retry(now=True)
    conn = connection(outbox)
    rows = conn.execute("SELECT stream, records FROM batches ORDER BY seq").fetchall()
    assert rows == [("dev1", 2), ("dev2", 1)]
