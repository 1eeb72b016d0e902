"""What the console reads from the platform's store, for InfluxDB (InfluxQL) and SQLite.

Both readers answer the same questions with the same definitions (docs/ingest.md
for the schema, docs/supervision.md for the views). They are synchronous (one
HTTP request or one SQLite read each); the console runs them in a thread with a
deadline. Every failure to reach the store is :class:`StoreDown`, so a page can
say so and retry; an answer with nothing in it is an empty result, not an error.

Long ranges are downsampled *in the query* (``GROUP BY time(…)`` in InfluxQL,
``GROUP BY ts_us / bucket`` in SQLite): at most about ``max_points`` rows of a
series ever leave the database.
"""

from __future__ import annotations

import itertools
import json
import math
import sqlite3
from collections import Counter
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from supervision.config import InfluxV1Store, InfluxV2Store, SqliteStore
from supervision.report import (
    Completeness,
    InstrumentStatus,
    completeness_influx,
    completeness_sqlite,
    instruments_influx,
    instruments_sqlite,
)
from supervision.sinks import StoreError
from supervision.sinks.influxdb import influxql_query

__all__ = [
    "AlarmRow",
    "EventRow",
    "GatewayRow",
    "InfluxReader",
    "PointRef",
    "PointStats",
    "Sample",
    "SecurityCounts",
    "SecurityMark",
    "Series",
    "SqliteReader",
    "StoreDown",
    "StoreReader",
    "bucket_seconds",
    "reader_for",
]

NICE_BUCKETS_S = (
    1,
    2,
    5,
    10,
    15,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    10800,
    21600,
    43200,
    86400,
)
MARKER_LIMIT = 1000


class StoreDown(Exception):
    """The store could not be read (down, refused, timed out); ``store`` names it."""

    def __init__(self, store: str, message: str) -> None:
        super().__init__(f"{store}: {message}")
        self.store = store


@dataclass(frozen=True, slots=True)
class GatewayRow:
    """What the store says of one gateway (fleet view)."""

    site: str
    gateway: str
    state: str | None = None  # last status message: online / offline
    version: str | None = None
    status_ns: int | None = None
    last_seen_ns: int | None = None  # latest batch seal time
    clock: str | None = None  # last clock_sync event: synchronised / unsynchronised / unknown
    software: str | None = None  # software identity of the last start-up
    startup_ns: int | None = None


@dataclass(frozen=True, slots=True)
class PointRef:
    site: str
    gateway: str
    device: str
    point: str
    unit: str | None = None
    instrument: str | None = None

    @property
    def key(self) -> str:
        return f"{self.gateway}/{self.device}/{self.point}"


@dataclass(frozen=True, slots=True)
class Sample:
    """One chart point: a raw reading (``n == 1``) or a bucket's mean, min, max, count."""

    ts_ns: int
    value: float
    lo: float
    hi: float
    n: int = 1
    verdict: str | None = None
    flags: str | None = None
    quality: str | None = None
    U: float | None = None
    k: float | None = None


@dataclass(frozen=True, slots=True)
class Series:
    raw: bool
    bucket_s: int | None
    samples: list[Sample]
    total: int  # readings with a numeric value in the range
    markers: list[Sample] = field(default_factory=list)  # SPC-flagged / not-pass readings


@dataclass(slots=True)
class PointStats:
    count: int = 0
    numeric: int = 0
    mean: float | None = None
    stddev: float | None = None
    mean_moving_range: float | None = None
    verdicts: dict[str, int] = field(default_factory=dict)
    qualities: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    last_U: float | None = None
    last_k: float | None = None


@dataclass(frozen=True, slots=True)
class AlarmRow:
    ts_ns: int
    site: str
    gateway: str
    alarm: str
    device: str | None
    point: str | None
    severity: str | None
    state: str | None
    event: str | None
    user: str | None = None
    value: Any = None
    limit: Any = None
    message: str | None = None
    shelved: bool = False


@dataclass(frozen=True, slots=True)
class SecurityMark:
    """A numbering security event (``event_gap``, ``event_reset``, ``reset``) as stored:
    where a gateway's batch or event-log numbers went wrong (docs/ingest.md)."""

    gateway: str
    kind: str
    seq: int
    ts_ns: int


