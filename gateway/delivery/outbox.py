"""The durable outbox: the only link between device tasks and the MQTT publisher.

Producers (device tasks, the alarm and event logs) call :meth:`Outbox.put`; the
publisher calls :meth:`Outbox.take`, publishes, and calls :meth:`Outbox.settle` once
the broker has acknowledged (PUBACK). Everything runs in one asyncio thread; the
SQLite connection is used from that thread only.

Sealing. A batch is sealed when it enters: it gets the next gateway-wide sequence
number, is encoded and signed by the ``seal`` function, and the exact bytes that
will be published are stored. A redelivery after a crash or reconnect is therefore
byte-identical. Sequence numbers start at 1, strictly increase across all kinds,
and are never reused: the next number is persisted in the same transaction as the
batches that consumed it, so it survives settling every row, restarts and (with
``durability="power"``) power loss.

Durability. The file is SQLite in WAL mode, opened with an exclusive lock so a
second process cannot use the same outbox. When :meth:`Outbox.put` has returned,
the batches are durable at the chosen level:

* ``"process"`` (``PRAGMA synchronous=NORMAL``): a commit reaches the WAL file in
  the operating system's cache. Everything ``put()`` returned survives a crash or
  ``SIGKILL`` of the process. A power loss or kernel panic may lose the most recent
  commits (never corrupts the file: SQLite rolls back to the last synced commit).
* ``"power"`` (``PRAGMA synchronous=FULL``): every commit is fsync'ed before
  ``put()`` returns, so it also survives power loss, provided the storage honours
  flushes (cheap SD cards and USB sticks may not). Costs one fsync per ``put()``.

Bound. ``max_bytes`` bounds the stored payload bytes (the file is larger by
SQLite's page overhead plus a WAL of at most a few MiB); ``max_age_s`` optionally
bounds the age of data batches by their ``sealed_us``. When a ``put()`` goes past a
bound, batches are deleted in the same transaction, the persisted drop counters
grow, and ``on_drop`` is told after the commit — a drop is never silent. What goes:

* past ``max_age_s``: the oldest data batches sealed before the cutoff;
* past ``max_bytes``, by ``overflow``: ``"drop_oldest"`` deletes the oldest data
  batches; ``"thin"`` keeps every ``thin_keep``-th data batch of each stream (the
  ``stream`` given to ``put``, one per device) and deletes the others, oldest part
  first, so a long outage leaves a coarse record of all of it; once everything
  stored has been thinned, thinning starts again from the oldest (1 in k, then 1 in
  k², …: the older, the coarser); only where it frees nothing (one batch per stream
  left) do the oldest data batches go as with ``drop_oldest``;
* alarm and event batches never go while a data batch remains (not by age either);
  only an outbox holding nothing but them drops the oldest of them past ``max_bytes``.

Age is judged by the injected clock; a gateway without RTC that seals batches
before its clock is set may see them age out once the clock jumps forward.

Lanes. Alarm and event batches are *urgent*: :meth:`Outbox.take_urgent` reads them
alone (through a partial index, however long the data backlog), and
:meth:`Outbox.take_data` reads data batches between two sequence numbers, so the
publisher can send alarms and events first, then live data, then the backlog
(:mod:`gateway.delivery.lanes`). :meth:`Outbox.take` still reads every kind in
sequence order.

Integrity. A file that exists but fails ``PRAGMA quick_check`` or whose bookkeeping
is inconsistent raises :class:`OutboxCorrupt` at open; it is never recreated
silently (that would restart sequence numbers). A new file is built under a
temporary name and renamed into place, so an existing file is always a complete
outbox.

Sequence numbers never go back, even when this file is lost or rolled back. With
a ``seq_store`` (the event log's signed head, :class:`gateway.audit.head.SeqMark`)
the outbox *reserves* numbers ahead: no batch is sealed with a number at or above
the reservation before a higher one is durable in the store. At open it trusts its
own ``next_seq`` only when the store shows nothing can have been lost since — a
clean close at exactly that number, or a crash without a reboot (same kernel boot
id, so the OS kept every commit) or with ``durability="power"``, and the file is
not behind the last mark. Otherwise (the file is new, behind, or the machine lost
power) it resumes at the reservation, above every number it can ever have used,
and says so in :attr:`Outbox.resumed` for the event log. The reservation is
renewed in a worker thread (:meth:`Outbox.keep_reserved`) well before it runs out;
only a burst that outruns it waits for a synchronous renewal.

Event numbers. An event batch carries event-log entries; the highest entry number
sealed is kept (``last_event_n``) in the same transaction, so the daemon can
republish at start-up whatever the log holds above it (logged means published).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Protocol, Self

from drivers.base import utc_now_us
from gateway.audit.head import SeqMark
from gateway.common.files import fsync_dir

__all__ = [
    "KINDS",
    "DropReport",
    "Outbox",
    "OutboxClosed",
    "OutboxCorrupt",
    "OutboxError",
    "OutboxLocked",
    "OutboxStats",
    "SealFn",
    "Sealed",
    "SeqResume",
    "SeqStore",
    "boot_id",
]

log = logging.getLogger(__name__)

KINDS: Final = frozenset({"data", "alarm", "event"})
"""The batch kinds (``type`` in docs/wire.md)."""

Durability = Literal["process", "power"]

SealFn = Callable[[str, int, int, list[dict[str, Any]]], bytes]
"""``seal(kind, seq, sealed_us, records) -> payload``: encode and sign one batch."""

_APPLICATION_ID: Final = 0x4D475442  # "MGTB": marks the file as a metrogate outbox
_SCHEMA_VERSION: Final = 1
_SYNCHRONOUS: Final[dict[str, str]] = {"process": "NORMAL", "power": "FULL"}
# what SQLite raises over a file it cannot use; text it cannot decode (a damaged
# header's encoding, a damaged page) comes as UnicodeDecodeError, not as an sqlite3 error
_DAMAGED: Final = (sqlite3.DatabaseError, UnicodeDecodeError)
_FAILED: Final = (sqlite3.Error, UnicodeDecodeError)
_WAL_LIMIT_BYTES: Final = 4 * 1024 * 1024  # truncate the WAL back to this after a checkpoint
# page cache: writes go to the tail, reads to the head; the OS caches the file anyway
# (SQLite's default, 2 MiB, only added resident memory: no measurable speed-up)
_CACHE_KIB: Final = 512
_LOCK_WAIT_S: Final = 1.0  # at open, a lock held by a process still exiting may clear
_IN_CHUNK: Final = 500  # below SQLite's oldest host-parameter limit (999)
_MARK_EVERY_S: Final = 60.0  # a fresh mark (next, events) at most this stale while running
_BOOT_ID: Final = Path("/proc/sys/kernel/random/boot_id")
_META_KEYS: Final = ("next_seq", "dropped_batches", "dropped_records", "created_us")
# added later, so created at open where missing: the seq up to which ``thin`` has thinned
_THINNED_UPTO: Final = "thinned_upto"
_THIN_PASSES: Final = 8  # bounds one put's thinning work; the next put goes on from there
Overflow = Literal["drop_oldest", "thin"]
DropReason = Literal["bytes", "age", "thin"]

_SCHEMA: Final = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE batches (
    seq       INTEGER PRIMARY KEY,
    kind      TEXT    NOT NULL,
    sealed_us INTEGER NOT NULL,
    records   INTEGER NOT NULL,
    nbytes    INTEGER NOT NULL,
    payload   BLOB    NOT NULL,
    stream    TEXT
);
"""
# Alarm and event batches alone, in seq order: the urgent lane is read without scanning
# the data backlog. Created at open where missing, so files made before it work on.
_URGENT_INDEX: Final = (
    "CREATE INDEX IF NOT EXISTS batches_urgent ON batches (seq) WHERE kind != 'data'"
)


