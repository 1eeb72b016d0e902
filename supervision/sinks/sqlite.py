"""An embedded SQLite store for small sites and the demo, behind the same interface.

Tables: ``readings`` (gateway, device, point, ts_us) with the same content as the
InfluxDB ``reading`` measurement (its ``server_ts_us`` column is added to a store made
before it existed); ``batches`` (gateway, seq) with the body's
``digest``; ``items`` (alarm and event entries, (gateway, seq, idx));
``gateway_status`` (gateway: the latest status); ``security`` (security events,
(gateway, kind, seq, digest); given the message columns ``reason``, ``topic``,
``digest`` when a store made before them is opened). WAL mode, ``synchronous=FULL``:
a write returns only once its transaction is on disk, so what the ingest
acknowledges survives a power cut.

Nothing stored is ever replaced. Each chunk of a data, alarm or event batch is
written after its ``batches`` row: if that row exists with the same digest, the batch
is stored already and the chunk is skipped (a redelivery); with another digest the
write fails with :class:`~supervision.sinks.StoreConflict`. A reading whose key is
held by another batch's reading fails the write with
:class:`~supervision.sinks.StoreRejected` (its batch is then dead-lettered, the stored
reading stays). A status message updates ``gateway_status`` only if it is not older.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from supervision.model import Batch, ReadingChecker, SecurityEvent, Status, rows_of
from supervision.sinks import (
    GatewayHigh,
    StoreConflict,
    StoredBatch,
    StoreRejected,
    StoreUnavailable,
)

__all__ = ["SCHEMA", "SqliteChunk", "SqliteSink"]

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    site TEXT NOT NULL, gateway TEXT NOT NULL, device TEXT NOT NULL, point TEXT NOT NULL,
    instrument TEXT, unit TEXT, ts_us INTEGER NOT NULL,
    value, raw, quality TEXT NOT NULL, reason TEXT, flags TEXT,
    U REAL, k REAL, verdict TEXT, certificate TEXT, seq INTEGER NOT NULL, server_ts_us INTEGER,
    PRIMARY KEY (gateway, device, point, ts_us)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS readings_ts ON readings (ts_us);
CREATE TABLE IF NOT EXISTS batches (
    gateway TEXT NOT NULL, seq INTEGER NOT NULL, site TEXT NOT NULL, kind TEXT NOT NULL,
    sealed_us INTEGER NOT NULL, n INTEGER NOT NULL, digest TEXT, PRIMARY KEY (gateway, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS items (
    gateway TEXT NOT NULL, seq INTEGER NOT NULL, idx INTEGER NOT NULL, kind TEXT NOT NULL,
    site TEXT NOT NULL, ts_us INTEGER NOT NULL, tags TEXT NOT NULL, fields TEXT NOT NULL,
    PRIMARY KEY (gateway, seq, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gateway_status (
    gateway TEXT PRIMARY KEY, site TEXT NOT NULL, state TEXT NOT NULL, version TEXT,
    ts_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS security (
    gateway TEXT NOT NULL, kind TEXT NOT NULL, seq INTEGER NOT NULL, site TEXT NOT NULL,
    ts_us INTEGER NOT NULL, detail TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    topic TEXT NOT NULL DEFAULT '', digest TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (gateway, kind, seq, digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS security_ts ON security (ts_us);
"""
# a store made before message records were kept: its security table gets their
# columns and the key that includes the digest (the rows stay)
_MIGRATE_SECURITY = (
    """
ALTER TABLE security RENAME TO security_before_digest;
DROP INDEX IF EXISTS security_ts;
"""
    + SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS security") :]
    + """
INSERT INTO security (gateway, kind, seq, site, ts_us, detail)
    SELECT gateway, kind, seq, site, ts_us, detail FROM security_before_digest;
DROP TABLE security_before_digest;
"""
)

