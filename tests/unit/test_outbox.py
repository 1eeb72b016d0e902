"""Behaviour of the durable outbox: sealing, cursor, settle, bound, wake-up, integrity, crash."""

from __future__ import annotations

import asyncio
import json
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from gateway.delivery.outbox import (
    SINGLE_RECORD_LIMIT,
    DropReport,
    Outbox,
    OutboxClosed,
    OutboxCorrupt,
    OutboxError,
    OutboxLocked,
    Sealed,
)

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("outbox_crash_child.py")
T0 = 1_795_847_523_000_000


class FakeClock:
    """An injected UTC µs clock the test moves by hand."""

    def __init__(self, now_us: int = T0) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us


def seal(kind: str, seq: int, sealed_us: int, records: list[dict[str, Any]]) -> bytes:
    body = {"v": 1, "type": kind, "seq": seq, "sealed": sealed_us, "items": records}
    return json.dumps(body, separators=(",", ":")).encode()


def body(batch: Sealed) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(batch.payload)
    return decoded


def recs(n: int, start: int = 0, pad: str = "") -> list[dict[str, Any]]:
    return [{"i": i, "pad": pad} for i in range(start, start + n)]


def make(path: Path, **kw: Any) -> Outbox:
    kw.setdefault("max_bytes", 10_000_000)
    kw.setdefault("clock_us", FakeClock())
    return Outbox(path, seal=seal, **kw)


def test_put_take_settle_round_trip(tmp_path: Path) -> None:
    clock = FakeClock()
    with make(tmp_path / "ob.db", clock_us=clock) as ob:
        records = recs(3)
        assert ob.put("data", records) == [1]
        assert ob.put("alarm", [{"alarm": "hi"}]) == [2]
        taken = ob.take(10)
        assert [b.seq for b in taken] == [1, 2]
        first = taken[0]
        assert first == Sealed(1, "data", seal("data", 1, T0, records), 3, T0)
        assert taken[1].kind == "alarm" and taken[1].records == 1
        stats = ob.stats()
        assert (stats.batches, stats.records, stats.oldest_sealed_us) == (2, 4, T0)
        assert stats.bytes == sum(len(b.payload) for b in taken)
        ob.settle([1])
        assert [b.seq for b in ob.take(10)] == [2]
        ob.settle([2, 2, 99])  # duplicates and unknown seqs are harmless
        assert ob.take(10) == []
        stats = ob.stats()
        assert (stats.batches, stats.records, stats.bytes) == (0, 0, 0)
        assert stats.oldest_sealed_us is None and stats.next_seq == 3


def test_put_validates_kind_and_ignores_empty(tmp_path: Path) -> None:
    with make(tmp_path / "ob.db") as ob:
        with pytest.raises(ValueError, match="kind"):
            ob.put("reading", recs(1))
        assert ob.put("event", []) == []
        assert ob.stats().next_seq == 1


def test_take_cursor(tmp_path: Path) -> None:
    with make(tmp_path / "ob.db") as ob:
        for i in range(5):
            ob.put("data", recs(1, i))
        assert [b.seq for b in ob.take(2)] == [1, 2]
        assert [b.seq for b in ob.take(2, after_seq=2)] == [3, 4]
        assert [b.seq for b in ob.take(10, after_seq=4)] == [5]
        assert ob.take(10, after_seq=5) == []
        ob.settle([1, 3])
        assert [b.seq for b in ob.take(10)] == [2, 4, 5]
        assert [b.seq for b in ob.take(1, after_seq=2)] == [4]


def test_seq_survives_reopen_and_settling_everything(tmp_path: Path) -> None:
    path = tmp_path / "ob.db"
    with make(path) as ob:
        assert ob.put("data", recs(1)) == [1]
        assert ob.put("event", recs(1)) == [2]
        ob.settle([1, 2])
    with make(path) as ob:
        assert ob.stats().next_seq == 3
        assert ob.put("data", recs(1)) == [3]
        ob.settle([3])
    with make(path) as ob:
        assert ob.stats().batches == 0
        assert ob.put("alarm", recs(2)) == [4]


def test_split_by_max_records(tmp_path: Path) -> None:
    with make(tmp_path / "ob.db", max_records=10) as ob:
        records = recs(25)
        assert ob.put("data", records) == [1, 2, 3]
        taken = ob.take(10)
        assert [b.records for b in taken] == [10, 10, 5]
        assert [r for b in taken for r in body(b)["items"]] == records
        assert [body(b)["seq"] for b in taken] == [1, 2, 3]


