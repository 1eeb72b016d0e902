"""Sequence numbers never go back: the outbox's reservation in the event log's signed head."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.eventlog import EventLog, counter_path_for
from gateway.audit.head import read_head
from gateway.delivery.outbox import Outbox, OutboxError, boot_id
from gateway.wire.keys import generate_keypair, load_signer
from gateway.wire.signing import Signer

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("seq_crash_child.py")


def seal(kind: str, seq: int, sealed_us: int, records: list[dict[str, Any]]) -> bytes:
    body = {"v": 1, "type": kind, "seq": seq, "sealed": sealed_us, "items": records}
    return json.dumps(body, separators=(",", ":")).encode()


@pytest.fixture
def key(tmp_path: Path) -> Path:
    return generate_keypair(tmp_path / "keys").private_path


@contextmanager
def opened(state: Path, signer: Signer, **kw: Any) -> Iterator[tuple[EventLog, Outbox]]:
    kw.setdefault("seq_margin", 100)
    with (
        EventLog(state / "events.log", signer, software_id="t") as log,
        Outbox(state / "outbox.db", seal=seal, max_bytes=1 << 30, seq_store=log, **kw) as ob,
    ):
        yield log, ob


def put(ob: Outbox, n: int) -> list[int]:
    return [s for _ in range(n) for s in ob.put("data", [{"i": 1}])]


def reserved_in_head(state: Path, signer: Signer) -> int:
    head = read_head(
        counter_path_for(state / "events.log"), {signer.kid: signer.private_key.public_key()}
    )
    assert head is not None and head.seq is not None
    return head.seq.reserved


def test_a_clean_restart_continues_exactly(tmp_path: Path, key: Path) -> None:
    signer = load_signer(key)
    with opened(tmp_path, signer) as (_, ob):
        assert put(ob, 3) == [1, 2, 3]
    with opened(tmp_path, signer) as (_, ob):
        assert ob.resumed is None
        assert put(ob, 1) == [4]


def test_a_lost_outbox_resumes_above_every_number_used(tmp_path: Path, key: Path) -> None:
    signer = load_signer(key)
    used: list[int] = []
    for _ in range(3):
        with opened(tmp_path, signer) as (_, ob):
            used += put(ob, 5)
        (tmp_path / "outbox.db").unlink()
    with opened(tmp_path, signer) as (_, ob):
        assert ob.resumed is not None and ob.resumed.reason == "outbox_new"
        fresh = put(ob, 2)
    assert min(fresh) > max(used)
    assert used == sorted(used) and len(set(used)) == len(used)


def test_a_rolled_back_outbox_resumes_above(tmp_path: Path, key: Path) -> None:
    signer = load_signer(key)
    with opened(tmp_path, signer) as (_, ob):
        put(ob, 3)
    shutil.copy(tmp_path / "outbox.db", tmp_path / "old.db")
    with opened(tmp_path, signer) as (_, ob):
        used = put(ob, 4)
    shutil.copy(tmp_path / "old.db", tmp_path / "outbox.db")  # a backup restored
    with opened(tmp_path, signer) as (_, ob):
        assert ob.resumed is not None and ob.resumed.reason == "outbox_behind"
        assert ob.resumed.stored == 4
        assert min(put(ob, 1)) > max(used)


def test_a_burst_beyond_the_reservation_renews_it_before_using_a_number(
    tmp_path: Path, key: Path
) -> None:
    signer = load_signer(key)
    with opened(tmp_path, signer, seq_margin=4) as (_, ob):
        for _ in range(25):
            (seq,) = put(ob, 1)
            assert reserved_in_head(tmp_path, signer) > seq  # durable before it was used
        big = ob.put("data", [{"i": i} for i in range(3)])
        assert reserved_in_head(tmp_path, signer) > max(big)


def test_a_failed_reservation_stores_nothing(tmp_path: Path, key: Path) -> None:
    signer = load_signer(key)
    with opened(tmp_path, signer, seq_margin=4) as (log, ob):
        assert put(ob, 4) == [1, 2, 3, 4]  # 1 .. 4 are reserved at open
        log.close()  # the store can no longer record a mark
        with pytest.raises(OutboxError, match="cannot reserve sequence numbers"):
            ob.put("data", [{"i": 5}])
        assert ob.stats().next_seq == 5 and ob.stats().batches == 4


async def test_the_reservation_is_renewed_off_the_event_loop(tmp_path: Path, key: Path) -> None:
    signer = load_signer(key)
    with opened(tmp_path, signer, seq_margin=10) as (_, ob):
        task = asyncio.create_task(ob.keep_reserved(every=0.05), name="keep-reserved")
        try:
            assert reserved_in_head(tmp_path, signer) == 11
            put(ob, 6)  # half of the reservation used: renewed in a worker thread
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while reserved_in_head(tmp_path, signer) < 17:
                assert loop.time() < deadline, "reservation not renewed"
                await asyncio.sleep(0.02)
            put(ob, 4)  # within the renewed reservation: no synchronous renewal needed
            assert reserved_in_head(tmp_path, signer) == 17
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


def test_sigkill_keeps_numbers_dense_and_a_reboot_skips_ahead(tmp_path: Path, key: Path) -> None:
    signer = load_signer(key)
    printed = _run_and_kill(tmp_path, key, margin=50, target=120)
    used = [int(x) for x in printed]
    assert used == list(range(1, len(used) + 1))
    with opened(tmp_path, signer, seq_margin=50) as (_, ob):
        if boot_id():  # same boot: the OS kept every commit of the killed process
            assert ob.resumed is None
            # dense: at most the one put that returned but was not printed before the kill
            assert ob.stats().next_seq in (max(used) + 1, max(used) + 2)
        after_kill = ob.stats().next_seq
    assert after_kill > max(used)

    # a second crash, and this time the machine rebooted (another boot id in the mark)
    printed = _run_and_kill(tmp_path, key, margin=50, target=30)
    used += [int(x) for x in printed]
    with EventLog(tmp_path / "events.log", signer, software_id="t") as log:
        mark = log.seq_mark
        assert mark is not None and not mark.clean
        log.record_seq(dataclasses.replace(mark, boot="another-boot"))
    with opened(tmp_path, signer, seq_margin=50) as (_, ob):
        assert ob.resumed is not None and ob.resumed.reason == "unclean_shutdown"
        assert ob.resumed.resumed == mark.reserved
        assert min(put(ob, 1)) > max(used)


def test_an_old_counter_copied_back_is_recorded_and_numbers_still_go_up(
    tmp_path: Path, key: Path
) -> None:
    signer = load_signer(key)
    with opened(tmp_path, signer, seq_margin=4) as (log, ob):
        log.append("startup", {})
        put(ob, 2)
    log_copy = (tmp_path / "events.log").read_bytes()
    counter_copy = counter_path_for(tmp_path / "events.log").read_bytes()
    with opened(tmp_path, signer, seq_margin=4) as (_, ob):
        used = put(ob, 10)
    # the log cut back to an old genuine counter: the log itself cannot tell ...
    (tmp_path / "events.log").write_bytes(log_copy)
    counter_path_for(tmp_path / "events.log").write_bytes(counter_copy)
    with opened(tmp_path, signer, seq_margin=4) as (_, ob):
        # ... but the outbox is above the old head's reservation
        assert ob.resumed is not None and ob.resumed.reason == "head_behind"
        assert min(put(ob, 1)) > max(used)


def _run_and_kill(state: Path, key: Path, *, margin: int, target: int) -> list[str]:
    """Start the child, read ``target`` lines, SIGKILL it, return every line it printed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(CHILD), str(state), str(key), str(margin)]
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
        while True:  # lines written before the kill were promised too: read to EOF
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(fd, 65536) if ready else b""
            if not chunk:
                break
            buf += chunk
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    text = buf.decode()
    return text[: text.rfind("\n") + 1].splitlines()