_INSERT_READING = "INSERT INTO readings VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
_INSERT_BATCH = (
    "INSERT INTO batches (gateway, seq, site, kind, sealed_us, n, digest) VALUES (?,?,?,?,?,?,?)"
)
_INSERT_ITEM = "INSERT INTO items VALUES (?,?,?,?,?,?,?,?)"
_UPSERT_STATUS = (
    "INSERT INTO gateway_status VALUES (?,?,?,?,?) ON CONFLICT (gateway) DO UPDATE SET "
    "site = excluded.site, state = excluded.state, version = excluded.version, "
    "ts_us = excluded.ts_us WHERE excluded.ts_us >= gateway_status.ts_us"
)
_INSERT_SECURITY = "INSERT OR IGNORE INTO security VALUES (?,?,?,?,?,?,?,?,?)"
_EVENT_N = "CAST(json_extract(fields, '$.n') AS INTEGER)"
# what the content of a message can make SQLite (or its binding) refuse: not retryable
_CONTENT_ERRORS = (
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    OverflowError,
    TypeError,
    ValueError,
)


class SqliteChunk(NamedTuple):
    """Rows for each table, ready for ``executemany``."""

    readings: list[tuple[Any, ...]]
    batches: list[tuple[Any, ...]]
    items: list[tuple[Any, ...]]
    status: list[tuple[Any, ...]]
    security: list[tuple[Any, ...]]


class _Conflict(Exception):
    pass