def test_split_by_payload_bytes(tmp_path: Path) -> None:
    one = len(seal("data", 1, T0, recs(1, pad="x" * 200)))
    limit = one * 3  # three padded records fit, four do not
    with make(tmp_path / "ob.db", max_records=100, max_payload_bytes=limit) as ob:
        records = recs(10, pad="x" * 200)
        seqs = ob.put("data", records)
        taken = ob.take(100)
        assert [b.seq for b in taken] == seqs == list(range(1, len(seqs) + 1))
        assert all(len(b.payload) <= limit for b in taken)
        assert len(seqs) > 3  # 10 records could not go in fewer batches
        # Re-sealed after halving: each payload names its own seq, records stay in order.
        assert [body(b)["seq"] for b in taken] == seqs
        assert [r for b in taken for r in body(b)["items"]] == records
        assert sum(b.records for b in taken) == 10


def test_record_too_big_for_a_batch_travels_alone(tmp_path: Path) -> None:
    with make(tmp_path / "ob.db", max_payload_bytes=300) as ob:
        ob.put("data", recs(1))
        assert ob.put("data", [*recs(1), {"big": "y" * 1000}]) == [2, 3]
        assert [b.records for b in ob.take(10)] == [1, 1, 1]


def test_record_above_the_hard_limit_is_rejected_and_consumes_nothing(tmp_path: Path) -> None:
    with make(tmp_path / "ob.db", max_payload_bytes=300) as ob:
        ob.put("data", recs(1))
        with pytest.raises(ValueError, match="one batch may ever hold"):
            ob.put("data", [*recs(1), {"big": "y" * (SINGLE_RECORD_LIMIT + 1)}])
        assert ob.stats().next_seq == 2 and ob.stats().batches == 1
        assert ob.put("data", recs(1)) == [2]


def test_bound_by_bytes_drops_oldest_with_exact_counts(tmp_path: Path) -> None:
    path = tmp_path / "ob.db"
    size = len(seal("data", 1, T0, recs(2, 10)))  # two-digit record ids: all the same size
    reports: list[DropReport] = []
    with make(path, max_bytes=size * 5, on_drop=reports.append) as ob:
        for i in range(5):
            ob.put("data", recs(2, 10 + 2 * i))
        assert reports == [] and ob.stats().bytes == size * 5
        ob.settle([2])  # a settled batch inside the dropped range is not counted
        ob.put("data", recs(2, 20))  # 6: fits after settling 2
        assert reports == []
        ob.put("data", recs(2, 22))  # 7: over by one batch -> drops 1
        ob.put("data", recs(4, 24))  # 8: bigger than one batch -> drops 3 and 4
        assert reports == [
            DropReport(1, 2, 1, 1, "bytes"),
            DropReport(2, 4, 3, 4, "bytes"),
        ]
        assert [b.seq for b in ob.take(100)] == [5, 6, 7, 8]
        stats = ob.stats()
        assert (stats.dropped_batches, stats.dropped_records) == (3, 6)
        assert stats.bytes <= size * 5 and stats.records == 10
    with make(path, max_bytes=size * 5) as ob:
        stats = ob.stats()
        assert (stats.dropped_batches, stats.dropped_records, stats.batches) == (3, 6, 4)
        assert stats.bytes == sum(len(b.payload) for b in ob.take(100))


def test_on_drop_failure_does_not_lose_the_put(tmp_path: Path, caplog: Any) -> None:
    size = len(seal("data", 1, T0, recs(1)))

    def broken(report: DropReport) -> None:
        raise RuntimeError("event log down")

    with make(tmp_path / "ob.db", max_bytes=size, on_drop=broken) as ob:
        ob.put("data", recs(1))
        assert ob.put("data", recs(1)) == [2]
        assert [b.seq for b in ob.take(10)] == [2]
        assert ob.stats().dropped_batches == 1
    assert "on_drop handler failed" in caplog.text


