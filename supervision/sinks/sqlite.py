"""An embedded SQLite store for small sites and the demo, behind the same interface.

Tables (``INSERT OR REPLACE`` on natural keys, so redeliveries are idempotent):
``readings`` (gateway, device, point, ts_us) with the same content as the InfluxDB
``reading`` measurement (its ``server_ts_us`` column is added to a store made before
it existed); ``batches`` (gateway, seq); ``items`` (alarm and event entries,
(gateway, seq, idx)); ``gateway_status`` (gateway). WAL mode; one transaction per
write.
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

from supervision.model import Batch, Status, rows_of
from supervision.sinks import StoreUnavailable

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
    sealed_us INTEGER NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (gateway, seq)
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
"""


class SqliteChunk(NamedTuple):
    """Rows for each table, ready for ``executemany``."""

    readings: list[tuple[Any, ...]]
    batches: list[tuple[Any, ...]]
    items: list[tuple[Any, ...]]
    status: list[tuple[Any, ...]]


class SqliteSink:
    """The SQLite store. Writes run in a worker thread, one at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = f"sqlite {path}"
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

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
            for r in rows_of(batch)
        ]  # fmt: skip
        items = [
            (
                g, seq, i, batch.kind, s, it.ts_us,
                json.dumps(dict(it.tags), sort_keys=True), json.dumps(dict(it.fields)),
            )
            for i, it in enumerate(batch.items)
        ]  # fmt: skip
        return SqliteChunk(
            readings, [(g, seq, s, batch.kind, batch.sealed_us, batch.size)], items, []
        )

    def encode_status(self, status: Status, received_ns: int) -> SqliteChunk:
        ts = status.since_us if status.since_us is not None else received_ns // 1000
        row = (status.gateway, status.site, status.state, status.version, ts)
        return SqliteChunk([], [], [], [row])

    def lines_in(self, chunk: SqliteChunk) -> int:
        return len(chunk.readings) + len(chunk.items) + 1

    def _open_sync(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(readings)")}
            if "server_ts_us" not in columns:  # a store made before readings had it
                db.execute("ALTER TABLE readings ADD COLUMN server_ts_us INTEGER")
        except sqlite3.Error as exc:
            raise StoreUnavailable(self.name, str(exc)) from None
        self._db = db

    async def open(self) -> None:
        await self._run(self._open_sync)

    def _write_sync(self, chunks: Sequence[SqliteChunk]) -> None:
        db = self._db
        if db is None:
            raise StoreUnavailable(self.name, "store is not open")
        with self._lock:
            try:
                db.execute("BEGIN IMMEDIATE")
                for c in chunks:
                    if c.readings:
                        db.executemany(
                            "INSERT OR REPLACE INTO readings VALUES "
                            "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                            c.readings,
                        )
                    if c.batches:
                        db.executemany(
                            "INSERT OR REPLACE INTO batches VALUES (?,?,?,?,?,?)", c.batches
                        )
                    if c.items:
                        db.executemany(
                            "INSERT OR REPLACE INTO items VALUES (?,?,?,?,?,?,?,?)", c.items
                        )
                    if c.status:
                        db.executemany(
                            "INSERT OR REPLACE INTO gateway_status VALUES (?,?,?,?,?)", c.status
                        )
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise StoreUnavailable(self.name, str(exc)) from None

    async def write(self, chunks: Sequence[SqliteChunk]) -> None:
        await self._run(self._write_sync, chunks)

    async def aclose(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await self._run(db.close)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
