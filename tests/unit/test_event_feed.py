"""Logged means published: the event log bound to the outbox, commits off the loop."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.eventlog import EventLog
from gateway.audit.verify import verify_event_log
from gateway.delivery.events import EventFeed
from gateway.delivery.outbox import Outbox
from gateway.wire.keys import generate_keypair, load_signer
from gateway.wire.signing import Signer

ROOT = Path(__file__).resolve().parents[2]


def seal(kind: str, seq: int, sealed_us: int, records: list[dict[str, Any]]) -> bytes:
    body = {"v": 1, "type": kind, "seq": seq, "sealed": sealed_us, "events": records}
    return json.dumps(body, separators=(",", ":")).encode()


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return load_signer(generate_keypair(tmp_path / "keys").private_path)


@contextmanager
def feed(state: Path, signer: Signer, **kw: Any) -> Iterator[EventFeed]:
    with (
        EventLog(state / "events.log", signer, software_id="t", autocommit=False, **kw) as log,
        Outbox(state / "outbox.db", seal=seal, max_bytes=1 << 30, seq_store=log) as ob,
    ):
        yield EventFeed(log, ob, retry_s=0.01)


def published(ob: Outbox) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for b in ob.take(10_000):
        if b.kind == "event":
            out += json.loads(b.payload)["events"]
    return out


async def test_recording_does_no_io_and_the_writer_commits_then_seals(
    tmp_path: Path, signer: Signer
) -> None:
    with feed(tmp_path, signer) as f:
        size = (tmp_path / "events.log").stat().st_size
        entry = f.record("clock_sync", {"new": "synchronised"}, source="clock")
        assert entry is not None and entry["n"] == 1
        # staged only: nothing written on the caller's thread, nothing published yet
        assert (tmp_path / "events.log").stat().st_size == size
        assert published(f.outbox) == [] and f.pending == 1
        await f.durable()
        assert (tmp_path / "events.log").stat().st_size > size
        assert published(f.outbox) == [entry]  # exactly what the log holds, signature too
        assert f.outbox.last_event_n == 1 and f.pending == 0
    assert verify_event_log(
        tmp_path / "events.log", {signer.kid: signer.private_key.public_key()}
    ).ok


async def test_the_writer_task_publishes_what_is_recorded(tmp_path: Path, signer: Signer) -> None:
    with feed(tmp_path, signer) as f:
        task = asyncio.create_task(f.run(), name="writer")
        try:
            entries = [f.record("outbox_drop", {"i": i}) for i in range(5)]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while len(published(f.outbox)) < 5:
                assert loop.time() < deadline, "not published"
                await asyncio.sleep(0.01)
            assert published(f.outbox) == entries
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


def test_an_entry_logged_but_not_sealed_is_sealed_at_the_next_start(
    tmp_path: Path, signer: Signer
) -> None:
    with feed(tmp_path, signer) as f:
        f.record("startup", {})
        f.flush()
        lost = f.record("outbox_drop", {"batches": 3})
        f.log.commit()  # durable in the log; the process "dies" before it is sealed
        f.outbox.close()
    with feed(tmp_path, signer) as f:
        assert f.outbox.last_event_n == 1
        assert f.recover() == 1
        assert published(f.outbox)[-1] == lost
        assert f.recover() == 0  # once


def test_a_log_whose_numbers_went_back_is_sealed_whole(tmp_path: Path, signer: Signer) -> None:
    from gateway.audit.reinit import reinitialise

    with feed(tmp_path, signer) as f:
        for i in range(4):
            f.record("outbox_drop", {"i": i})
        f.flush()
    (tmp_path / "events.log").unlink()
    (tmp_path / "events.log.counter").unlink()
    reinitialise(tmp_path / "events.log", signer, software_id="t", reason="lost")
    with feed(tmp_path, signer) as f:
        assert f.outbox.last_event_n == 4 and f.log.counter == 1
        assert f.recover() == 1
        assert published(f.outbox)[-1]["type"] == "log_reinitialised"


def test_a_full_log_counts_refused_events_once_noted_and_keeps_lifecycle_room(
    tmp_path: Path, signer: Signer
) -> None:
    limits = {"max_entries": 10, "reserve": 4, "lifecycle_room": 3}
    with feed(tmp_path, signer, **limits) as f:
        for i in range(7):
            assert f.record("outbox_drop", {"i": i}) is not None
        assert f.full and not f.parameter_changes_allowed
        assert f.record("outbox_drop", {"i": 7}) is None
        assert f.record("clock_jump", {}) is None
        assert f.refused == 2
        assert f.record("shutdown", {}) is not None  # the lifecycle room
        f.flush()
        types = [e["type"] for e in published(f.outbox)]
    assert types == ["outbox_drop"] * 7 + ["event_log_full", "shutdown"]  # noted once
    with feed(tmp_path, signer, **limits) as f:
        assert f.record("startup", {}) is not None  # a start-up is still recorded
        assert f.record("outbox_drop", {}) is None
        assert f.record("shutdown", {}) is None  # the log holds its 10 entries: no more
        assert f.refused == 2 and f.log.counter == 10


def test_a_full_log_at_start_records_the_refused_parameter_changes(
    tmp_path: Path, signer: Signer
) -> None:
    with feed(tmp_path, signer, max_entries=10, reserve=4, lifecycle_room=2) as f:
        f.reconcile_at_start(b'{"a":1,"b":1}', source="cfg")
        for i in range(5):
            f.record("outbox_drop", {"i": i})
        assert not f.parameter_changes_allowed
        f.reconcile_at_start(b'{"a":2,"b":1}', source="cfg")  # does not raise
        assert f.changes_refused == 1
        f.flush()
        last = published(f.outbox)[-1]
    assert last["type"] == "parameter_changes_refused"
    assert last["data"]["count"] == 1
    assert last["data"]["changes"] == [{"param": "a", "change": "changed", "old": 1, "new": 2}]


WRITE_FAILS = """
import resource, signal, sys
from pathlib import Path
from gateway.audit.eventlog import EventLog, EventLogWriteError
from gateway.wire.keys import load_signer

path, key = Path(sys.argv[1]), Path(sys.argv[2])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
with EventLog(path, load_signer(key), software_id="t", autocommit=False) as log:
    log.append("startup", {})
    log.commit()
    size = path.stat().st_size
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, hard))  # as if the disk filled up
    log.append("outbox_drop", {"pad": "x" * 500})
    try:
        log.commit()
        print("no failure")
    except EventLogWriteError as exc:
        print("failed:", "File too large" in str(exc), path.stat().st_size == size, log.pending)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    print("written:", [e["n"] for e in log.commit()])
"""


def test_a_failed_write_is_cut_back_and_written_by_the_next_commit(
    tmp_path: Path, signer: Signer
) -> None:
    key = tmp_path / "keys" / "gateway.key"
    path = tmp_path / "events.log"
    out = subprocess.run(
        [sys.executable, "-c", WRITE_FAILS, str(path), str(key)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["failed: True True 1", "written: [2]"]
    assert verify_event_log(path, {signer.kid: signer.private_key.public_key()}).ok
