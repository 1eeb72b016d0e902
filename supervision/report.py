"""Supervision report over the store: points, instruments, gateways.

Reads InfluxDB through InfluxQL on the v1 ``/query`` API (InfluxDB 1.x, 2.x
compatibility, 3.x) or the SQLite store, with the same definitions for both
(docs/ingest.md):

* out-of-tolerance rate: readings whose flags contain ``out_of_tolerance`` or whose
  verdict is ``fail``, over all readings of the point in the window;
* Cpk: ``min(USL − μ, μ − LSL) / 3σ̂`` with σ̂ = mean moving range / 1.128
  (individuals), Ppk likewise with the overall standard deviation; needs limits;
* completeness per gateway per UTC day: distinct batch sequence numbers received
  over those expected, expected running from the day's first sequence number (or
  the one after the previous day's last) to the day's last. A late redelivery
  lands in the day its batch was sealed, so that day's figure rises;
* alarms raised: alarm records (gateway/metrology/alarms.py) whose ``event`` is ``raised``;
* calibration status per instrument: see :func:`calibration_status`;
* event-log continuity per gateway (:func:`event_log_continuity`): the counters ``n``
  of the stored audit-trail entries, in time order, each one above the last; a jump
  is a gap, a counter at or below the last is a reset;
* security events: what the ingest filed (``security`` table / measurement), plus
  batch numbers stored twice with different digests (InfluxDB, which cannot refuse
  to overwrite; the SQLite store refuses them).
"""

from __future__ import annotations

import itertools
import math
import sqlite3
from collections import defaultdict
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervision.config import InfluxV1Store, InfluxV2Store, SqliteStore
from supervision.sinks.influxdb import influxql_query