class SqliteSink:
    """The SQLite store. Writes and queries run in one worker thread, one at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = f"sqlite {path}"
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._checker = ReadingChecker()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def encode(self, batch: Batch) -> SqliteChunk:
        g, s, seq = batch.gateway, batch.site, batch.seq
        readings = [
            (
                s, g, r.device, r.point, r.instrument, r.unit, r.ts_us, r.value, r.raw,
                r.quality, r.reason, ",".join(r.flags) if r.flags else None,
                r.uncertainty, r.coverage, r.verdict, r.certificate, seq, r.server_ts_us,
            )
            for r in rows_of(batch, self._checker)
        ]  # fmt: skip
        items = [
            (
                g, seq, i, batch.kind, s, it.ts_us,
                json.dumps(dict(it.tags), sort_keys=True), json.dumps(dict(it.fields)),
            )
            for i, it in enumerate(batch.items)
        ]  # fmt: skip
        row = (g, seq, s, batch.kind, batch.sealed_us, batch.size, batch.digest)
        return SqliteChunk(readings, [row], items, [], [])

    def encode_status(self, status: Status, received_ns: int) -> SqliteChunk:
        ts = status.since_us if status.since_us is not None else received_ns // 1000
        row = (status.gateway, status.site, status.state, status.version, ts)
        return SqliteChunk([], [], [], [row], [])

    def encode_security(self, event: SecurityEvent) -> SqliteChunk:
        row = (event.gateway, event.kind, event.seq, event.site, event.ts_us, event.detail,
               event.reason, event.topic, event.digest)  # fmt: skip
        return SqliteChunk([], [], [], [], [row])

    def lines_in(self, chunk: SqliteChunk) -> int:
        return len(chunk.readings) + len(chunk.items) + 1

    def _open_sync(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: in WAL mode the log is synced at every commit, so an acknowledged
            # message survives a power cut (NORMAL syncs only at checkpoints)
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(batches)")}
            if "digest" not in columns:  # a store created before digests were kept
                db.execute("ALTER TABLE batches ADD COLUMN digest TEXT")
            columns = {row[1] for row in db.execute("PRAGMA table_info(readings)")}
            if "server_ts_us" not in columns:  # a store made before readings had it
                db.execute("ALTER TABLE readings ADD COLUMN server_ts_us INTEGER")
            columns = {row[1] for row in db.execute("PRAGMA table_info(security)")}
            if "digest" not in columns:
                db.executescript(f"BEGIN IMMEDIATE; {_MIGRATE_SECURITY} COMMIT;")
        except sqlite3.Error as exc:
            raise StoreUnavailable(self.name, str(exc)) from None
        self._db = db

    async def open(self) -> None:
        await self._run(self._open_sync)

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreUnavailable(self.name, "store is not open")
        return self._db

    @staticmethod
    def _write_chunk(db: sqlite3.Connection, c: SqliteChunk) -> None:
        if c.batches:
            gateway, seq, *_, digest = c.batches[0]
            row = db.execute(
                "SELECT digest FROM batches WHERE gateway = ? AND seq = ?", (gateway, seq)
            ).fetchone()
            if row is not None:
                stored = row[0]
                if stored is None or digest is None or stored == digest:
                    return  # stored already (a redelivery): nothing to write
                raise _Conflict(f"{gateway} seq {seq} is stored with digest {stored[:16]}…")
            db.executemany(_INSERT_BATCH, c.batches)
        if c.readings:
            db.executemany(_INSERT_READING, c.readings)
        if c.items:
            db.executemany(_INSERT_ITEM, c.items)
        if c.status:
            db.executemany(_UPSERT_STATUS, c.status)
        if c.security:
            db.executemany(_INSERT_SECURITY, c.security)

    def _write_sync(self, chunks: Sequence[SqliteChunk]) -> None:
        db = self._connection()
        with self._lock:
            try:
                db.execute("BEGIN IMMEDIATE")
                for c in chunks:
                    self._write_chunk(db, c)
                db.execute("COMMIT")
            except BaseException as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                if isinstance(exc, _Conflict):
                    raise StoreConflict(self.name, str(exc)) from None
                if isinstance(exc, sqlite3.IntegrityError):
                    raise StoreRejected(
                        self.name, f"already stored from another batch ({exc})"
                    ) from None
                if isinstance(exc, _CONTENT_ERRORS):
                    raise StoreRejected(self.name, f"{type(exc).__name__}: {exc}") from None
                if isinstance(exc, sqlite3.Error):
                    raise StoreUnavailable(self.name, str(exc)) from None
                raise

    async def write(self, chunks: Sequence[SqliteChunk]) -> None:
        await self._run(self._write_sync, chunks)

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        db = self._connection()
        with self._lock:
            try:
                return list(db.execute(sql, args))
            except sqlite3.Error as exc:
                raise StoreUnavailable(self.name, str(exc)) from None

    async def stored_batch(self, gateway: str, seq: int, sealed_us: int) -> StoredBatch | None:
        rows = await self._run(
            self._query,
            "SELECT digest, sealed_us FROM batches WHERE gateway = ? AND seq = ?",
            (gateway, seq),
        )
        return StoredBatch(rows[0][0], int(rows[0][1])) if rows else None

    async def highs(self) -> list[GatewayHigh]:
        # SQLite: with max(), the bare column comes from the row holding the maximum
        batches = await self._run(
            self._query, "SELECT gateway, max(seq), sealed_us FROM batches GROUP BY gateway"
        )
        events = await self._run(
            self._query,
            f"SELECT gateway, max({_EVENT_N}), ts_us FROM items WHERE kind = 'event' "
            "GROUP BY gateway",
        )
        out = {g: GatewayHigh(g, int(seq), int(sealed)) for g, seq, sealed in batches}
        for g, n, ts in events:
            if n is None:
                continue
            b = out.get(g, GatewayHigh(g))
            out[g] = GatewayHigh(g, b.seq, b.sealed_us, int(n), int(ts))
        return [out[g] for g in sorted(out)]

    async def event_numbers(self, gateway: str, lo: int, hi: int) -> set[int]:
        rows = await self._run(
            self._query,
            f"SELECT {_EVENT_N} FROM items WHERE gateway = ? AND kind = 'event' "
            f"AND {_EVENT_N} BETWEEN ? AND ?",
            (gateway, lo, hi),
        )
        return {int(n) for (n,) in rows}

    async def aclose(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await self._run(db.close)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