@dataclass(frozen=True, slots=True)
class SecurityCounts:
    """One gateway's security events in the console's terms (docs/supervision.md):
    ``replays``; ``forgeries`` (``forgery`` and ``conflict``: bytes the gateway's own
    outbox never produced); ``dead_letters`` (messages refused for another reason);
    ``resets`` (``reset`` and ``event_reset``: numbers went back); ``event_gaps``."""

    replays: int = 0
    forgeries: int = 0
    dead_letters: int = 0
    resets: int = 0
    event_gaps: int = 0

    @classmethod
    def of(cls, kinds: dict[str, int]) -> SecurityCounts:
        """From counts by stored ``kind`` (:meth:`StoreReader.security`)."""
        k = kinds.get
        return cls(
            k("replay", 0), k("forgery", 0) + k("conflict", 0), k("dead_letter", 0),
            k("reset", 0) + k("event_reset", 0), k("event_gap", 0),
        )  # fmt: skip

    @property
    def messages(self) -> int:
        """Replays, forgeries and dead letters: the ``security`` risk indicator."""
        return self.replays + self.forgeries + self.dead_letters


# the security kinds that are about one message, counted by distinct payload digest
MESSAGE_KINDS = ("forgery", "dead_letter")
# the numbering kinds the risk ranking lists by number
MARK_KINDS = ("event_gap", "event_reset", "reset")


@dataclass(frozen=True, slots=True)
class EventRow:
    """An event-log entry as the store holds it (fields of docs/trust.md)."""

    ts_ns: int
    site: str
    gateway: str
    n: int | None
    type: str
    source: str | None
    software: str | None
    prev: str | None
    sig: str | None
    data: str | None  # JSON text as received

    def data_dict(self) -> dict[str, Any]:
        try:
            d = json.loads(self.data or "{}")
        except ValueError:
            return {}
        return d if isinstance(d, dict) else {}


class StoreReader(Protocol):
    """The questions the console asks; see :class:`SqliteReader` and :class:`InfluxReader`."""

    name: str

    def gateways(self) -> list[GatewayRow]: ...
    def completeness(self, since_ns: int) -> list[Completeness]: ...
    def points(self, since_ns: int) -> list[PointRef]: ...
    def point_ref(self, gateway: str, device: str, point: str) -> PointRef | None: ...
    def series(
        self, gateway: str, device: str, point: str, start_ns: int, end_ns: int, max_points: int
    ) -> Series: ...
    def stats(
        self, gateway: str, device: str, point: str, start_ns: int, end_ns: int
    ) -> PointStats: ...
    def instruments(self, since_ns: int) -> list[InstrumentStatus]: ...
    def alarms(
        self, since_ns: int, *, gateway: str | None = None, limit: int = 2000
    ) -> list[AlarmRow]: ...
    def events(
        self,
        since_ns: int,
        *,
        gateway: str | None = None,
        types: Iterable[str] | None = None,
        limit: int = 5000,
    ) -> list[EventRow]: ...
    def point_counts(self, since_ns: int) -> list[dict[str, Any]]: ...
    def moments(self, since_ns: int) -> dict[tuple[str, str, str], PointStats]: ...
    def security(self, since_ns: int) -> dict[str, dict[str, int]]: ...
    def security_marks(self, since_ns: int, limit: int = MARKER_LIMIT) -> list[SecurityMark]: ...


def bucket_seconds(span_ns: int, max_points: int) -> int:
    """The smallest round bucket that cuts ``span_ns`` into at most ``max_points``."""
    need = span_ns / 1e9 / max(1, max_points)
    for b in NICE_BUCKETS_S:
        if b >= need:
            return b
    return math.ceil(need / 86400) * 86400


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _moments(vals: list[float], stats: PointStats) -> None:
    n = len(vals)
    stats.numeric = n
    if not n:
        return
    stats.mean = math.fsum(vals) / n
    if n > 1:
        m = stats.mean
        stats.stddev = math.sqrt(math.fsum((x - m) ** 2 for x in vals) / (n - 1))
        stats.mean_moving_range = math.fsum(abs(b - a) for a, b in itertools.pairwise(vals))
        stats.mean_moving_range /= n - 1


# -- SQLite -------------------------------------------------------------------------------