SINGLE_RECORD_LIMIT: Final = 16 * 1024 * 1024
"""A record that alone exceeds ``max_payload_bytes`` is still sealed, alone, up to this."""


@dataclass(frozen=True, slots=True)
class Sealed:
    """One stored batch, exactly as it will be published."""

    seq: int
    kind: str
    payload: bytes
    records: int
    sealed_us: int


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """Current content and lifetime drop totals (persisted since the file was created)."""

    batches: int
    records: int
    bytes: int
    oldest_sealed_us: int | None
    dropped_batches: int
    dropped_records: int
    next_seq: int


@dataclass(frozen=True, slots=True)
class DropReport:
    """Batches deleted unsent by one ``put()`` because a bound was exceeded.

    ``first_seq``..``last_seq`` is the range the dropped batches came from (batches
    in it that were already settled, or kept by thinning, are not counted);
    ``reason`` is ``"bytes"`` (``max_bytes``, oldest first), ``"age"`` (``max_age_s``)
    or ``"thin"`` (``max_bytes`` with ``overflow="thin"``); ``urgent`` is True for
    alarm and event batches, which go only when no data batch is left.
    """

    batches: int
    records: int
    first_seq: int
    last_seq: int
    reason: DropReason = "bytes"
    urgent: bool = False


class SeqStore(Protocol):
    """Where the outbox keeps its sequence mark durably (the event log's signed head)."""

    @property
    def seq_mark(self) -> SeqMark | None:
        """The mark recorded before this run (None: none ever was)."""
        ...

    def record_seq(self, mark: SeqMark) -> None:
        """Store ``mark`` durably before returning (any thread)."""
        ...


@dataclass(frozen=True, slots=True)
class SeqResume:
    """The outbox resumed above its own ``next_seq`` (see the module docstring).

    Numbers ``stored`` .. ``resumed - 1`` were never sealed by the file as it is now;
    some of them may have been sealed (and published) before it was lost.
    ``reason``: ``outbox_new`` (the file was created), ``outbox_behind`` (it holds
    fewer numbers than the last mark shows were used), ``unclean_shutdown`` (power
    lost or the system crashed, so the last commits may be gone). ``head_behind``
    records the opposite: the file is above the store's reservation (the store was
    replaced by an older one, or re-initialised without ``--min-seq``); numbers
    continue from the file then, so nothing goes back.
    """

    stored: int
    resumed: int
    reason: str

    def event_data(self) -> dict[str, Any]:
        return {"from": self.stored, "to": self.resumed, "reason": self.reason}


def boot_id() -> str:
    """The running kernel's boot id ("" where the system does not tell)."""
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return ""


