"""Supervision report over the store: points, instruments, gateways.

Reads InfluxDB through InfluxQL on the v1 ``/query`` API (InfluxDB 1.x, 2.x
compatibility, 3.x) or the SQLite store. Definitions (docs/ingest.md):

* out-of-tolerance rate: readings whose flags contain ``out_of_tolerance`` or whose
  verdict is ``fail``, over all readings of the point in the window;
* Cpk: ``min(USL − μ, μ − LSL) / 3σ̂`` with σ̂ = mean moving range / 1.128
  (individuals), Ppk likewise with the overall standard deviation; needs limits;
* completeness per gateway per UTC day: distinct batch sequence numbers received
  over those expected, expected running from the day's first sequence number (or
  the one after the previous day's last) to the day's last. A late redelivery
  lands in the day its batch was sealed, so that day's figure rises.
"""

from __future__ import annotations

import itertools
import math
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervision.sinks.influxdb import influxql_query

__all__ = [
    "Completeness",
    "PointSummary",
    "completeness_from_batches",
    "completeness_influx",
    "completeness_sqlite",
    "points_influx",
    "points_sqlite",
]

DAY_NS = 86_400 * 10**9
D2_INDIVIDUALS = 1.128


@dataclass(frozen=True, slots=True)
class Completeness:
    gateway: str
    day: str  # YYYY-MM-DD, UTC
    received: int
    expected: int
    missing: list[tuple[int, int]]
    last_seen_ns: int

    @property
    def ratio(self) -> float:
        return self.received / self.expected if self.expected else 1.0


@dataclass(slots=True)
class PointSummary:
    gateway: str
    device: str
    point: str
    count: int = 0
    last_value: float | None = None
    last_ns: int | None = None
    out_of_tolerance: int = 0
    mean: float | None = None
    stddev: float | None = None
    mean_moving_range: float | None = None
    alarms: int = 0
    limits: tuple[float, float] | None = field(default=None)

    @property
    def oot_rate(self) -> float:
        return self.out_of_tolerance / self.count if self.count else 0.0

    def _capability(self, sigma: float | None) -> float | None:
        if self.limits is None or self.mean is None or not sigma or sigma <= 0:
            return None
        lsl, usl = self.limits
        return min(usl - self.mean, self.mean - lsl) / (3 * sigma)

    @property
    def cpk(self) -> float | None:
        mr = self.mean_moving_range
        return self._capability(mr / D2_INDIVIDUALS if mr is not None else None)

    @property
    def ppk(self) -> float | None:
        return self._capability(self.stddev)