class SqliteReader:
    """The SQLite store of ``supervision/sinks/sqlite.py``, opened read-only per question."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = f"sqlite {path}"

    def _db(self) -> sqlite3.Connection:
        if not self.path.exists():
            raise StoreDown(self.name, "the store file does not exist")
        try:
            return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
        except sqlite3.Error as exc:
            raise StoreDown(self.name, str(exc)) from None

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            with closing(self._db()) as db:
                return db.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []  # the ingest has not written anything yet
            raise StoreDown(self.name, str(exc)) from None
        except sqlite3.Error as exc:
            raise StoreDown(self.name, str(exc)) from None

    def gateways(self) -> list[GatewayRow]:
        rows: dict[str, dict[str, Any]] = {}
        for g, site, state, version, ts in self._rows(
            "SELECT gateway, site, state, version, ts_us FROM gateway_status"
        ):
            rows[g] = {"site": site, "state": state, "version": version, "status_ns": ts * 1000}
        for g, site, sealed in self._rows(
            "SELECT gateway, site, max(sealed_us) FROM batches GROUP BY gateway"
        ):
            rows.setdefault(g, {"site": site})["last_seen_ns"] = int(sealed) * 1000
        for g, site, typ, ts, data in self._rows(
            "SELECT gateway, site, json_extract(tags, '$.type'), max(ts_us), "
            "json_extract(fields, '$.data') FROM items WHERE kind = 'event' "
            "AND json_extract(tags, '$.type') IN ('clock_sync', 'startup') GROUP BY 1, 3"
        ):
            r = rows.setdefault(g, {"site": site})
            _event_fact(r, typ, int(ts) * 1000, data)
        return [GatewayRow(gateway=g, **r) for g, r in sorted(rows.items())]

    def completeness(self, since_ns: int) -> list[Completeness]:
        try:
            return completeness_sqlite(self.path, since_ns=since_ns)
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise StoreDown(self.name, str(exc)) from None
        except sqlite3.Error as exc:
            raise StoreDown(self.name, str(exc)) from None

    def points(self, since_ns: int) -> list[PointRef]:
        return [
            PointRef(site, g, d, p, unit, inst)
            for site, g, d, p, unit, inst in self._rows(
                "SELECT site, gateway, device, point, unit, instrument FROM readings "
                "WHERE ts_us >= ? GROUP BY gateway, device, point ORDER BY 2, 3, 4",
                (since_ns // 1000,),
            )
        ]

    def point_ref(self, gateway: str, device: str, point: str) -> PointRef | None:
        rows = self._rows(
            "SELECT site, unit, instrument FROM readings WHERE gateway = ? AND device = ? "
            "AND point = ? ORDER BY ts_us DESC LIMIT 1",
            (gateway, device, point),
        )
        if not rows:
            return None
        site, unit, inst = rows[0]
        return PointRef(site, gateway, device, point, unit, inst)

    def series(
        self, gateway: str, device: str, point: str, start_ns: int, end_ns: int, max_points: int
    ) -> Series:
        where = (
            "gateway = ? AND device = ? AND point = ? AND ts_us >= ? AND ts_us < ? "
            "AND typeof(value) IN ('real', 'integer')"
        )
        args = (gateway, device, point, start_ns // 1000, end_ns // 1000)
        ((total,),) = self._rows(f"SELECT count(*) FROM readings WHERE {where}", args)
        markers = [
            Sample(ts * 1000, float(v), float(v), float(v), 1, verdict, flags, q)
            for ts, v, verdict, flags, q in self._rows(
                f"SELECT ts_us, value, verdict, flags, quality FROM readings WHERE {where} AND "
                "(instr(coalesce(flags, ''), 'spc_') > 0 OR verdict IN "
                "('fail', 'conditional_pass', 'conditional_fail')) ORDER BY ts_us DESC LIMIT ?",
                (*args, MARKER_LIMIT),
            )
        ][::-1]
        if total <= max_points:
            samples = [
                Sample(ts * 1000, float(v), float(v), float(v), 1, verdict, flags, q, u, k)
                for ts, v, verdict, flags, q, u, k in self._rows(
                    f"SELECT ts_us, value, verdict, flags, quality, U, k FROM readings "
                    f"WHERE {where} ORDER BY ts_us",
                    args,
                )
            ]
            return Series(True, None, samples, int(total), markers)
        b = bucket_seconds(end_ns - start_ns, max_points)
        bus = b * 1_000_000
        samples = [
            Sample(int(k) * bus * 1000, float(avg), float(lo), float(hi), int(n))
            for k, avg, lo, hi, n in self._rows(
                f"SELECT ts_us / {bus}, avg(value), min(value), max(value), count(value) "
                f"FROM readings WHERE {where} GROUP BY 1 ORDER BY 1",
                args,
            )
        ]
        return Series(False, b, samples, int(total), markers)

    def stats(
        self, gateway: str, device: str, point: str, start_ns: int, end_ns: int
    ) -> PointStats:
        st = PointStats()
        vals: list[float] = []
        verdicts: Counter[str] = Counter()
        qualities: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        for v, verdict, q, reason, u, k in self._rows(
            "SELECT value, verdict, quality, reason, U, k FROM readings WHERE gateway = ? AND "
            "device = ? AND point = ? AND ts_us >= ? AND ts_us < ? ORDER BY ts_us",
            (gateway, device, point, start_ns // 1000, end_ns // 1000),
        ):
            st.count += 1
            x = _num(v)
            if x is not None:
                vals.append(x)
            if verdict:
                verdicts[verdict] += 1
            qualities[q] += 1
            if reason:
                reasons[reason] += 1
            if u is not None:
                st.last_U, st.last_k = float(u), None if k is None else float(k)
        _moments(vals, st)
        st.verdicts, st.qualities, st.reasons = dict(verdicts), dict(qualities), dict(reasons)
        return st

    def instruments(self, since_ns: int) -> list[InstrumentStatus]:
        try:
            return instruments_sqlite(self.path, since_ns=since_ns)
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise StoreDown(self.name, str(exc)) from None
        except sqlite3.Error as exc:
            raise StoreDown(self.name, str(exc)) from None

    def alarms(
        self, since_ns: int, *, gateway: str | None = None, limit: int = 2000
    ) -> list[AlarmRow]:
        sql = (
            "SELECT ts_us, site, gateway, tags, fields FROM items WHERE kind = 'alarm' "
            "AND ts_us >= ?"
        )
        args: tuple[Any, ...] = (since_ns // 1000,)
        if gateway is not None:
            sql, args = sql + " AND gateway = ?", (*args, gateway)
        out = []
        for ts, site, g, tags, fields in self._rows(
            sql + " ORDER BY ts_us DESC, seq DESC, idx DESC LIMIT ?", (*args, limit)
        ):
            d = {**json.loads(fields), **json.loads(tags)}
            out.append(_alarm_row(int(ts) * 1000, site, g, d))
        return out

    def events(
        self,
        since_ns: int,
        *,
        gateway: str | None = None,
        types: Iterable[str] | None = None,
        limit: int = 5000,
    ) -> list[EventRow]:
        sql = (
            "SELECT ts_us, site, gateway, tags, fields FROM items WHERE kind = 'event' "
            "AND ts_us >= ?"
        )
        args: tuple[Any, ...] = (since_ns // 1000,)
        if gateway is not None:
            sql, args = sql + " AND gateway = ?", (*args, gateway)
        wanted = list(types or [])
        if wanted:
            marks = ",".join("?" * len(wanted))
            sql, args = sql + f" AND json_extract(tags, '$.type') IN ({marks})", (*args, *wanted)
        rows = self._rows(sql + " ORDER BY ts_us DESC LIMIT ?", (*args, limit))
        out = []
        for ts, site, g, tags, fields in rows[::-1]:
            t, f = json.loads(tags), json.loads(fields)
            out.append(_event_row(int(ts) * 1000, site, g, t, f))
        return out

    def point_counts(self, since_ns: int) -> list[dict[str, Any]]:
        """Per point: readings, verdict counts and SPC-flagged readings (risk indicators)."""
        out = []
        for site, g, d, p, inst, n, fail, cond, spc, last_ts in self._rows(
            "SELECT site, gateway, device, point, max(instrument), count(*), "
            "sum(verdict = 'fail' OR instr(coalesce(flags, ''), 'out_of_tolerance') > 0), "
            "sum(verdict IN ('conditional_pass', 'conditional_fail')), "
            "sum(instr(coalesce(flags, ''), 'spc_nelson_') > 0), max(ts_us) "
            "FROM readings WHERE ts_us >= ? GROUP BY gateway, device, point",
            (since_ns // 1000,),
        ):
            out.append(
                {
                    "site": site,
                    "gateway": g,
                    "device": d,
                    "point": p,
                    "instrument": inst,
                    "count": int(n),
                    "fail": int(fail or 0),
                    "conditional": int(cond or 0),
                    "spc": int(spc or 0),
                    "last_ns": int(last_ts) * 1000,
                }
            )
        return out

    def moments(self, since_ns: int) -> dict[tuple[str, str, str], PointStats]:
        """Per point: mean, σ and mean moving range of its numeric values (one pass)."""
        out: dict[tuple[str, str, str], PointStats] = {}
        key: tuple[str, str, str] | None = None
        vals: list[float] = []
        for g, d, p, v in self._rows(
            "SELECT gateway, device, point, value FROM readings WHERE ts_us >= ? AND "
            "typeof(value) IN ('real', 'integer') ORDER BY gateway, device, point, ts_us",
            (since_ns // 1000,),
        ):
            if (g, d, p) != key:
                if key is not None:
                    _moments(vals, out.setdefault(key, PointStats()))
                key, vals = (g, d, p), []
            vals.append(float(v))
        if key is not None:
            _moments(vals, out.setdefault(key, PointStats()))
        return out

    def security(self, since_ns: int) -> dict[str, dict[str, int]]:
        """Per gateway, the security events the ingest filed (``security`` table), by
        kind (docs/ingest.md); the table's key makes a message record one per payload."""
        out: dict[str, dict[str, int]] = {}
        for g, kind, n in self._rows(
            "SELECT gateway, kind, count(*) FROM security WHERE ts_us >= ? GROUP BY 1, 2",
            (since_ns // 1000,),
        ):
            out.setdefault(g, {})[kind] = int(n)
        return out

    def security_marks(self, since_ns: int, limit: int = MARKER_LIMIT) -> list[SecurityMark]:
        """The latest numbering security events (:data:`MARK_KINDS`), oldest first."""
        marks = ",".join("?" * len(MARK_KINDS))
        rows = self._rows(
            f"SELECT gateway, kind, seq, ts_us FROM security WHERE ts_us >= ? AND kind IN "
            f"({marks}) ORDER BY ts_us DESC LIMIT ?",
            (since_ns // 1000, *MARK_KINDS, limit),
        )
        return [SecurityMark(g, k, int(q), int(t) * 1000) for g, k, q, t in rows[::-1]]


def _event_fact(r: dict[str, Any], typ: str, ts_ns: int, data: Any) -> None:
    try:
        d = json.loads(data) if isinstance(data, str) else {}
    except ValueError:
        d = {}
    if not isinstance(d, dict):
        return
    if typ == "clock_sync":
        r["clock"] = str(d.get("new")) if d.get("new") else None
    elif typ == "startup":
        sw = d.get("software")
        if isinstance(sw, dict):
            name, ver, digest = sw.get("name", ""), sw.get("version", ""), sw.get("sha256", "")
            r["software"] = f"{name} {ver} sha256:{str(digest)[:12]}".strip()
        elif sw is not None:
            r["software"] = str(sw)
        r["startup_ns"] = ts_ns


def _alarm_row(ts_ns: int, site: str, gateway: str, d: dict[str, Any]) -> AlarmRow:
    return AlarmRow(
        ts_ns,
        site,
        gateway,
        str(d.get("alarm", "")),
        d.get("device"),
        d.get("point"),
        d.get("severity"),
        d.get("state"),
        d.get("event"),
        d.get("user"),
        d.get("value"),
        d.get("limit"),
        d.get("message"),
        bool(d.get("shelved")),
    )


def _event_row(
    ts_ns: int, site: str, gateway: str, tags: dict[str, Any], f: dict[str, Any]
) -> EventRow:
    n = f.get("n")
    return EventRow(
        ts_ns,
        site,
        gateway,
        int(n) if isinstance(n, int | float) else None,
        str(tags.get("type", "")),
        f.get("source"),
        f.get("software"),
        f.get("prev"),
        f.get("sig"),
        f.get("data"),
    )


# -- InfluxDB (InfluxQL) ----------------------------------------------------------------


def _q(s: str) -> str:
    """A single-quoted InfluxQL string literal."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _re(s: str) -> str:
    """An InfluxQL regex literal matching ``s`` exactly."""
    import re

    return "/^" + re.escape(s).replace("/", "\\/") + "$/"


class InfluxReader:
    """InfluxDB through InfluxQL on ``/query``: 1.x, and 2.x/3.x through v1 compatibility
    (a DBRP mapping from the bucket's name, the token as credentials)."""

    def __init__(self, url: str, database: str, *, timeout: float = 15.0, **auth: Any) -> None:
        self.url, self.database, self.timeout, self.auth = url, database, timeout, auth
        self.name = f"influxdb {url} {database}"

    def _query(self, qs: list[str]) -> list[list[dict[str, Any]]]:
        try:
            doc = influxql_query(
                self.url, ";".join(qs), database=self.database, timeout=self.timeout, **self.auth
            )
        except StoreError as exc:
            if "database not found" in str(exc):
                return [[] for _ in qs]
            raise StoreDown(self.name, str(exc)) from None
        except (OSError, ValueError) as exc:
            raise StoreDown(self.name, f"{type(exc).__name__}: {exc}") from None
        results = doc.get("results", [])
        return [
            list(results[i].get("series", [])) if i < len(results) else [] for i in range(len(qs))
        ]

    def _auth_kw(self) -> dict[str, Any]:
        return dict(self.auth)

    def gateways(self) -> list[GatewayRow]:
        status, batch, clock, startup = self._query(
            [
                "SELECT last(state) AS state, last(version) AS version FROM gateway_status "
                "GROUP BY site, gateway",
                "SELECT last(seq) FROM batch GROUP BY site, gateway",
                "SELECT last(data) FROM event WHERE \"type\" = 'clock_sync' GROUP BY site, gateway",
                "SELECT last(data) FROM event WHERE \"type\" = 'startup' GROUP BY site, gateway",
            ]
        )
        rows: dict[str, dict[str, Any]] = {}
        for s in status:
            t, v = s["tags"], s["values"][0]
            rows[t["gateway"]] = {
                "site": t.get("site", ""),
                "state": v[1],
                "version": v[2],
                "status_ns": int(v[0]),
            }
        for s in batch:
            t = s["tags"]
            r = rows.setdefault(t["gateway"], {"site": t.get("site", "")})
            r["last_seen_ns"] = int(s["values"][0][0])
        for typ, series in (("clock_sync", clock), ("startup", startup)):
            for s in series:
                t = s["tags"]
                r = rows.setdefault(t["gateway"], {"site": t.get("site", "")})
                _event_fact(r, typ, int(s["values"][0][0]), s["values"][0][1])
        return [GatewayRow(gateway=g, **r) for g, r in sorted(rows.items())]

    def completeness(self, since_ns: int) -> list[Completeness]:
        try:
            return completeness_influx(
                self.url, self.database, since_ns=since_ns, **self._auth_kw()
            )
        except StoreError as exc:
            if "database not found" in str(exc):
                return []
            raise StoreDown(self.name, str(exc)) from None

    def points(self, since_ns: int) -> list[PointRef]:
        (series,) = self._query(
            [
                f"SELECT last(quality) FROM reading WHERE time >= {since_ns} "
                "GROUP BY site, gateway, device, point, unit, instrument"
            ]
        )
        out = {}
        for s in series:
            t = s["tags"]
            ref = PointRef(
                t.get("site", ""),
                t["gateway"],
                t["device"],
                t["point"],
                t.get("unit") or None,
                t.get("instrument") or None,
            )
            out[ref.key] = ref
        return [out[k] for k in sorted(out)]

    def point_ref(self, gateway: str, device: str, point: str) -> PointRef | None:
        (series,) = self._query(
            [
                f"SELECT last(quality) FROM reading WHERE gateway = {_q(gateway)} AND "
                f"device = {_q(device)} AND point = {_q(point)} GROUP BY site, unit, instrument"
            ]
        )
        if not series:
            return None
        best = max(series, key=lambda s: int(s["values"][0][0]))
        t = best.get("tags", {})
        return PointRef(
            t.get("site", ""),
            gateway,
            device,
            point,
            t.get("unit") or None,
            t.get("instrument") or None,
        )

    def _where(self, gateway: str, device: str, point: str, start_ns: int, end_ns: int) -> str:
        return (
            f"gateway = {_q(gateway)} AND device = {_q(device)} AND point = {_q(point)} "
            f"AND time >= {start_ns} AND time < {end_ns}"
        )

    def series(
        self, gateway: str, device: str, point: str, start_ns: int, end_ns: int, max_points: int
    ) -> Series:
        w = self._where(gateway, device, point, start_ns, end_ns)
        count, marks = self._query(
            [
                f"SELECT count(value) FROM reading WHERE {w}",
                f"SELECT value, verdict, flags, quality FROM reading WHERE {w} AND "
                "(flags =~ /spc_/ OR verdict =~ /^(fail|conditional_pass|conditional_fail)$/) "
                f"ORDER BY time DESC LIMIT {MARKER_LIMIT}",
            ]
        )
        total = int(count[0]["values"][0][1]) if count else 0
        markers = [
            Sample(int(t), float(v), float(v), float(v), 1, verdict, flags, q)
            for s in marks
            for t, v, verdict, flags, q in s["values"]
            if _num(v) is not None
        ][::-1]
        if total <= max_points:
            (raw,) = self._query(
                [f"SELECT value, verdict, flags, quality, U, k FROM reading WHERE {w}"]
            )
            samples = [
                Sample(int(t), float(v), float(v), float(v), 1, verdict, flags, q, u, k)
                for s in raw
                for t, v, verdict, flags, q, u, k in s["values"]
                if _num(v) is not None
            ]
            return Series(True, None, samples, total, markers)
        b = bucket_seconds(end_ns - start_ns, max_points)
        (agg,) = self._query(
            [
                f"SELECT mean(value), min(value), max(value), count(value) FROM reading WHERE {w} "
                f"GROUP BY time({b}s) fill(none)"
            ]
        )
        samples = [
            Sample(int(t), float(m), float(lo), float(hi), int(n))
            for s in agg
            for t, m, lo, hi, n in s["values"]
            if _num(m) is not None
        ]
        return Series(False, b, samples, total, markers)

    def stats(
        self, gateway: str, device: str, point: str, start_ns: int, end_ns: int
    ) -> PointStats:
        w = self._where(gateway, device, point, start_ns, end_ns)
        verdict_names = ("pass", "conditional_pass", "conditional_fail", "fail")
        quality_names = ("good", "uncertain", "bad")
        qs = [
            f"SELECT count(quality), count(value), mean(value), stddev(value) FROM reading "
            f"WHERE {w}",
            f"SELECT mean(mr) FROM (SELECT abs(difference(value)) AS mr FROM reading WHERE {w})",
            f"SELECT last(U), last(k) FROM reading WHERE {w}",
            f"SELECT reason FROM reading WHERE {w} AND reason =~ /./ ORDER BY time DESC LIMIT 1000",
        ]
        qs += [
            f"SELECT count(quality) FROM reading WHERE {w} AND verdict = {_q(v)}"
            for v in verdict_names
        ]
        qs += [
            f"SELECT count(value) FROM reading WHERE {w} AND quality = {_q(q)}"
            for q in quality_names
        ]
        res = self._query(qs)
        st = PointStats()
        if res[0]:
            _, n, numeric, mean, sd = res[0][0]["values"][0]
            st.count, st.numeric, st.mean, st.stddev = int(n), int(numeric), _num(mean), _num(sd)
        if res[1]:
            st.mean_moving_range = _num(res[1][0]["values"][0][1])
        if res[2]:
            st.last_U, st.last_k = _num(res[2][0]["values"][0][1]), _num(res[2][0]["values"][0][2])
        reasons: Counter[str] = Counter(str(v[1]) for s in res[3] for v in s["values"])
        st.reasons = dict(reasons)
        for name, r in zip(verdict_names, res[4:8], strict=True):
            if r and r[0]["values"][0][1]:
                st.verdicts[name] = int(r[0]["values"][0][1])
        for name, r in zip(quality_names, res[8:11], strict=True):
            if r and r[0]["values"][0][1]:
                st.qualities[name] = int(r[0]["values"][0][1])
        # readings without a numeric value (bad quality) have no ``value`` field to count
        if st.count > st.numeric:
            st.qualities["bad"] = st.qualities.get("bad", 0) + st.count - st.numeric
        return st

    def instruments(self, since_ns: int) -> list[InstrumentStatus]:
        try:
            return instruments_influx(self.url, self.database, since_ns=since_ns, **self._auth_kw())
        except StoreError as exc:
            if "database not found" in str(exc):
                return []
            raise StoreDown(self.name, str(exc)) from None

    def alarms(
        self, since_ns: int, *, gateway: str | None = None, limit: int = 2000
    ) -> list[AlarmRow]:
        w = f"time >= {since_ns}"
        if gateway is not None:
            w += f" AND gateway = {_q(gateway)}"
        (series,) = self._query([f"SELECT * FROM alarm WHERE {w} ORDER BY time DESC LIMIT {limit}"])
        out = []
        for s in series:
            cols = s["columns"]
            for v in s["values"]:
                d = {c: x for c, x in zip(cols, v, strict=True) if x is not None}
                out.append(_alarm_row(int(d["time"]), d.get("site", ""), d.get("gateway", ""), d))
        return out

    def events(
        self,
        since_ns: int,
        *,
        gateway: str | None = None,
        types: Iterable[str] | None = None,
        limit: int = 5000,
    ) -> list[EventRow]:
        w = f"time >= {since_ns}"
        if gateway is not None:
            w += f" AND gateway = {_q(gateway)}"
        wanted = list(types or [])
        if wanted:
            w += " AND (" + " OR ".join(f'"type" = {_q(t)}' for t in wanted) + ")"
        (series,) = self._query([f"SELECT * FROM event WHERE {w} ORDER BY time DESC LIMIT {limit}"])
        out = []
        for s in series:
            cols = s["columns"]
            for v in s["values"]:
                d = {c: x for c, x in zip(cols, v, strict=True) if x is not None}
                out.append(
                    _event_row(int(d["time"]), d.get("site", ""), d.get("gateway", ""), d, d)
                )
        return out[::-1]

    def point_counts(self, since_ns: int) -> list[dict[str, Any]]:
        w = f"time >= {since_ns}"
        g = "GROUP BY site, gateway, device, point, instrument"
        total, fail, cond, spc = self._query(
            [
                f"SELECT count(quality) FROM reading WHERE {w} {g}",
                f"SELECT count(quality) FROM reading WHERE {w} AND (verdict = 'fail' OR "
                f"flags =~ /(^|,)out_of_tolerance(,|$)/) {g}",
                f"SELECT count(quality) FROM reading WHERE {w} AND "
                f"verdict =~ /^conditional_(pass|fail)$/ {g}",
                f"SELECT count(quality) FROM reading WHERE {w} AND flags =~ /spc_nelson_/ {g}",
            ]
        )
        points: dict[tuple[str, str, str], dict[str, Any]] = {}
        for key, series in (("count", total), ("fail", fail), ("conditional", cond), ("spc", spc)):
            for s in series:
                t = s["tags"]
                k = (t["gateway"], t["device"], t["point"])
                p = points.setdefault(
                    k,
                    {
                        "site": t.get("site", ""),
                        "gateway": k[0],
                        "device": k[1],
                        "point": k[2],
                        "instrument": t.get("instrument") or None,
                        "count": 0,
                        "fail": 0,
                        "conditional": 0,
                        "spc": 0,
                        "last_ns": None,
                    },
                )
                p[key] += int(s["values"][0][1])
        return [points[k] for k in sorted(points)]

    def moments(self, since_ns: int) -> dict[tuple[str, str, str], PointStats]:
        """Per point: mean, σ and mean moving range, in one request for every point."""
        w = f"time >= {since_ns}"
        g = "GROUP BY gateway, device, point"
        basic, mr = self._query(
            [
                f"SELECT count(value), mean(value), stddev(value) FROM reading WHERE {w} {g}",
                f"SELECT mean(mr) FROM (SELECT abs(difference(value)) AS mr FROM reading "
                f"WHERE {w} {g}) {g}",
            ]
        )
        out: dict[tuple[str, str, str], PointStats] = {}
        for s in basic:
            t, v = s["tags"], s["values"][0]
            st = out.setdefault((t["gateway"], t["device"], t["point"]), PointStats())
            st.numeric, st.count, st.mean, st.stddev = int(v[1]), int(v[1]), _num(v[2]), _num(v[3])
        for s in mr:
            t, v = s["tags"], s["values"][0]
            st = out.setdefault((t["gateway"], t["device"], t["point"]), PointStats())
            st.mean_moving_range = _num(v[1])
        return out

    def security(self, since_ns: int) -> dict[str, dict[str, int]]:
        """Per gateway, the security events the ingest filed (``security`` measurement),
        by kind; message records by distinct payload digest (a restarted worker files a
        redelivered message again, at its new receipt time)."""
        kinds = "|".join(MESSAGE_KINDS)
        numbering, messages = self._query(
            [
                f"SELECT count(seq) FROM security WHERE time >= {since_ns} AND "
                f"kind !~ /^({kinds})$/ GROUP BY gateway, kind",
                f"SELECT count(distinct(digest)) FROM security WHERE time >= {since_ns} AND "
                f"kind =~ /^({kinds})$/ GROUP BY gateway, kind",
            ]
        )
        out: dict[str, dict[str, int]] = {}
        for s in (*numbering, *messages):
            t = s["tags"]
            out.setdefault(t.get("gateway", ""), {})[t.get("kind", "")] = int(s["values"][0][1])
        return out

    def security_marks(self, since_ns: int, limit: int = MARKER_LIMIT) -> list[SecurityMark]:
        """The latest numbering security events (:data:`MARK_KINDS`), oldest first."""
        (series,) = self._query(
            [
                f"SELECT seq FROM security WHERE time >= {since_ns} AND kind =~ "
                f"/^({'|'.join(MARK_KINDS)})$/ GROUP BY gateway, kind ORDER BY time DESC "
                f"LIMIT {limit}"
            ]
        )
        out = [
            SecurityMark(s["tags"].get("gateway", ""), s["tags"].get("kind", ""), int(q), int(t))
            for s in series
            for t, q in s["values"]
            if q is not None
        ]
        out.sort(key=lambda m: m.ts_ns)
        return out[-limit:]


def reader_for(
    store: InfluxV1Store | InfluxV2Store | SqliteStore, *, timeout: float = 15.0
) -> StoreReader:
    """The reader of the store an ingest configuration names."""
    if isinstance(store, SqliteStore):
        return SqliteReader(store.path)
    if isinstance(store, InfluxV1Store):
        auth: dict[str, Any] = {}
        if store.username is not None:
            pw = store.password.get_secret_value() if store.password else ""
            auth = {"username": store.username, "password": pw}
        return InfluxReader(store.url, store.database, timeout=timeout, **auth)
    token = store.token.get_secret_value() if store.token else None
    return InfluxReader(store.url, store.bucket, timeout=timeout, token=token)
