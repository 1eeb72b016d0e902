"""The outbox at its bound, by overflow policy: what is kept, what goes, counts, reports."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from gateway.delivery.outbox import DropReport, Outbox
from tests.unit.test_outbox import T0, FakeClock, make, recs, seal


def size_of(kind: str = "data") -> int:
    """Payload bytes of one batch of one two-digit record (all such batches are this size)."""
    return len(seal(kind, 10, T0, recs(1, 10)))


def fill(ob: Outbox, kinds: str, *, streams: int = 1) -> list[int]:
    """One batch per letter (d: data, a: alarm, e: event), data round-robin over streams."""
    seqs = []
    n = 0
    for k in kinds:
        kind = {"d": "data", "a": "alarm", "e": "event"}[k]
        stream = f"dev{n % streams}" if kind == "data" else None
        n += kind == "data"
        seqs += ob.put(kind, recs(1, 10), stream=stream)
    return seqs


def kept(ob: Outbox) -> list[tuple[int, str]]:
    return [(b.seq, b.kind) for b in ob.take(100_000)]


@pytest.mark.parametrize("overflow", ["drop_oldest", "thin"])
def test_alarms_and_events_stay_while_data_remains(tmp_path: Path, overflow: Any) -> None:
    reports: list[DropReport] = []
    with make(
        tmp_path / "o.db", max_bytes=size_of() * 6, on_drop=reports.append, overflow=overflow
    ) as ob:
        fill(ob, "aedddd")  # 1 alarm, 2 event, 3..6 data: at the bound
        assert reports == []
        fill(ob, "dd")  # 7, 8: two over
        assert [s for s, k in kept(ob) if k != "data"] == [1, 2]
        assert len(kept(ob)) == 6
        assert all(not r.urgent for r in reports) and sum(r.batches for r in reports) == 2
        assert sum(ob.drop_counts.values()) == 2 and ob.stats().dropped_batches == 2


def test_drop_oldest_takes_the_oldest_data_exactly(tmp_path: Path) -> None:
    reports: list[DropReport] = []
    with make(tmp_path / "o.db", max_bytes=size_of() * 4, on_drop=reports.append) as ob:
        fill(ob, "dadd")  # 1 data, 2 alarm, 3 data, 4 data
        fill(ob, "d")  # 5: drops 1
        fill(ob, "e")  # 6: drops 3 (2 is an alarm)
        assert kept(ob) == [(2, "alarm"), (4, "data"), (5, "data"), (6, "event")]
    assert reports == [DropReport(1, 1, 1, 1, "bytes"), DropReport(1, 1, 3, 3, "bytes")]


def test_only_alarms_and_events_left_then_the_oldest_of_them_go(tmp_path: Path) -> None:
    reports: list[DropReport] = []
    with make(tmp_path / "o.db", max_bytes=size_of() * 3, on_drop=reports.append) as ob:
        fill(ob, "deaa")  # 1 data goes first
        fill(ob, "e")  # 5: no data left: the oldest urgent batch (2) goes
        assert kept(ob) == [(3, "alarm"), (4, "alarm"), (5, "event")]
        assert ob.drop_counts == {("bytes", False): 1, ("bytes", True): 1}
    assert reports == [
        DropReport(1, 1, 1, 1, "bytes", urgent=False),
        DropReport(1, 1, 2, 2, "bytes", urgent=True),
    ]


def test_max_age_applies_to_data_only(tmp_path: Path) -> None:
    clock = FakeClock()
    reports: list[DropReport] = []
    with make(tmp_path / "o.db", max_age_s=60, clock_us=clock, on_drop=reports.append) as ob:
        fill(ob, "eda")  # 1 event, 2 data, 3 alarm, all at 0 s
        clock.now_us += 61_000_000
        fill(ob, "d")  # 4: the old data batch goes, the old event and alarm stay
        assert kept(ob) == [(1, "event"), (3, "alarm"), (4, "data")]
    assert reports == [DropReport(1, 1, 2, 2, "age")]


def test_thin_keeps_every_kth_batch_of_each_device(tmp_path: Path) -> None:
    """Three devices polled in turn; the bound holds 60 batches; 150 are put."""
    reports: list[DropReport] = []
    k = 5
    with make(
        tmp_path / "o.db",
        max_bytes=size_of() * 60,
        on_drop=reports.append,
        overflow="thin",
        thin_keep=k,
    ) as ob:
        fill(ob, "d" * 150, streams=3)
        left = [b.seq for b in ob.take(1000)]
        stats = ob.stats()
    # full to the last batch (three-digit seqs seal one byte longer: 59 or 60 fit)
    assert size_of() * 60 - size_of() < stats.bytes <= size_of() * 60
    assert all(r.reason == "thin" for r in reports)
    assert sum(r.batches for r in reports) == 150 - len(left) == stats.dropped_batches
    # the thinned part is the oldest: there, each device kept its 1st, (k+1)-th, ... batch
    newest_thinned = max(r.last_seq for r in reports)
    for dev in range(3):
        polls = list(range(1 + dev, 151, 3))  # this device's batches, in order
        thinned = [s for s in polls if s <= newest_thinned]
        assert [s for s in thinned if s in left] == thinned[::k], f"dev{dev}"
        assert [s for s in polls if s > newest_thinned] == [
            s for s in left if s > newest_thinned and (s - 1) % 3 == dev
        ]  # newer than that: all kept


def test_thin_goes_on_where_it_stopped_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    opts: dict[str, Any] = {"max_bytes": size_of() * 20, "overflow": "thin", "thin_keep": 2}
    with make(path, **opts) as ob:
        fill(ob, "d" * 25)
        first = {b.seq for b in ob.take(1000)}
    with make(path, **opts) as ob:
        fill(ob, "d" * 3)
        after = {b.seq for b in ob.take(1000)}
    # what was thinned before the restart is not thinned again: its survivors stay
    survivors = {s for s in first if s < min(set(range(1, 26)) - first)} | {1}
    assert survivors <= after


def test_thin_starts_over_so_the_older_part_is_coarser(tmp_path: Path) -> None:
    reports: list[DropReport] = []
    with make(
        tmp_path / "o.db",
        max_bytes=size_of() * 12,
        on_drop=reports.append,
        overflow="thin",
        thin_keep=2,
    ) as ob:
        fill(ob, "d" * 300)
        left = [s for s, _ in kept(ob)]
    assert {r.reason for r in reports} == {"thin"}
    assert sum(r.batches for r in reports) == 300 - len(left)
    assert left[0] == 1 and left[-1] == 300  # the whole outage is still covered
    gaps = [b - a for a, b in itertools.pairwise(left)]
    half = len(gaps) // 2
    assert sum(gaps[:half]) > 2 * sum(gaps[-half:])  # older: sparser


def test_where_thinning_frees_nothing_the_oldest_data_goes(tmp_path: Path) -> None:
    reports: list[DropReport] = []
    with make(
        tmp_path / "o.db", max_bytes=size_of() * 3, on_drop=reports.append, overflow="thin"
    ) as ob:
        fill(ob, "ddd", streams=3)  # one batch per device: nothing to thin
        ob.put("data", recs(1, 10), stream="dev3")
        assert [s for s, _ in kept(ob)] == [2, 3, 4]
    assert reports == [DropReport(1, 1, 1, 1, "bytes")]


def test_old_files_get_the_stream_column(tmp_path: Path) -> None:
    import sqlite3
    from contextlib import closing

    path = tmp_path / "o.db"
    with make(path) as ob:
        fill(ob, "dd")
    with closing(sqlite3.connect(path)) as db:
        db.execute("ALTER TABLE batches DROP COLUMN stream")
        db.execute("DELETE FROM meta WHERE key = 'thinned_upto'")
        db.commit()
    with make(path, overflow="thin", max_bytes=size_of() * 3) as ob:
        fill(ob, "dd", streams=2)
        assert len(kept(ob)) == 3


@pytest.mark.parametrize("bad", [{"overflow": "newest"}, {"thin_keep": 1}])
def test_bad_policy_settings_are_refused(tmp_path: Path, bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        make(tmp_path / "o.db", **bad)


def test_what_the_consumer_acknowledged_is_settled_before_anything_is_dropped(
    tmp_path: Path,
) -> None:
    """An acknowledged batch not yet settled must not be dropped and reported as lost."""
    reports: list[DropReport] = []
    with make(tmp_path / "o.db", max_bytes=size_of() * 4, on_drop=reports.append) as ob:
        acked = fill(ob, "dddd")[:2]  # the broker acknowledged the first two
        calls: list[int] = []

        def settle_acknowledged() -> None:
            calls.append(1)
            ob.settle(acked)
            acked.clear()

        ob.before_drop = settle_acknowledged
        fill(ob, "d")  # one over the bound: the acknowledged ones make the room
        assert calls == [1] and reports == [] and ob.dropped_batches == 0
        assert [seq for seq, _ in kept(ob)] == [3, 4, 5]
        fill(ob, "dd")  # nothing acknowledged left to settle: now the oldest data goes
        assert ob.dropped_batches == 1 and [r.first_seq for r in reports] == [3]