def test_max_age_drops_batches_older_than_the_bound(tmp_path: Path) -> None:
    clock = FakeClock()
    reports: list[DropReport] = []
    with make(tmp_path / "ob.db", max_age_s=60, clock_us=clock, on_drop=reports.append) as ob:
        ob.put("data", recs(1))  # 1 @ 0 s
        clock.now_us += 30_000_000
        ob.put("data", recs(2))  # 2 @ 30 s
        clock.now_us += 30_000_000
        ob.put("data", recs(1))  # 3 @ 60 s: 1 is exactly 60 s old, kept
        assert reports == []
        clock.now_us += 1
        ob.put("event", recs(1))  # 4: 1 is now older than 60 s
        assert reports == [DropReport(1, 1, 1, 1, "age")]
        assert ob.stats().oldest_sealed_us == T0 + 30_000_000
        clock.now_us += 60_000_000  # idle: nothing put, the bound is still enforced
        assert ob.enforce_bounds() == [DropReport(2, 3, 2, 3, "age")]
        assert [b.seq for b in ob.take(10)] == [4]
        assert ob.stats().dropped_batches == 3


async def test_wait_for_new_wakes_on_put(tmp_path: Path) -> None:
    with make(tmp_path / "ob.db") as ob:
        results: list[bool] = []
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_collect(ob.wait_for_new(0, timeout=10.0), results), name="waiter")
            for _ in range(3):
                await asyncio.sleep(0)  # let the waiter block first
            assert results == []
            ob.put("data", recs(1))
        assert results == [True]
        assert loop.time() - started < 5.0  # woken, not timed out


async def test_wait_for_new_cursor_and_timeout(tmp_path: Path) -> None:
    with make(tmp_path / "ob.db") as ob:
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await ob.wait_for_new(0, timeout=0.05) is False
        assert loop.time() - started >= 0.04
        ob.put("data", recs(1))
        assert await ob.wait_for_new(0, timeout=0.0) is True  # already there
        assert await ob.wait_for_new(1, timeout=0.05) is False  # nothing after the cursor
        ob.settle([1])
        assert await ob.wait_for_new(0, timeout=0.05) is False  # settled ones do not count


async def test_wait_for_new_fails_when_closed(tmp_path: Path) -> None:
    ob = make(tmp_path / "ob.db")
    with ob:
        pass
    with pytest.raises(OutboxClosed):
        await ob.wait_for_new(0, timeout=1.0)


async def _collect(waiting: Any, into: list[bool]) -> None:
    into.append(await waiting)


@pytest.mark.parametrize(("durability", "level"), [("process", 1), ("power", 2)])
def test_durability_sets_synchronous(tmp_path: Path, durability: Any, level: int) -> None:
    with make(tmp_path / "ob.db", durability=durability) as ob:
        settings = ob.sqlite_settings()
        assert settings["synchronous"] == level  # 1 = NORMAL, 2 = FULL
        assert settings["journal_mode"] == "wal"


def test_second_open_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ob.db"
    with make(path) as ob:
        ob.put("data", recs(1))
        with pytest.raises(OutboxLocked), make(path):
            pass
        assert [b.seq for b in ob.take(10)] == [1]