class OutboxError(Exception):
    """A failure of the outbox file; carries its path."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"outbox {path}: {message}")
        self.path = path
        self.message = message


class OutboxCorrupt(OutboxError):
    """The file fails its integrity check at open; it must be inspected, not recreated."""


class OutboxLocked(OutboxError):
    """Another process holds the outbox file."""


class OutboxClosed(OutboxError):
    """The outbox was used outside its ``with`` block."""


class Outbox:
    """A bounded, durable, sealed-batch queue on SQLite (see the module docstring).

    Use as a (synchronous) context manager; every method but :meth:`wait_for_new`
    is synchronous and short: a put with ``durability="process"`` costs tens of µs.
    """

    def __init__(
        self,
        path: Path,
        *,
        seal: SealFn,
        max_bytes: int,
        max_age_s: float | None = None,
        durability: Durability = "process",
        max_records: int = 1000,
        max_payload_bytes: int = 256_000,
        clock_us: Callable[[], int] = utc_now_us,
        on_drop: Callable[[DropReport], None] | None = None,
        seq_store: SeqStore | None = None,
        seq_margin: int = 10_000,
        overflow: Overflow = "drop_oldest",
        thin_keep: int = 10,
    ) -> None:
        if durability not in _SYNCHRONOUS:
            raise ValueError(f"durability must be 'process' or 'power', not {durability!r}")
        if max_records < 1:
            raise ValueError(f"max_records must be >= 1, not {max_records}")
        if max_payload_bytes < 1:
            raise ValueError(f"max_payload_bytes must be >= 1, not {max_payload_bytes}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, not {max_bytes}")
        if max_age_s is not None and max_age_s <= 0:
            raise ValueError(f"max_age_s must be > 0, not {max_age_s}")
        if seq_margin < 2:
            raise ValueError(f"seq_margin must be >= 2, not {seq_margin}")
        if overflow not in ("drop_oldest", "thin"):
            raise ValueError(f"overflow must be 'drop_oldest' or 'thin', not {overflow!r}")
        if thin_keep < 2:
            raise ValueError(f"thin_keep must be >= 2, not {thin_keep}")
        self.path = Path(path)
        self.durability: Durability = durability
        self._seal = seal
        self._max_bytes = max_bytes
        self._max_age_us = None if max_age_s is None else round(max_age_s * 1_000_000)
        self._max_records = max_records
        # A batch larger than the whole bound would push itself out on entry.
        self._max_payload_bytes = min(max_payload_bytes, max_bytes)
        self._clock_us = clock_us
        self._on_drop = on_drop
        self._overflow: Overflow = overflow
        self._thin_keep = thin_keep
        # thinning: seq up to which the data was thinned, batches seen per stream since
        # (persisted / in memory), and what a transaction in progress would make of them
        self._thinned_upto = 0
        self._thin_seen: dict[str | None, int] = {}
        self._thin_pending: tuple[int, dict[str | None, int]] | None = None
        self.drop_counts: dict[tuple[DropReason, bool], int] = {}
        """Batches dropped since open, by (reason, urgent): for metrics."""
        self._conn: sqlite3.Connection | None = None
        # Running totals, loaded once at open and kept in step with every commit.
        self._batches = 0
        self._records = 0
        self._bytes = 0
        self._next_seq = 1
        self._dropped_batches = 0
        self._dropped_records = 0
        self._oldest: tuple[int, int] | None = None  # (seq, sealed_us), None = unknown/empty
        # highest seq ever stored per lane (0: none), so readers know when to look again
        self._last_urgent = 0
        self._last_data = 0
        self._waiters: set[asyncio.Future[None]] = set()
        self._in_on_drop = False
        self.before_drop: Callable[[], None] | None = None
        """Called before a put or :meth:`enforce_bounds` drops batches: the publisher
        settles what the broker acknowledged, so a delivered batch is never dropped
        (and reported) for lack of room."""
        self._seq_store = seq_store
        self._margin = seq_margin
        self._reserved: int | None = None  # None: no store, nothing to reserve
        self._last_event_n: int | None = None
        self._marked: tuple[int, int] = (0, 0)  # (next_seq, last_event_n) last recorded
        self._boot = boot_id()
        self._reserve_wanted = asyncio.Event()
        self.created = False
        self.resumed: SeqResume | None = None

    # -- open / close -------------------------------------------------------------

    def __enter__(self) -> Self:
        if self._conn is not None:
            raise OutboxError(self.path, "already open")
        if not self.path.exists():
            try:
                self._create()
            except (sqlite3.Error, OSError) as exc:
                raise OutboxError(self.path, f"cannot create ({exc})") from exc
            self.created = True
        else:
            self._refuse_without_header()
        conn = self._connect()
        try:
            self._check_and_load(conn)
            if self._seq_store is not None:
                self._resume(conn, self._seq_store)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the file (checkpointing the WAL) and wake any waiter so it fails fast.

        With a ``seq_store`` a clean mark is recorded first: the next open trusts
        ``next_seq`` exactly.
        """
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            if self._seq_store is not None and self._reserved is not None:
                try:
                    self._seq_store.record_seq(self._mark(self._reserved, clean=True))
                except Exception as exc:  # the next open resumes at the reservation
                    log.error("outbox %s: clean sequence mark not recorded (%s)", self.path, exc)
        self._wake()

    def _create(self) -> None:
        """Build a fresh outbox beside ``path`` and rename it into place (atomic)."""
        tmp = self.path.with_name(self.path.name + ".new")
        for stale in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), Path(f"{tmp}-journal")):
            stale.unlink(missing_ok=True)
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN IMMEDIATE")
            # Statement by statement: executescript() would commit the open transaction.
            for stmt in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
                conn.execute(stmt)
            conn.execute(_URGENT_INDEX)
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [
                    ("next_seq", 1),
                    ("dropped_batches", 0),
                    ("dropped_records", 0),
                    ("created_us", self._clock_us()),
                ],
            )
            conn.execute("COMMIT")
        finally:
            conn.close()  # last connection: checkpoints and removes the WAL
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)

    def _refuse_without_header(self) -> None:
        """OutboxCorrupt unless the file starts with a whole SQLite header.

        An outbox is created whole, then renamed, so a file shorter than the header
        (empty, or cut) is none; SQLite would take it for a new database and write a
        header into it, and the damaged file would no longer be what was found.
        """
        try:
            with self.path.open("rb") as f:
                head = f.read(100)
        except OSError as exc:
            raise OutboxError(self.path, f"cannot open ({exc.strerror})") from exc
        if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
            raise OutboxCorrupt(self.path, "not an outbox (no SQLite header); left as it is")

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=_LOCK_WAIT_S)
        except _FAILED as exc:
            raise OutboxError(self.path, f"cannot open ({exc})") from exc
        try:
            # EXCLUSIVE before WAL: one owner, and the WAL index lives in heap, not -shm.
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxError(self.path, f"cannot use WAL journal (got {mode!r})")
            conn.execute(f"PRAGMA synchronous = {_SYNCHRONOUS[self.durability]}")
            conn.execute(f"PRAGMA journal_size_limit = {_WAL_LIMIT_BYTES}")
            conn.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
        except _DAMAGED as exc:
            conn.close()
            raise self._open_error(exc) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_error(self, exc: sqlite3.DatabaseError | UnicodeDecodeError) -> OutboxError:
        """Classify an SQLite failure at open: held by another process, or damaged."""
        if isinstance(exc, sqlite3.OperationalError) and (
            "locked" in str(exc) or "busy" in str(exc)
        ):
            return OutboxLocked(self.path, "in use by another process")
        return OutboxCorrupt(self.path, f"not a readable outbox ({exc})")

    def _check_and_load(self, conn: sqlite3.Connection) -> None:
        """Integrity check, then load the running totals (the only full scan)."""
        try:
            problems = [r[0] for r in conn.execute("PRAGMA quick_check(10)")]
            if problems != ["ok"]:
                raise OutboxCorrupt(self.path, "integrity check failed: " + "; ".join(problems))
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if app_id != _APPLICATION_ID:
                raise OutboxCorrupt(self.path, "not a metrogate outbox (application_id)")
            if version != _SCHEMA_VERSION:
                raise OutboxError(self.path, f"unsupported outbox schema version {version}")
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            missing = [k for k in _META_KEYS if not isinstance(meta.get(k), int)]
            if missing:
                raise OutboxCorrupt(self.path, f"bookkeeping lost: {', '.join(missing)}")
            n, recs, nbytes, max_seq, bad = conn.execute(
                "SELECT count(*), total(records), total(nbytes), max(seq),"
                " sum(kind NOT IN ('data','alarm','event') OR nbytes != length(payload))"
                " FROM batches"
            ).fetchone()
        except _DAMAGED as exc:
            raise self._open_error(exc) from exc
        if meta["next_seq"] < 1 or (max_seq is not None and meta["next_seq"] <= max_seq):
            raise OutboxCorrupt(
                self.path, f"next_seq {meta['next_seq']} is not above stored seq {max_seq}"
            )
        if bad:
            raise OutboxCorrupt(self.path, f"{bad} batch rows are inconsistent")
        self._batches, self._records, self._bytes = n, int(recs), int(nbytes)
        self._next_seq = meta["next_seq"]
        self._dropped_batches = meta["dropped_batches"]
        self._dropped_records = meta["dropped_records"]
        event_n = meta.get("last_event_n")
        self._last_event_n = event_n if isinstance(event_n, int) else None
        self._oldest = None
        try:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(batches)")}
            if "stream" not in columns:  # files made before streams: their batches have none
                conn.execute("ALTER TABLE batches ADD COLUMN stream TEXT")
            conn.execute(_URGENT_INDEX)
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, 0)", (_THINNED_UPTO,))
            (thinned,) = conn.execute(
                "SELECT value FROM meta WHERE key = ?", (_THINNED_UPTO,)
            ).fetchone()
            (last_urgent,) = conn.execute(
                "SELECT max(seq) FROM batches WHERE kind != 'data'"
            ).fetchone()
            (last_data,) = conn.execute(
                "SELECT max(seq) FROM batches WHERE kind = 'data'"
            ).fetchone()
        except _DAMAGED as exc:
            raise self._open_error(exc) from exc
        self._last_urgent, self._last_data = last_urgent or 0, last_data or 0
        self._thinned_upto = int(thinned)

    # -- sequence reservation -----------------------------------------------------

    def _mark(self, reserved: int, *, clean: bool = False) -> SeqMark:
        return SeqMark(self._next_seq, reserved, self._last_event_n or 0, clean, self._boot)

    def _resume(self, conn: sqlite3.Connection, store: SeqStore) -> None:
        """Choose the first number of this run (module docstring) and reserve ahead."""
        mark = store.seq_mark
        stored = self._next_seq
        start, reason = stored, None
        if mark is not None:
            intact = stored >= mark.next and not self.created
            survived = self.durability == "power" or (bool(self._boot) and mark.boot == self._boot)
            exact = mark.clean and stored == mark.next and not self.created
            if stored > mark.reserved:
                reason = "head_behind"
            elif not exact and not (intact and survived):
                start = mark.reserved
                if self.created:
                    reason = "outbox_new"
                elif stored < mark.next:
                    reason = "outbox_behind"
                else:
                    reason = "unclean_shutdown"
        if start != stored:
            with self._transaction(conn, "cannot resume the sequence"):
                conn.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (start,))
            self._next_seq = start
        if reason is not None:
            self.resumed = SeqResume(stored, start, reason)
            log.warning(
                "outbox %s: sequence numbers resume at %d, not %d (%s)",
                self.path,
                start,
                stored,
                reason,
            )
        if self._last_event_n is None and mark is not None and (self.created or start != stored):
            self._last_event_n = mark.events  # what the lost file had sealed, at least
        self._record_reservation(self._next_seq + self._margin)

    def _record_reservation(self, reserved: int) -> None:
        """Make ``reserved`` durable in the store before any number below it is used."""
        assert self._seq_store is not None
        try:
            self._seq_store.record_seq(self._mark(reserved))
        except Exception as exc:
            raise OutboxError(self.path, f"cannot reserve sequence numbers ({exc})") from exc
        self._reserved = reserved
        self._marked = (self._next_seq, self._last_event_n or 0)

    def reservation_due(self) -> SeqMark | None:
        """The mark to record now, if any: the reservation is half used, or the last mark
        is stale (numbers or events moved on). :meth:`keep_reserved` records it."""
        if self._reserved is None or self._conn is None:
            return None
        if self._reserved - self._next_seq < self._margin // 2:
            return self._mark(self._next_seq + self._margin)
        if self._marked != (self._next_seq, self._last_event_n or 0):
            return self._mark(self._reserved)
        return None

    def reserved(self, mark: SeqMark) -> None:
        """``mark`` (from :meth:`reservation_due`) is durable: numbers below it are usable."""
        if self._reserved is not None and mark.reserved > self._reserved:
            self._reserved = mark.reserved
        self._marked = (mark.next, mark.events)

    async def keep_reserved(self, *, every: float = _MARK_EVERY_S) -> None:
        """Renew the reservation and refresh the mark in a worker thread, forever.

        Checks every ``every`` s, and at once when a put used half the reservation.
        A failure is logged and retried at the next check; :meth:`put` falls back to
        a synchronous renewal when the reservation runs out. Returns at once without
        a ``seq_store``.
        """
        store = self._seq_store
        if store is None:
            return
        self._reserve_wanted = asyncio.Event()
        while self._conn is not None:
            try:
                async with asyncio.timeout(every):
                    await self._reserve_wanted.wait()
            except TimeoutError:
                pass
            self._reserve_wanted.clear()
            mark = self.reservation_due()
            if mark is None:
                continue
            try:
                await asyncio.to_thread(store.record_seq, mark)
            except Exception as exc:  # retried; put() renews synchronously if it must
                log.error("outbox %s: sequence mark not recorded (%s)", self.path, exc)
                continue
            self.reserved(mark)

    @property
    def next_seq(self) -> int:
        """The sequence number the next batch will get."""
        return self._next_seq

    @property
    def last_event_n(self) -> int | None:
        """The highest event-log entry number sealed into an event batch, as far as
        this file knows (None: it does not know — new, from an older version)."""
        return self._last_event_n

    # -- producer side ------------------------------------------------------------

    def put(
        self, kind: str, records: list[dict[str, Any]], *, stream: str | None = None
    ) -> list[int]:
        """Seal ``records`` into one or more batches and store them durably.

        ``stream`` names where the records come from (a device id): thinning keeps
        every ``thin_keep``-th batch of each stream.

        Records are split into chunks of at most ``max_records`` whose sealed payload
        is at most ``max_payload_bytes`` (a chunk that seals too big is halved, and
        later chunks of the same call keep the smaller size); each chunk gets the next
        seq. All chunks, the advanced seq counter and any drops the bound forces are
        one transaction. Returns the assigned seqs in order (empty for no records).
        A single call larger than ``max_bytes`` drops its own oldest batches, reported
        like any other drop.

        Raises ``ValueError`` for an unknown kind or a record that alone seals larger
        than ``max_payload_bytes``; :class:`OutboxError` if the write fails. Either
        way nothing was stored and no seq was consumed.
        """
        conn = self._require_open()
        if kind not in KINDS:
            raise ValueError(f"unknown batch kind {kind!r} (expected one of {sorted(KINDS)})")
        if self._in_on_drop:
            # A put from inside on_drop could cascade drops without end; defer instead.
            raise RuntimeError("Outbox.put() called from on_drop; schedule it instead")
        if not records:
            return []
        sealed_us = self._clock_us()
        rows = self._seal_chunks(kind, sealed_us, records)
        new_bytes = sum(r[4] for r in rows)
        new_records = sum(r[3] for r in rows)
        next_seq = rows[-1][0] + 1
        if self._reserved is not None and next_seq > self._reserved:
            # a burst outran the renewal: renew here, before any of these numbers is used
            self._record_reservation(next_seq + self._margin)
        event_n = _highest_event_n(records) if kind == "event" else None
        if self.before_drop is not None and self._would_drop(new_bytes, sealed_us):
            self._settle_first()
        with self._transaction(conn, "cannot store batch"):
            conn.executemany(
                "INSERT INTO batches (seq, kind, sealed_us, records, nbytes, payload, stream)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(*row, stream) for row in rows],
            )
            conn.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (next_seq,))
            if event_n is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_event_n', ?)",
                    (event_n,),
                )
            drops, freed = self._drop_in_txn(conn, self._bytes + new_bytes, sealed_us)
        self._next_seq = next_seq
        if event_n is not None:
            self._last_event_n = event_n
        if self._reserved is not None and self._reserved - next_seq < self._margin // 2:
            self._reserve_wanted.set()
        if kind == "data":
            self._last_data = rows[-1][0]
        else:
            self._last_urgent = rows[-1][0]
        self._batches += len(rows)
        self._records += new_records
        self._bytes += new_bytes
        if self._oldest is None and self._batches == len(rows):
            self._oldest = (rows[0][0], sealed_us)
        self._apply_drops(drops, freed)
        self._wake()
        self._report(drops)
        return [r[0] for r in rows]

    def enforce_bounds(self) -> list[DropReport]:
        """Apply ``max_age_s`` now (``put()`` does this itself); returns what was dropped.

        Call it periodically while nothing is put, so an idle outbox still ages out.
        """
        conn = self._require_open()
        if self._batches == 0:
            return []
        if self.before_drop is not None and self._would_drop(0, self._clock_us()):
            self._settle_first()
        with self._transaction(conn, "cannot drop old batches"):
            drops, freed = self._drop_in_txn(conn, self._bytes, self._clock_us())
        self._apply_drops(drops, freed)
        self._report(drops)
        return drops

    def _would_drop(self, new_bytes: int, now_us: int) -> bool:
        """Whether storing ``new_bytes`` more (now) goes past a bound (age: as far as the
        oldest batch is known)."""
        if self._bytes + new_bytes > self._max_bytes:
            return True
        oldest = self._oldest
        return (
            self._max_age_us is not None
            and oldest is not None
            and oldest[1] < now_us - self._max_age_us
        )

    def _settle_first(self) -> None:
        """Let the consumer settle what it has acknowledged before anything is dropped:
        a delivered batch must not be reported as dropped."""
        assert self.before_drop is not None
        try:
            self.before_drop()
        except Exception:  # the drop goes ahead; at worst a delivered batch is counted
            log.exception("outbox %s: before_drop handler failed", self.path)

    @contextmanager
    def _transaction(self, conn: sqlite3.Connection, what: str) -> Iterator[None]:
        """One write transaction: committed on success, rolled back on any error.

        SQLite failures surface as :class:`OutboxError` naming ``what`` failed.
        """
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                conn.execute("COMMIT")
            except BaseException:
                # SQLite may already have rolled back by itself (e.g. on a full disk).
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except _FAILED as exc:
            raise OutboxError(self.path, f"{what} ({exc})") from exc

    def _seal_chunks(
        self, kind: str, sealed_us: int, records: list[dict[str, Any]]
    ) -> list[tuple[int, str, int, int, int, bytes]]:
        """Rows ``(seq, kind, sealed_us, records, nbytes, payload)`` ready to insert."""
        rows: list[tuple[int, str, int, int, int, bytes]] = []
        seq = self._next_seq
        size = self._max_records
        i = 0
        while i < len(records):
            chunk = records[i : i + size]
            payload = self._seal(kind, seq, sealed_us, chunk)
            if len(payload) > self._max_payload_bytes and len(chunk) > 1:
                size = len(chunk) // 2
                continue
            if len(payload) > SINGLE_RECORD_LIMIT:
                raise ValueError(
                    f"one {kind} record seals to {len(payload)} bytes,"
                    f" above the {SINGLE_RECORD_LIMIT} bytes one batch may ever hold"
                )
            if len(payload) > self._max_payload_bytes:
                # a lone record (e.g. the parameter baseline of a big site) travels alone
                log.warning("a %s batch of one record is %d bytes", kind, len(payload))
            rows.append((seq, kind, sealed_us, len(chunk), len(payload), bytes(payload)))
            seq += 1
            i += len(chunk)
        return rows

    def _drop_in_txn(
        self, conn: sqlite3.Connection, total_bytes: int, now_us: int
    ) -> tuple[list[DropReport], int]:
        """Delete what the bounds force out (module docstring), in the caller's transaction.

        Returns the reports and the payload bytes freed; the thinning state it would
        leave is kept in ``_thin_pending`` until :meth:`_apply_drops` (after the commit).
        """
        self._thin_pending = None
        cutoff = None if self._max_age_us is None else now_us - self._max_age_us
        if total_bytes <= self._max_bytes:
            if cutoff is None:
                return [], 0
            row = conn.execute(
                "SELECT sealed_us FROM batches WHERE kind = 'data' ORDER BY seq LIMIT 1"
            ).fetchone()
            if row is None or row[0] >= cutoff:
                return [], 0
        picks: dict[tuple[DropReason, bool], list[tuple[int, int]]] = {}  # -> (seq, records)
        gone: set[int] = set()
        freed = 0

        def pick(reason: DropReason, urgent: bool, seq: int, recs: int, nbytes: int) -> None:
            nonlocal freed
            picks.setdefault((reason, urgent), []).append((seq, recs))
            gone.add(seq)
            freed += nbytes

        def over() -> bool:
            return total_bytes - freed > self._max_bytes

        data = "SELECT seq, records, nbytes, sealed_us, stream FROM batches WHERE kind = 'data'"
        if cutoff is not None:
            for seq, recs, nbytes, sealed, _ in _rows(conn, data + " ORDER BY seq"):
                if sealed >= cutoff:
                    break
                pick("age", False, seq, recs, nbytes)
        if over() and self._overflow == "thin":
            upto, seen = self._thinned_upto, dict(self._thin_seen)
            for _ in range(_THIN_PASSES):
                started_at, picked_before = upto, len(gone)
                for seq, recs, nbytes, _, stream in _rows(
                    conn, data + " AND seq > ? ORDER BY seq", (upto,)
                ):
                    if not over():
                        break
                    upto = seq
                    if seq in gone:
                        continue
                    n = seen.get(stream, 0)
                    seen[stream] = n + 1
                    if n % self._thin_keep:
                        pick("thin", False, seq, recs, nbytes)
                if not over() or (started_at == 0 and len(gone) == picked_before):
                    break  # enough, or a whole pass found nothing more to thin
                # everything was thinned: a new pass from the oldest, coarser still
                upto, seen = 0, {}
            self._thin_pending = (upto, seen)
            conn.execute("UPDATE meta SET value = ? WHERE key = ?", (upto, _THINNED_UPTO))
        if over():
            for seq, recs, nbytes, _, _ in _rows(conn, data + " ORDER BY seq"):
                if not over():
                    break
                if seq not in gone:
                    pick("bytes", False, seq, recs, nbytes)
        if over():  # nothing but alarm and event batches left
            for seq, recs, nbytes in _rows(
                conn, "SELECT seq, records, nbytes FROM batches WHERE kind != 'data' ORDER BY seq"
            ):
                if not over():
                    break
                pick("bytes", True, seq, recs, nbytes)
        if not picks:
            return [], 0
        doomed = sorted(gone)
        for i in range(0, len(doomed), _IN_CHUNK):
            chunk = doomed[i : i + _IN_CHUNK]
            conn.execute(f"DELETE FROM batches WHERE seq IN ({','.join('?' * len(chunk))})", chunk)
        for picked in picks.values():
            picked.sort()  # a second thinning pass picks older batches after newer ones
        reports = [
            DropReport(len(part), sum(r for _, r in part), part[0][0], part[-1][0], reason, urgent)
            for (reason, urgent), part in sorted(picks.items(), key=lambda kv: kv[1][0][0])
        ]
        for key, amount in (
            ("dropped_batches", sum(d.batches for d in reports)),
            ("dropped_records", sum(d.records for d in reports)),
        ):
            conn.execute("UPDATE meta SET value = value + ? WHERE key = ?", (amount, key))
        return reports, freed

    def _apply_drops(self, drops: list[DropReport], freed: int) -> None:
        """Bring the in-memory totals in step with a committed drop."""
        if self._thin_pending is not None:
            self._thinned_upto, self._thin_seen = self._thin_pending
            self._thin_pending = None
        if not drops:
            return
        n = sum(d.batches for d in drops)
        recs = sum(d.records for d in drops)
        self._batches -= n
        self._records -= recs
        self._bytes -= freed
        self._dropped_batches += n
        self._dropped_records += recs
        self._oldest = None
        for d in drops:
            key = (d.reason, d.urgent)
            self.drop_counts[key] = self.drop_counts.get(key, 0) + d.batches

    def _report(self, drops: list[DropReport]) -> None:
        """Tell ``on_drop`` about each drop; a failing handler is logged, not raised.

        The batches are committed by now, so ``put()`` must still return their seqs.
        """
        if self._on_drop is None:
            return
        for report in drops:
            self._in_on_drop = True
            try:
                self._on_drop(report)
            except Exception:
                log.exception("outbox %s: on_drop handler failed for %s", self.path, report)
            finally:
                self._in_on_drop = False

    # -- consumer side ------------------------------------------------------------

    def take(self, limit: int, after_seq: int = 0, *, skip: Collection[str] = ()) -> list[Sealed]:
        """Up to ``limit`` stored batches with ``seq > after_seq``, oldest first, leaving
        out the kinds in ``skip`` (those the broker refuses for now).

        Taking does not remove anything; :meth:`settle` does.
        """
        conn = self._require_open()
        if limit < 1:
            return []
        kinds = sorted(KINDS - set(skip))
        if not kinds:
            return []
        marks = ",".join("?" * len(kinds))
        try:
            rows = conn.execute(
                "SELECT seq, kind, payload, records, sealed_us FROM batches"
                f" WHERE seq > ? AND kind IN ({marks}) ORDER BY seq LIMIT ?",
                (after_seq, *kinds, limit),
            ).fetchall()
        except _FAILED as exc:
            raise OutboxError(self.path, f"cannot read batches ({exc})") from exc
        return [Sealed(seq, kind, bytes(p), recs, ts) for seq, kind, p, recs, ts in rows]

    def take_urgent(self, limit: int, after_seq: int = 0) -> list[Sealed]:
        """Up to ``limit`` alarm and event batches with ``seq > after_seq``, oldest first."""
        return self._select(
            "WHERE kind != 'data' AND seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
        )

    def take_data(
        self, limit: int, after_seq: int = 0, before_seq: int | None = None
    ) -> list[Sealed]:
        """Up to ``limit`` data batches with ``after_seq < seq < before_seq``, oldest first."""
        below = self._next_seq if before_seq is None else before_seq
        return self._select(
            "WHERE seq > ? AND seq < ? AND kind = 'data' ORDER BY seq LIMIT ?",
            (after_seq, below, limit),
        )

    def _select(self, where: str, args: tuple[int, ...]) -> list[Sealed]:
        conn = self._require_open()
        if args[-1] < 1:
            return []
        try:
            rows = conn.execute(
                "SELECT seq, kind, payload, records, sealed_us FROM batches " + where, args
            ).fetchall()
        except _FAILED as exc:
            raise OutboxError(self.path, f"cannot read batches ({exc})") from exc
        return [Sealed(seq, kind, bytes(p), recs, ts) for seq, kind, p, recs, ts in rows]

    @property
    def last_urgent_seq(self) -> int:
        """The highest seq ever stored in an alarm or event batch here (0: none yet)."""
        return self._last_urgent

    @property
    def last_data_seq(self) -> int:
        """The highest seq ever stored in a data batch here (0: none yet)."""
        return self._last_data

    @property
    def fill_ratio(self) -> float:
        """Stored payload bytes over ``max_bytes`` (from memory)."""
        return self._bytes / self._max_bytes

    @property
    def dropped_batches(self) -> int:
        """Batches dropped unsent since the file was created; grows with every drop."""
        return self._dropped_batches

    def next_put(self) -> asyncio.Future[None]:
        """A future that completes at the next :meth:`put` (or when the outbox closes).

        For a consumer that waits on more than the outbox (``asyncio.wait`` on several
        futures); cancelling it is harmless.
        """
        self._require_open()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        waiter.add_done_callback(self._waiters.discard)  # a cancelled one leaves too
        return waiter

    def settle(self, seqs: Iterable[int]) -> None:
        """Delete the given batches (the broker acknowledged them), in one transaction.

        Unknown seqs (already settled, or dropped by the bound) are ignored.
        """
        conn = self._require_open()
        wanted = sorted(set(seqs))
        if not wanted:
            return
        gone_batches = gone_records = gone_bytes = 0
        with self._transaction(conn, "cannot settle batches"):
            for i in range(0, len(wanted), _IN_CHUNK):
                part = wanted[i : i + _IN_CHUNK]
                marks = ",".join("?" * len(part))
                n, recs, nbytes = conn.execute(
                    f"SELECT count(*), total(records), total(nbytes) FROM batches"
                    f" WHERE seq IN ({marks})",
                    part,
                ).fetchone()
                conn.execute(f"DELETE FROM batches WHERE seq IN ({marks})", part)
                gone_batches += n
                gone_records += int(recs)
                gone_bytes += int(nbytes)
        self._batches -= gone_batches
        self._records -= gone_records
        self._bytes -= gone_bytes
        if self._oldest is not None and self._oldest[0] in set(wanted):
            self._oldest = None

    # The API takes a plain timeout: the publisher's loop passes its idle deadline.
    async def wait_for_new(self, after_seq: int, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait up to ``timeout`` s for a stored batch with ``seq > after_seq``.

        Returns True as soon as one exists (at once if one already does), False on
        timeout. Raises :class:`OutboxClosed` if the outbox closes meanwhile.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        while not self._exists_after(after_seq):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.add(waiter)
            try:
                async with asyncio.timeout(remaining):
                    await waiter
            except TimeoutError:
                return self._exists_after(after_seq)
            finally:
                self._waiters.discard(waiter)
        return True

    def _exists_after(self, after_seq: int) -> bool:
        conn = self._require_open()
        if after_seq >= self._next_seq - 1 or self._batches == 0:
            return False
        row = conn.execute("SELECT 1 FROM batches WHERE seq > ? LIMIT 1", (after_seq,))
        return row.fetchone() is not None

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    # -- observation --------------------------------------------------------------

    def stats(self) -> OutboxStats:
        """Current totals from memory (plus one indexed lookup for the oldest batch)."""
        self._require_open()
        oldest = self._oldest_row()
        return OutboxStats(
            batches=self._batches,
            records=self._records,
            bytes=self._bytes,
            oldest_sealed_us=None if oldest is None else oldest[1],
            dropped_batches=self._dropped_batches,
            dropped_records=self._dropped_records,
            next_seq=self._next_seq,
        )

    def sqlite_settings(self) -> dict[str, str | int]:
        """The connection's effective journal mode, synchronous level and locking mode."""
        conn = self._require_open()
        return {
            "journal_mode": conn.execute("PRAGMA journal_mode").fetchone()[0],
            "synchronous": conn.execute("PRAGMA synchronous").fetchone()[0],
            "locking_mode": conn.execute("PRAGMA locking_mode").fetchone()[0],
        }

    def _oldest_row(self) -> tuple[int, int] | None:
        if self._batches == 0:
            return None
        if self._oldest is None:
            conn = self._require_open()
            row = conn.execute("SELECT seq, sealed_us FROM batches ORDER BY seq LIMIT 1")
            found = row.fetchone()
            self._oldest = None if found is None else (int(found[0]), int(found[1]))
        return self._oldest

    def _require_open(self) -> sqlite3.Connection:
        if self._conn is None:
            raise OutboxClosed(self.path, "not open (use it inside a with block)")
        return self._conn


def _highest_event_n(records: list[dict[str, Any]]) -> int | None:
    """The largest entry number ``n`` among event records (None: none carries one)."""
    found = [r["n"] for r in records if isinstance(r.get("n"), int)]
    return max(found) if found else None


def _rows(conn: sqlite3.Connection, sql: str, args: tuple[int, ...] = ()) -> Iterator[Any]:
    """The rows of ``sql``, read as they are consumed; the cursor is closed when done."""
    cur = conn.execute(sql, args)
    try:
        yield from cur
    finally:
        cur.close()
