"""What the store holds right now, for live views (``metrogate demo``): the last reading
of every point, the latest alarm changes and per-gateway completeness.

Blocking calls (SQLite file or InfluxQL over HTTP); run them off the event loop.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervision.config import InfluxV1Store, InfluxV2Store, SqliteStore
from supervision.report import (
    GatewaySummary,
    gateways_influx,
    gateways_sqlite,
)
from supervision.sinks.influxdb import influxql_query

__all__ = ["LastReading", "Snapshot", "snapshot", "snapshot_influx", "snapshot_sqlite"]


@dataclass(frozen=True, slots=True)
class LastReading:
    gateway: str
    device: str
    point: str
    ts_us: int
    value: float | bool | str | None
    unit: str | None
    quality: str
    flags: tuple[str, ...]
    verdict: str | None
    uncertainty: float | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The store's content at one moment: counts, last readings, recent alarms, gateways."""

    readings: int
    batches: int
    alarms: int
    events: int
    last: list[LastReading]
    recent_alarms: list[dict[str, Any]]
    gateways: list[GatewaySummary]


def snapshot_sqlite(path: Path, *, alarms: int = 6) -> Snapshot:
    """Read the SQLite store (read-only; the ingest keeps writing meanwhile, WAL mode)."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
        (n_readings,) = db.execute("SELECT count(*) FROM readings").fetchone()
        n_batches, n_alarms, n_events = db.execute(
            "SELECT count(*), coalesce(sum(kind = 'alarm' AND n), 0), "
            "coalesce(sum(CASE WHEN kind = 'event' THEN n END), 0) FROM batches"
        ).fetchone()
        # with max(), SQLite takes the bare columns from the row holding the maximum
        last = [
            LastReading(g, d, p, int(ts), v, unit, q, tuple(f.split(",")) if f else (), verdict, u)
            for g, d, p, ts, v, unit, q, f, verdict, u in db.execute(
                "SELECT gateway, device, point, max(ts_us), value, unit, quality, flags, "
                "verdict, U FROM readings GROUP BY gateway, device, point ORDER BY 1, 2, 3"
            )
        ]
        recent = [
            {"ts": ts, "gateway": g} | json.loads(tags) | json.loads(fields)
            for g, ts, tags, fields in db.execute(
                "SELECT gateway, ts_us, tags, fields FROM items WHERE kind = 'alarm' "
                "ORDER BY ts_us DESC LIMIT ?",
                (alarms,),
            )
        ]
    gateways, _ = gateways_sqlite(path, since_ns=0)
    return Snapshot(
        int(n_readings), int(n_batches), int(n_alarms), int(n_events), last,
        recent[::-1], gateways,
    )  # fmt: skip


def _rows(doc: dict[str, Any], i: int) -> list[dict[str, Any]]:
    """Series of result ``i`` as dicts of column → value, tags merged in."""
    results = doc.get("results", [])
    out = []
    for s in results[i].get("series", []) if i < len(results) else []:
        for values in s["values"]:
            out.append(dict(zip(s["columns"], values, strict=True)) | s.get("tags", {}))
    return out


def snapshot_influx(url: str, database: str, *, alarms: int = 6, **auth: Any) -> Snapshot:
    """The same from InfluxDB through InfluxQL."""
    qs = [
        "SELECT count(quality) FROM reading",
        "SELECT count(seq) FROM batch",
        "SELECT sum(n) FROM batch WHERE kind = 'alarm'",
        "SELECT sum(n) FROM batch WHERE kind = 'event'",
        "SELECT * FROM reading GROUP BY gateway, device, point ORDER BY time DESC LIMIT 1",
        f"SELECT * FROM alarm ORDER BY time DESC LIMIT {int(alarms)}",
    ]
    doc = influxql_query(url, ";".join(qs), database=database, **auth)

    def one(i: int) -> int:
        rows = _rows(doc, i)
        return int(next(iter(v for k, v in rows[0].items() if k != "time"))) if rows else 0

    last = []
    for r in _rows(doc, 4):
        value = next((r[k] for k in ("value", "value_bool", "value_str") if r.get(k) is not None),
                     None)  # fmt: skip
        flags = r.get("flags")
        last.append(
            LastReading(
                r["gateway"], r["device"], r["point"], int(r["time"]) // 1000, value,
                r.get("unit") or None, r.get("quality") or "?",
                tuple(flags.split(",")) if flags else (), r.get("verdict"), r.get("U"),
            )
        )  # fmt: skip
    recent = [
        {k: v for k, v in r.items() if v is not None} | {"ts": int(r["time"]) // 1000}
        for r in _rows(doc, 5)
    ]
    gateways, _ = gateways_influx(url, database, since_ns=0, **auth)
    return Snapshot(
        one(0), one(1), one(2), one(3),
        sorted(last, key=lambda x: (x.gateway, x.device, x.point)), recent[::-1], gateways,
    )  # fmt: skip


def snapshot(store: InfluxV1Store | InfluxV2Store | SqliteStore) -> Snapshot:
    """The snapshot of the store an ingest configuration names."""
    if isinstance(store, SqliteStore):
        return snapshot_sqlite(store.path)
    if isinstance(store, InfluxV1Store):
        auth: dict[str, Any] = {}
        if store.username is not None:
            pw = store.password.get_secret_value() if store.password else ""
            auth = {"username": store.username, "password": pw}
        return snapshot_influx(store.url, store.database, **auth)
    token = store.token.get_secret_value() if store.token else None
    return snapshot_influx(store.url, store.bucket, token=token)