def test_corrupted_file_is_reported_not_recreated(tmp_path: Path) -> None:
    path = tmp_path / "ob.db"
    with make(path) as ob:
        for i in range(300):
            ob.put("data", recs(5, i, pad="z" * 40))
    page = 4096
    size = path.stat().st_size
    assert size >= 10 * page
    middle = (size // page // 2) * page
    with path.open("r+b") as f:
        f.seek(middle)
        f.write(b"\xde\xad\xbe\xef" * (page // 4))
    damaged = path.read_bytes()
    with pytest.raises(OutboxCorrupt, match=str(path)):
        make(path).__enter__()
    assert path.read_bytes() == damaged  # left for inspection


@pytest.mark.parametrize("content", [b"", b"not a database at all" * 100])
def test_foreign_or_empty_file_is_corrupt(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "ob.db"
    path.write_bytes(content)
    with pytest.raises(OutboxCorrupt):
        make(path).__enter__()


def test_missing_directory_is_an_outbox_error(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "ob.db"
    with pytest.raises(OutboxError, match="cannot create"):
        make(path).__enter__()
    assert not path.parent.exists()


def test_use_outside_with_block_raises(tmp_path: Path) -> None:
    ob = make(tmp_path / "ob.db")
    with pytest.raises(OutboxClosed):
        ob.put("data", recs(1))


# -- crash test ---------------------------------------------------------------------


def test_sigkill_loses_nothing_put_returned(tmp_path: Path) -> None:
    """Kill a producer at random points; every seq it was promised must be kept."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    path = tmp_path / "ob.db"
    max_bytes = 30_000  # small enough that the bound drops batches along the way
    printed: dict[int, int] = {}  # seq -> records, across all runs
    for run in range(5):
        durability = ("process", "power")[run % 2]
        target = rng.randint(1, 400)
        lines = _run_and_kill(path, durability, max_bytes, target)
        assert len(lines) >= target, f"seed {seed} run {run}: child printed {len(lines)}"
        for line in lines:
            seq, n = map(int, line.split())
            assert seq not in printed, f"seed {seed} run {run}: seq {seq} handed out twice"
            printed[seq] = n
        with Outbox(path, seal=seal, max_bytes=max_bytes) as ob:
            stats = ob.stats()
            stored = {b.seq: b for b in ob.take(100_000)}
        # Nothing is ever settled here, so the drops are exactly the oldest prefix.
        assert stats.batches + stats.dropped_batches == stats.next_seq - 1, f"seed {seed}"
        assert stats.next_seq > max(printed), f"seed {seed} run {run}"
        for seq, n in printed.items():
            if seq > stats.dropped_batches:
                assert seq in stored, f"seed {seed} run {run}: promised seq {seq} lost"
                assert stored[seq].records == n
                assert body(stored[seq])["seq"] == seq
        assert len(stored) == stats.batches
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        db.close()
    assert max(printed) > 100  # the runs together went past the first drops
    assert stats.dropped_batches > 0


def _run_and_kill(path: Path, durability: str, max_bytes: int, target: int) -> list[str]:
    """Start the child, read ``target`` lines, SIGKILL it, return every line it printed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(CHILD), str(path), durability, str(max_bytes)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + 30.0
    buf = b""
    try:
        fd = proc.stdout.fileno()
        while buf.count(b"\n") < target:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"child too slow: {len(buf.splitlines())} lines"
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"child exited early: {proc.stderr.read().decode()}")
            buf += chunk
        proc.send_signal(signal.SIGKILL)
        # Lines already written before the kill were promised too: read to EOF.
        while chunk := _read_ready(fd, deadline):
            buf += chunk
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    text = buf.decode()
    complete = text[: text.rfind("\n") + 1]  # a line cut by the kill promises nothing
    return complete.splitlines()


def _read_ready(fd: int, deadline: float) -> bytes:
    ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
    return os.read(fd, 65536) if ready else b""


# ------------------------------------------------------------------ damage at random


@st.composite
def _damage(draw: st.DrawFn, size: int) -> list[tuple[int, bytes]] | int:
    """Either a cut (an int: the new length) or writes of random bytes at offsets."""
    if draw(st.booleans()):
        return draw(st.integers(0, size - 1))
    return draw(
        st.lists(
            st.tuples(st.integers(0, size - 1), st.binary(min_size=1, max_size=64)),
            min_size=1,
            max_size=8,
        )
    )


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_an_outbox_damaged_anywhere_is_refused_or_read_never_crashes(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """Bytes overwritten or the file cut anywhere: opening refuses with an OutboxError
    (the file left as it is), or the outbox opens and everything it offers can be read,
    counted and settled — what goes wrong is an OutboxError, never another exception."""
    path = tmp_path_factory.mktemp("ob") / "ob.db"
    with make(path) as ob:
        for i in range(60):
            ob.put("data" if i % 5 else "alarm", recs(3, i, pad="p" * 30))
        ob.settle([1, 2, 3])
    size = path.stat().st_size
    damage = data.draw(_damage(size), label="damage")
    with path.open("r+b") as f:
        if isinstance(damage, int):
            f.truncate(damage)
        else:
            for at, junk in damage:
                f.seek(at)
                f.write(junk)
    damaged = path.read_bytes()
    try:
        ob = make(path).__enter__()
    except OutboxError:
        event("refused at open")
        assert path.read_bytes() == damaged
        return
    event("opened")
    try:
        ob.stats()
        rows = ob.take(10_000)
        ob.settle([r.seq for r in rows[:5]])
        ob.put("data", recs(2))
    except OutboxError:
        event("refused after open")
    finally:
        ob.__exit__(None, None, None)