def _day(ns: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%d")


def completeness_from_batches(rows: dict[str, list[tuple[int, int]]]) -> list[Completeness]:
    """Per gateway per day from ``{gateway: [(time_ns, seq), …]}`` (any order, duplicates ok)."""
    out: list[Completeness] = []
    for gateway in sorted(rows):
        by_day: dict[int, set[int]] = defaultdict(set)
        last_ns: dict[int, int] = {}
        for t, seq in rows[gateway]:
            d = t // DAY_NS
            by_day[d].add(seq)
            last_ns[d] = max(last_ns.get(d, 0), t)
        prev_high: int | None = None
        for d in sorted(by_day):
            seqs = by_day[d]
            lo, hi = min(seqs), max(seqs)
            start = prev_high + 1 if prev_high is not None and prev_high < lo else lo
            missing: list[tuple[int, int]] = []
            run: int | None = None
            for s in range(start, hi + 2):
                if s <= hi and s not in seqs:
                    run = s if run is None else run
                elif run is not None:
                    missing.append((run, s - 1))
                    run = None
            out.append(
                Completeness(gateway, _day(d * DAY_NS), len(seqs), hi - start + 1, missing,
                             last_ns[d])
            )  # fmt: skip
            prev_high = hi if prev_high is None else max(prev_high, hi)
    return out


def _series(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return list(doc["results"][0].get("series", []))


def completeness_influx(
    url: str, database: str, *, since_ns: int = 0, **auth: Any
) -> list[Completeness]:
    """Completeness from the ``batch`` measurement of an InfluxDB database."""
    doc = influxql_query(
        url, f"SELECT seq FROM batch WHERE time >= {since_ns} GROUP BY gateway",
        database=database, **auth,
    )  # fmt: skip
    rows: dict[str, list[tuple[int, int]]] = {}
    for s in _series(doc):
        rows[s["tags"]["gateway"]] = [(int(t), int(q)) for t, q in s["values"]]
    return completeness_from_batches(rows)


def completeness_sqlite(path: Path, *, since_ns: int = 0) -> list[Completeness]:
    """Completeness from the ``batches`` table of the SQLite store."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        cur = db.execute(
            "SELECT gateway, sealed_us * 1000, seq FROM batches WHERE sealed_us * 1000 >= ?",
            (since_ns,),
        )
        rows: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for g, t, seq in cur:
            rows[g].append((t, seq))
    return completeness_from_batches(dict(rows))


_OOT = "(flags =~ /(^|,)out_of_tolerance(,|$)/ OR verdict = 'fail')"
_ALARM_ACTIVE = "state =~ /^(active|unack|unacknowledged|raised)/"


def points_influx(
    url: str,
    database: str,
    *,
    since_ns: int,
    limits: dict[str, tuple[float, float]] | None = None,
    **auth: Any,
) -> list[PointSummary]:
    """Per point: last value, counts, out-of-tolerance, mean/σ/moving range, alarms."""
    w = f"time >= {since_ns}"
    g = "GROUP BY gateway, device, point"
    qs = [
        f"SELECT last(value) FROM reading WHERE {w} {g}",
        f"SELECT count(quality) FROM reading WHERE {w} {g}",
        f"SELECT count(quality) FROM reading WHERE {w} AND {_OOT} {g}",
        f"SELECT mean(value), stddev(value) FROM reading WHERE {w} {g}",
        f"SELECT mean(mr) FROM (SELECT abs(difference(value)) AS mr FROM reading"
        f" WHERE {w} {g}) {g}",
        f"SELECT count(seq) FROM alarm WHERE {w} AND {_ALARM_ACTIVE} {g}",
    ]
    doc = influxql_query(url, ";".join(qs), database=database, **auth)
    points: dict[tuple[str, str, str], PointSummary] = {}

    def rows(i: int) -> list[tuple[PointSummary, list[Any]]]:
        res = doc["results"][i] if i < len(doc["results"]) else {}
        out = []
        for s in res.get("series", []):
            t = s["tags"]
            key = (t.get("gateway", ""), t.get("device", ""), t.get("point", ""))
            if key not in points:
                points[key] = PointSummary(*key, limits=(limits or {}).get(key[2]))
            out.append((points[key], s["values"][0]))
        return out

    for p, v in rows(0):
        p.last_ns, p.last_value = int(v[0]), v[1]
    for p, v in rows(1):
        p.count = int(v[1])
    for p, v in rows(2):
        p.out_of_tolerance = int(v[1])
    for p, v in rows(3):
        p.mean, p.stddev = v[1], v[2]
    for p, v in rows(4):
        p.mean_moving_range = v[1]
    for p, v in rows(5):
        p.alarms = int(v[1])
    return sorted(points.values(), key=lambda p: (p.gateway, p.device, p.point))


def points_sqlite(
    path: Path, *, since_ns: int, limits: dict[str, tuple[float, float]] | None = None
) -> list[PointSummary]:
    """The same figures as :func:`points_influx` from the SQLite store."""
    out: list[PointSummary] = []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        cur = db.execute(
            "SELECT gateway, device, point, ts_us, value, flags, verdict FROM readings "
            "WHERE ts_us >= ? ORDER BY gateway, device, point, ts_us",
            (since_ns // 1000,),
        )
        cur_key: tuple[str, str, str] | None = None
        vals: list[float] = []
        p: PointSummary | None = None

        def close() -> None:
            if p is None or not vals:
                return
            n = len(vals)
            p.mean = sum(vals) / n
            p.stddev = math.sqrt(sum((x - p.mean) ** 2 for x in vals) / (n - 1)) if n > 1 else None
            if n > 1:
                p.mean_moving_range = sum(abs(b - a) for a, b in itertools.pairwise(vals)) / (n - 1)

        for g, d, pt, ts, value, flags, verdict in cur:
            if (g, d, pt) != cur_key:
                close()
                cur_key, vals = (g, d, pt), []
                p = PointSummary(g, d, pt, limits=(limits or {}).get(pt))
                out.append(p)
            assert p is not None
            p.count += 1
            if "out_of_tolerance" in (flags or "").split(",") or verdict == "fail":
                p.out_of_tolerance += 1
            if isinstance(value, float | int) and not isinstance(value, bool):
                vals.append(float(value))
                p.last_value, p.last_ns = float(value), ts * 1000
        close()
    return out