__all__ = [
    "Completeness",
    "EventLogSummary",
    "GatewaySummary",
    "InstrumentStatus",
    "PointSummary",
    "Report",
    "SecurityRecord",
    "audit_influx",
    "audit_sqlite",
    "calibration_status",
    "completeness_from_batches",
    "completeness_influx",
    "completeness_sqlite",
    "event_log_continuity",
    "gateways_influx",
    "gateways_sqlite",
    "instruments_influx",
    "instruments_sqlite",
    "points_influx",
    "points_sqlite",
    "report_influx",
    "report_sqlite",
    "report_store",
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
    with closing(_connect(path)) as db:
        cur = db.execute(
            "SELECT gateway, sealed_us * 1000, seq FROM batches WHERE sealed_us * 1000 >= ?",
            (since_ns,),
        )
        rows: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for g, t, seq in cur:
            rows[g].append((t, seq))
    return completeness_from_batches(dict(rows))


# -- instruments and gateways ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InstrumentStatus:
    """Calibration status of one instrument, as the stored evidence shows it.

    ``status``: ``expired``, ``due_soon``, ``missing``, ``valid`` or ``unknown``
    (see :func:`calibration_status`); ``expired_readings`` counts readings flagged
    ``calibration_expired`` in the window; ``event`` is the last ``calibration_*``
    event of the gateway's audit trail in the window, with its ``valid_until`` and
    ``days_left``.
    """

    gateway: str
    instrument: str
    status: str
    certificate: str | None = None
    readings: int = 0
    expired_readings: int = 0
    last_reading_ns: int | None = None
    event: str | None = None
    event_ns: int | None = None
    valid_until: str | None = None
    days_left: int | None = None


@dataclass(frozen=True, slots=True)
class GatewaySummary:
    """Completeness over the whole window and when the gateway was last heard of."""

    gateway: str
    received: int
    expected: int
    missing: list[tuple[int, int]]
    last_seen_ns: int | None
    state: str | None  # last status message: online / offline

    @property
    def ratio(self) -> float:
        return self.received / self.expected if self.expected else 1.0


@dataclass(frozen=True, slots=True)
class EventLogSummary:
    """The audit-trail counters of one gateway's stored entries in the window.

    ``gaps``: ranges of counters missing between two entries; ``resets``: ``(before,
    after, ts_ns)`` where a counter came at or below the one before it.
    """

    gateway: str
    entries: int
    first_n: int
    last_n: int
    gaps: list[tuple[int, int]]
    resets: list[tuple[int, int, int]]


@dataclass(frozen=True, slots=True)
class SecurityRecord:
    """One security event as stored (docs/ingest.md, supervision.model.SecurityEvent):
    ``kind`` ``conflict``, ``reset``, ``event_gap``, ``event_reset``, ``replay``,
    ``forgery`` or ``dead_letter``; ``seq`` the batch number (event-log kinds: the
    counter; message kinds: 0); ``reason`` the dead-letter reason, ``digest`` the
    payload's SHA-256 for message kinds."""

    gateway: str
    kind: str
    seq: int
    ts_ns: int
    detail: str
    reason: str = ""
    digest: str = ""


@dataclass(frozen=True, slots=True)
class Report:
    points: list[PointSummary]
    instruments: list[InstrumentStatus]
    gateways: list[GatewaySummary]
    days: list[Completeness]
    event_logs: list[EventLogSummary] = field(default_factory=list)
    security: list[SecurityRecord] = field(default_factory=list)


def event_log_continuity(rows: dict[str, list[tuple[int, int]]]) -> list[EventLogSummary]:
    """Per gateway from ``{gateway: [(ts_ns, n), …]}`` (any order): entries taken in time
    order (ties by counter); each counter should be one above the one before."""
    out: list[EventLogSummary] = []
    for gateway in sorted(rows):
        entries = sorted(set(rows[gateway]))
        if not entries:
            continue
        gaps: list[tuple[int, int]] = []
        resets: list[tuple[int, int, int]] = []
        prev = entries[0][1]
        for ts, n in entries[1:]:
            if n > prev + 1:
                gaps.append((prev + 1, n - 1))
            elif n <= prev:
                resets.append((prev, n, ts))
            prev = n
        out.append(EventLogSummary(gateway, len(entries), entries[0][1], prev, gaps, resets))
    return out


def _conflicting(rows: dict[str, list[tuple[int, str | None]]]) -> list[SecurityRecord]:
    """Batch numbers stored more than once with different digests, from ``{gateway:
    [(seq, digest), …]}``."""
    out: list[SecurityRecord] = []
    for gateway in sorted(rows):
        seen: dict[int, set[str]] = defaultdict(set)
        for seq, digest in rows[gateway]:
            if digest:
                seen[seq].add(digest)
        for seq in sorted(q for q, ds in seen.items() if len(ds) > 1):
            out.append(
                SecurityRecord(gateway, "conflict", seq, 0,
                               f"batch {seq} stored {len(seen[seq])} times with other bytes")
            )  # fmt: skip
    return out


@dataclass(slots=True)
class _InstrumentFacts:
    readings: int = 0
    expired: int = 0
    last_ns: int | None = None
    last_expired_ns: int | None = None
    last_uncalibrated_ns: int | None = None
    certificate: str | None = None
    event: str | None = None
    event_ns: int | None = None
    event_data: dict[str, Any] = field(default_factory=dict)


def calibration_status(
    last_ns: int | None,
    last_expired_ns: int | None,
    last_uncalibrated_ns: int | None,
    certificate: str | None,
    event: str | None,
    event_ns: int | None,
) -> str:
    """Combine what the last reading and the last ``calibration_*`` event say.

    The last reading says ``expired`` (flagged ``calibration_expired``), ``missing``
    (flagged ``not_calibrated``), ``valid`` (it carries a certificate) or nothing.
    The later of reading and event wins; readings cannot say "due soon", so a
    ``calibration_due_soon`` event stays in force while the readings look valid.
    """
    from_reading: str | None = None
    if last_ns is not None:
        if last_expired_ns == last_ns:
            from_reading = "expired"
        elif last_uncalibrated_ns == last_ns:
            from_reading = "missing"
        elif certificate is not None:
            from_reading = "valid"
    from_event = event.removeprefix("calibration_") if event else None
    if from_event is None:
        return from_reading or "unknown"
    if from_reading is None:
        return from_event
    if from_event == "due_soon" and from_reading == "valid":
        return "due_soon"
    assert event_ns is not None and last_ns is not None  # both sources present
    return from_reading if last_ns > event_ns else from_event


def _instruments(facts: dict[tuple[str, str], _InstrumentFacts]) -> list[InstrumentStatus]:
    out = []
    for (gateway, inst), f in sorted(facts.items()):
        status = calibration_status(
            f.last_ns, f.last_expired_ns, f.last_uncalibrated_ns, f.certificate, f.event,
            f.event_ns,
        )  # fmt: skip
        d = f.event_data
        days_left = d.get("days_left")
        out.append(
            InstrumentStatus(
                gateway, inst, status,
                certificate=f.certificate or d.get("certificate"),
                readings=f.readings, expired_readings=f.expired, last_reading_ns=f.last_ns,
                event=f.event, event_ns=f.event_ns, valid_until=d.get("valid_until"),
                days_left=int(days_left) if isinstance(days_left, int | float) else None,
            )
        )  # fmt: skip
    return out


def _gateways(
    days: list[Completeness], last_seen: dict[str, int], states: dict[str, str]
) -> list[GatewaySummary]:
    """Whole-window completeness: each day's expected range starts after the previous one."""
    by_gw: dict[str, list[Completeness]] = defaultdict(list)
    for c in days:
        by_gw[c.gateway].append(c)
    out = []
    for gw in sorted(set(by_gw) | set(last_seen) | set(states)):
        cs = by_gw.get(gw, [])
        out.append(
            GatewaySummary(
                gw, sum(c.received for c in cs), sum(c.expected for c in cs),
                [r for c in cs for r in c.missing], last_seen.get(gw), states.get(gw),
            )
        )  # fmt: skip
    return out


def _data(text: Any) -> dict[str, Any]:
    import json

    try:
        doc = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


# -- InfluxDB -------------------------------------------------------------------------

_OOT = "(flags =~ /(^|,)out_of_tolerance(,|$)/ OR verdict = 'fail')"
_EXPIRED = "flags =~ /(^|,)calibration_expired(,|$)/"
_UNCALIBRATED = "flags =~ /(^|,)not_calibrated(,|$)/"
# alarm records (gateway/metrology/alarms.py): ``event`` says what happened,
# ``state`` where it is now
_RAISED = "\"event\" = 'raised'"


def _results(doc: dict[str, Any], i: int) -> list[dict[str, Any]]:
    results = doc.get("results", [])
    return list(results[i].get("series", [])) if i < len(results) else []


def points_influx(
    url: str,
    database: str,
    *,
    since_ns: int,
    limits: dict[str, tuple[float, float]] | None = None,
    **auth: Any,
) -> list[PointSummary]:
    """Per point: last value, counts, out-of-tolerance, mean/σ/moving range, alarms raised."""
    w = f"time >= {since_ns}"
    g = "GROUP BY gateway, device, point"
    qs = [
        f"SELECT last(value) FROM reading WHERE {w} {g}",
        f"SELECT count(quality) FROM reading WHERE {w} {g}",
        f"SELECT count(quality) FROM reading WHERE {w} AND {_OOT} {g}",
        f"SELECT mean(value), stddev(value) FROM reading WHERE {w} {g}",
        f"SELECT mean(mr) FROM (SELECT abs(difference(value)) AS mr FROM reading"
        f" WHERE {w} {g}) {g}",
        f"SELECT count(seq) FROM alarm WHERE {w} AND {_RAISED} {g}",
    ]
    doc = influxql_query(url, ";".join(qs), database=database, **auth)
    points: dict[tuple[str, str, str], PointSummary] = {}

    def rows(i: int) -> list[tuple[PointSummary, list[Any]]]:
        out = []
        for s in _results(doc, i):
            t = s.get("tags", {})
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


def instruments_influx(
    url: str, database: str, *, since_ns: int, **auth: Any
) -> list[InstrumentStatus]:
    """Calibration status per instrument from readings and ``calibration_*`` events."""
    w = f"time >= {since_ns}"
    g = "GROUP BY gateway, instrument"
    qs = [
        f"SELECT last(quality), count(quality) FROM reading WHERE {w} {g}",
        f"SELECT last(quality), count(quality) FROM reading WHERE {w} AND {_EXPIRED} {g}",
        f"SELECT last(quality) FROM reading WHERE {w} AND {_UNCALIBRATED} {g}",
        f"SELECT last(certificate) FROM reading WHERE {w} {g}",
        f'SELECT last(data) FROM event WHERE {w} AND "type" =~ /^calibration_/ {g}, "type"',
    ]
    doc = influxql_query(url, ";".join(qs), database=database, **auth)
    facts: dict[tuple[str, str], _InstrumentFacts] = defaultdict(_InstrumentFacts)

    def rows(i: int) -> list[tuple[_InstrumentFacts, dict[str, str], list[Any]]]:
        out = []
        for s in _results(doc, i):
            t = s.get("tags", {})
            if t.get("instrument"):
                out.append((facts[(t.get("gateway", ""), t["instrument"])], t, s["values"][0]))
        return out

    for f, _, v in rows(0):
        f.last_ns, f.readings = int(v[0]), int(v[2])
    for f, _, v in rows(1):
        f.last_expired_ns, f.expired = int(v[0]), int(v[2])
    for f, _, v in rows(2):
        f.last_uncalibrated_ns = int(v[0])
    for f, _, v in rows(3):
        f.certificate = v[1]
    for f, t, v in rows(4):
        if f.event_ns is None or int(v[0]) > f.event_ns:
            f.event, f.event_ns, f.event_data = t.get("type"), int(v[0]), _data(v[1])
    return _instruments(facts)


def gateways_influx(
    url: str, database: str, *, since_ns: int, **auth: Any
) -> tuple[list[GatewaySummary], list[Completeness]]:
    """Per gateway: completeness over the window (and per day), last seen, status."""
    days = completeness_influx(url, database, since_ns=since_ns, **auth)
    qs = [
        f"SELECT last(seq) FROM batch WHERE time >= {since_ns} GROUP BY gateway",
        "SELECT last(state) FROM gateway_status GROUP BY gateway",
    ]
    doc = influxql_query(url, ";".join(qs), database=database, **auth)
    last_seen = {s["tags"]["gateway"]: int(s["values"][0][0]) for s in _results(doc, 0)}
    states = {s["tags"]["gateway"]: str(s["values"][0][1]) for s in _results(doc, 1)}
    return _gateways(days, last_seen, states), days


def audit_influx(
    url: str, database: str, *, since_ns: int, **auth: Any
) -> tuple[list[EventLogSummary], list[SecurityRecord]]:
    """Event-log continuity and security events from InfluxDB."""
    w = f"time >= {since_ns}"
    qs = [
        f"SELECT n FROM event WHERE {w} GROUP BY gateway",
        f"SELECT seq, detail, reason, digest FROM security WHERE {w} GROUP BY gateway, kind",
        f"SELECT seq, digest FROM batch WHERE {w} GROUP BY gateway",
    ]
    doc = influxql_query(url, ";".join(qs), database=database, **auth)
    entries = {
        s["tags"]["gateway"]: [(int(t), int(n)) for t, n in s["values"] if n is not None]
        for s in _results(doc, 0)
    }
    # a message record is one per digest (a restarted worker files a redelivery again)
    seen: set[tuple[str, str, int, str]] = set()
    security = []
    for s in _results(doc, 1):
        g, kind = s["tags"]["gateway"], s["tags"]["kind"]
        for t, seq, detail, reason, digest in s["values"]:
            key = (g, kind, int(seq), str(digest or ""))
            if not digest or key not in seen:
                seen.add(key)
                security.append(SecurityRecord(g, kind, int(seq), int(t), str(detail),
                                               str(reason or ""), str(digest or "")))  # fmt: skip
    batches = {
        s["tags"]["gateway"]: [(int(seq), digest) for _, seq, digest in s["values"]]
        for s in _results(doc, 2)
    }
    security += _conflicting(batches)
    return event_log_continuity(entries), sorted(security, key=_security_order)


def _security_order(r: SecurityRecord) -> tuple[str, int, str, int]:
    return (r.gateway, r.ts_ns, r.kind, r.seq)


def report_influx(
    url: str,
    database: str,
    *,
    since_ns: int,
    limits: dict[str, tuple[float, float]] | None = None,
    **auth: Any,
) -> Report:
    """The whole report from InfluxDB (InfluxQL over ``/query``)."""
    points = points_influx(url, database, since_ns=since_ns, limits=limits, **auth)
    instruments = instruments_influx(url, database, since_ns=since_ns, **auth)
    gateways, days = gateways_influx(url, database, since_ns=since_ns, **auth)
    event_logs, security = audit_influx(url, database, since_ns=since_ns, **auth)
    return Report(points, instruments, gateways, days, event_logs, security)


# -- SQLite ---------------------------------------------------------------------------


def _has_flag(flag: str) -> str:
    return f"instr(',' || coalesce(flags, '') || ',', ',{flag},') > 0"


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def points_sqlite(
    path: Path, *, since_ns: int, limits: dict[str, tuple[float, float]] | None = None
) -> list[PointSummary]:
    """The same figures as :func:`points_influx` from the SQLite store."""
    points: dict[tuple[str, str, str], PointSummary] = {}
    since_us = since_ns // 1000
    with closing(_connect(path)) as db:
        cur = db.execute(
            "SELECT gateway, device, point, ts_us, value, flags, verdict FROM readings "
            "WHERE ts_us >= ? ORDER BY gateway, device, point, ts_us",
            (since_us,),
        )
        for key, group in itertools.groupby(cur, key=lambda r: (r[0], r[1], r[2])):
            p = points[key] = PointSummary(*key, limits=(limits or {}).get(key[2]))
            vals: list[float] = []
            for _, _, _, ts, value, flags, verdict in group:
                p.count += 1
                if "out_of_tolerance" in (flags or "").split(",") or verdict == "fail":
                    p.out_of_tolerance += 1
                if isinstance(value, float | int) and not isinstance(value, bool):
                    vals.append(float(value))
                    p.last_value, p.last_ns = float(value), ts * 1000
            _moments(p, vals)
        alarms = db.execute(
            "SELECT gateway, json_extract(tags, '$.device'), json_extract(tags, '$.point'), "
            "count(*) FROM items WHERE kind = 'alarm' AND ts_us >= ? "
            "AND json_extract(fields, '$.event') = 'raised' GROUP BY 1, 2, 3",
            (since_us,),
        )
        for g, d, pt, n in alarms:
            key = (g, d or "", pt or "")
            if key not in points:
                points[key] = PointSummary(*key, limits=(limits or {}).get(key[2]))
            points[key].alarms = int(n)
    return sorted(points.values(), key=lambda p: (p.gateway, p.device, p.point))


def _moments(p: PointSummary, vals: list[float]) -> None:
    n = len(vals)
    if not n:
        return
    p.mean = sum(vals) / n
    if n > 1:
        p.stddev = math.sqrt(sum((x - p.mean) ** 2 for x in vals) / (n - 1))
        p.mean_moving_range = sum(abs(b - a) for a, b in itertools.pairwise(vals)) / (n - 1)


def instruments_sqlite(path: Path, *, since_ns: int) -> list[InstrumentStatus]:
    """:func:`instruments_influx` from the SQLite store."""
    since_us = since_ns // 1000
    facts: dict[tuple[str, str], _InstrumentFacts] = defaultdict(_InstrumentFacts)
    expired, uncal = _has_flag("calibration_expired"), _has_flag("not_calibrated")
    with closing(_connect(path)) as db:
        for g, inst, n, last, n_exp, last_exp, last_uncal in db.execute(
            f"SELECT gateway, instrument, count(*), max(ts_us), sum({expired}), "
            f"max(CASE WHEN {expired} THEN ts_us END), max(CASE WHEN {uncal} THEN ts_us END) "
            "FROM readings WHERE instrument IS NOT NULL AND ts_us >= ? GROUP BY 1, 2",
            (since_us,),
        ):
            f = facts[(g, inst)]
            f.readings, f.expired, f.last_ns = int(n), int(n_exp), int(last) * 1000
            f.last_expired_ns = None if last_exp is None else int(last_exp) * 1000
            f.last_uncalibrated_ns = None if last_uncal is None else int(last_uncal) * 1000
        # SQLite: with max(), the bare column comes from the row holding the maximum
        for g, inst, cert, _ in db.execute(
            "SELECT gateway, instrument, certificate, max(ts_us) FROM readings "
            "WHERE instrument IS NOT NULL AND certificate IS NOT NULL AND ts_us >= ? "
            "GROUP BY 1, 2",
            (since_us,),
        ):
            facts[(g, inst)].certificate = cert
        for g, inst, typ, ts, data in db.execute(
            "SELECT gateway, json_extract(tags, '$.instrument'), json_extract(tags, '$.type'), "
            "ts_us, json_extract(fields, '$.data') FROM items WHERE kind = 'event' "
            "AND json_extract(tags, '$.type') LIKE 'calibration^_%' ESCAPE '^' "
            "AND json_extract(tags, '$.instrument') IS NOT NULL AND ts_us >= ? ORDER BY ts_us",
            (since_us,),
        ):
            f = facts[(g, inst)]
            f.event, f.event_ns, f.event_data = typ, int(ts) * 1000, _data(data)
    return _instruments(facts)


def gateways_sqlite(
    path: Path, *, since_ns: int
) -> tuple[list[GatewaySummary], list[Completeness]]:
    """:func:`gateways_influx` from the SQLite store."""
    days = completeness_sqlite(path, since_ns=since_ns)
    with closing(_connect(path)) as db:
        last_seen = {
            g: int(t) * 1000
            for g, t in db.execute(
                "SELECT gateway, max(sealed_us) FROM batches WHERE sealed_us >= ? GROUP BY 1",
                (since_ns // 1000,),
            )
        }
        states = {g: s for g, s in db.execute("SELECT gateway, state FROM gateway_status")}
    return _gateways(days, last_seen, states), days


def audit_sqlite(
    path: Path, *, since_ns: int
) -> tuple[list[EventLogSummary], list[SecurityRecord]]:
    """:func:`audit_influx` from the SQLite store (which refuses conflicting batches, so
    its conflicts are those the ingest filed)."""
    since_us = since_ns // 1000
    entries: dict[str, list[tuple[int, int]]] = defaultdict(list)
    security: list[SecurityRecord] = []
    with closing(_connect(path)) as db:
        for g, n, ts in db.execute(
            "SELECT gateway, CAST(json_extract(fields, '$.n') AS INTEGER), ts_us FROM items "
            "WHERE kind = 'event' AND ts_us >= ?",
            (since_us,),
        ):
            if n is not None:
                entries[g].append((int(ts) * 1000, int(n)))
        rows: list[Any] = []
        for columns in ("reason, digest", "'', ''"):  # the latter: before message records
            try:
                rows = list(
                    db.execute(
                        f"SELECT gateway, kind, seq, ts_us, detail, {columns} FROM security "
                        "WHERE ts_us >= ?",
                        (since_us,),
                    )
                )
                break
            except sqlite3.OperationalError:  # no such column, or (older) no such table
                continue
        security = [
            SecurityRecord(g, k, int(q), int(t) * 1000, d, r, h) for g, k, q, t, d, r, h in rows
        ]
    return event_log_continuity(dict(entries)), sorted(security, key=_security_order)


def report_sqlite(
    path: Path, *, since_ns: int, limits: dict[str, tuple[float, float]] | None = None
) -> Report:
    """The whole report from the SQLite store."""
    points = points_sqlite(path, since_ns=since_ns, limits=limits)
    instruments = instruments_sqlite(path, since_ns=since_ns)
    gateways, days = gateways_sqlite(path, since_ns=since_ns)
    event_logs, security = audit_sqlite(path, since_ns=since_ns)
    return Report(points, instruments, gateways, days, event_logs, security)


def report_store(
    store: InfluxV1Store | InfluxV2Store | SqliteStore,
    *,
    since_ns: int,
    limits: dict[str, tuple[float, float]] | None = None,
) -> Report:
    """The report from the store an ingest configuration names."""
    if isinstance(store, SqliteStore):
        return report_sqlite(store.path, since_ns=since_ns, limits=limits)
    auth: dict[str, Any] = {}
    if isinstance(store, InfluxV1Store):
        if store.username is not None:
            pw = store.password.get_secret_value() if store.password else ""
            auth = {"username": store.username, "password": pw}
        return report_influx(store.url, store.database, since_ns=since_ns, limits=limits, **auth)
    token = store.token.get_secret_value() if store.token else None
    return report_influx(store.url, store.bucket, since_ns=since_ns, limits=limits, token=token)
