"""InfluxDB writers: the v1 ``/write`` API (InfluxDB 1.x) and the v2 write API.

Both encode a batch into line protocol (:mod:`supervision.sinks.line_protocol`) and
send many batches in one request. Blocking HTTP runs in a worker thread so the
event loop keeps parsing the next batch while the store works; each request is
bounded by the socket timeout.

Status codes: 2xx accepted; 400/413/422 (bad line, field type conflict, too large)
→ :class:`StoreRejected`; anything else, and every connection failure →
:class:`StoreUnavailable` (401/403/404 too: a wrong token or a missing database is
fixed by an operator, and the data must wait for that, not be discarded).

InfluxDB writes are idempotent by series and timestamp, and a point written again
with other field values replaces the stored ones: the store cannot refuse to
overwrite. What never overwrites stored content is the ingest, which asks before it
writes a batch number it may have seen (:meth:`stored_batch`: the ``batch`` point of
that number and its ``digest``), through InfluxQL on ``/query`` (1.x, 2.x with a
DBRP mapping, 3.x). A store without ``/query`` (VictoriaMetrics) answers
:class:`~supervision.sinks.LookupUnsupported`.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from supervision.model import Batch, SecurityEvent, Status
from supervision.sinks import (
    GatewayHigh,
    LookupUnsupported,
    StoredBatch,
    StoreRejected,
    StoreUnavailable,
)
from supervision.sinks.line_protocol import LineEncoder, security_line, status_line

__all__ = ["InfluxV1Sink", "InfluxV2Sink", "influxql_query"]

log = logging.getLogger(__name__)
T = TypeVar("T")

_REJECTED = frozenset({400, 413, 422})
_LOOKUP_WINDOW_NS = 86_400 * 10**9


def _quoted(s: str) -> str:
    """An InfluxQL string literal."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


class _LineProtocolSink:
    """Shared encoding and queries for both API versions, and the one thread that does
    the HTTP."""

    name = "influxdb"

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._encoder = LineEncoder()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="influxdb-writer")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def encode(self, batch: Batch) -> list[str]:
        return self._encoder.batch_lines(batch)

    def encode_status(self, status: Status, received_ns: int) -> list[str]:
        return [status_line(status, received_ns)]

    def encode_security(self, event: SecurityEvent) -> list[str]:
        return [security_line(event)]

    def lines_in(self, chunk: list[str]) -> int:
        return len(chunk)

    def _query_sync(self, q: str) -> dict[str, Any]:
        raise NotImplementedError

    async def _series(self, q: str) -> list[dict[str, Any]]:
        """The series of one query's result; LookupUnsupported when the answer is not
        what InfluxQL gives (VictoriaMetrics answers every ``/query`` with a list of
        databases, for dashboards that probe it)."""
        doc = await self._run(self._query_sync, q)
        results = doc.get("results") if isinstance(doc, dict) else None
        if not isinstance(results, list) or not results or not isinstance(results[0], dict):
            raise LookupUnsupported(self.name, "/query gave no InfluxQL results")
        series = results[0].get("series", [])
        if not isinstance(series, list) or not all(
            isinstance(s, dict)
            and s.get("columns", [None])[0] == "time"
            and isinstance(s.get("values"), list)
            for s in series
        ):
            raise LookupUnsupported(self.name, "/query answers something other than InfluxQL")
        return series

    async def stored_batch(self, gateway: str, seq: int, sealed_us: int) -> StoredBatch | None:
        g = _quoted(gateway)
        # an identical batch sits at its own time: one point to look at
        exact = await self._series(
            f"SELECT seq, digest FROM batch WHERE gateway = {g} "
            f"AND time = {sealed_us * 1000 + seq % 1000}"
        )
        for series in exact:
            for _, s, digest in series["values"]:
                if s == seq:
                    return StoredBatch(digest, sealed_us)
        # another batch with that number sits elsewhere: the gateway's batch points sealed
        # within a day of this one (a bound on the cost of the search: batches are sealed
        # in number order, so the one stored under this number was sealed near it)
        t = sealed_us * 1000
        found = await self._series(
            f"SELECT sealed, digest FROM batch WHERE gateway = {g} AND seq = {seq} "
            f"AND time >= {t - _LOOKUP_WINDOW_NS} AND time <= {t + _LOOKUP_WINDOW_NS} LIMIT 1"
        )
        for series in found:
            for _, sealed, digest in series["values"]:
                return StoredBatch(digest, int(sealed))
        return None

    async def highs(self) -> list[GatewayHigh]:
        out: dict[str, GatewayHigh] = {}
        for series in await self._series("SELECT max(seq) FROM batch GROUP BY gateway"):
            g = series["tags"]["gateway"]
            t, seq = series["values"][0]
            out[g] = GatewayHigh(g, int(seq), int(t) // 1000)
        for series in await self._series("SELECT max(n) FROM event GROUP BY gateway"):
            g = series["tags"]["gateway"]
            t, n = series["values"][0]
            b = out.get(g, GatewayHigh(g))
            out[g] = GatewayHigh(g, b.seq, b.sealed_us, int(n), int(t) // 1000)
        return [out[g] for g in sorted(out)]

    async def event_numbers(self, gateway: str, lo: int, hi: int) -> set[int]:
        found = await self._series(
            f"SELECT n FROM event WHERE gateway = {_quoted(gateway)} AND n >= {lo} AND n <= {hi}"
        )
        return {int(v[1]) for series in found for v in series["values"]}


class InfluxV1Sink(_LineProtocolSink):
    """InfluxDB 1.x ``POST /write?db=…&precision=ns`` over one keep-alive connection."""

    def __init__(
        self,
        url: str,
        database: str,
        *,
        retention_policy: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
        create_database: bool = False,
    ) -> None:
        super().__init__()
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"InfluxDB url {url!r} must be http(s)://host[:port]")
        self.name = f"influxdb-v1 {u.scheme}://{u.hostname}:{u.port or 8086}/{database}"
        self._scheme = u.scheme
        self._host = u.hostname
        self._port = u.port or 8086
        self._base = u.path.rstrip("/")
        params = {"db": database, "precision": "ns"}
        if retention_policy:
            params["rp"] = retention_policy
        auth: dict[str, str] = {}
        if username is not None:
            auth = {"u": username, "p": password or ""}
        self._write_path = f"{self._base}/write?{urllib.parse.urlencode(params | auth)}"
        self._database = database
        self._auth = auth
        self._timeout = timeout
        self._create_database = create_database
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            https = self._scheme == "https"
            cls = http.client.HTTPSConnection if https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self._timeout)
        return self._conn

    def _request(self, method: str, path: str, body: bytes | None, ctype: str) -> tuple[int, bytes]:
        """One request on the kept connection; a broken connection is dropped and raised."""
        conn = self._connection()
        try:
            conn.request(method, path, body=body, headers={"Content-Type": ctype})
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            self._conn = None
            raise StoreUnavailable(self.name, f"{type(exc).__name__}: {exc}") from None
        return resp.status, data

    def _write_sync(self, body: bytes) -> None:
        status, data = self._request("POST", self._write_path, body, "text/plain; charset=utf-8")
        if 200 <= status < 300:
            return
        text = data[:500].decode("utf-8", "replace").strip()
        if status in _REJECTED:
            raise StoreRejected(self.name, f"HTTP {status}: {text}")
        raise StoreUnavailable(self.name, f"HTTP {status}: {text}")

    def query_sync(self, q: str) -> dict[str, Any]:
        """Run InfluxQL through ``/query`` and return the decoded JSON."""
        return influxql_query(
            f"{self._scheme}://{self._host}:{self._port}{self._base}",
            q,
            database=self._database,
            username=self._auth.get("u"),
            password=self._auth.get("p"),
            timeout=self._timeout,
        )

    _query_sync = query_sync

    async def open(self) -> None:
        if self._create_database:
            q = urllib.parse.urlencode({"q": f'CREATE DATABASE "{self._database}"'} | self._auth)
            status, data = await self._run(
                self._request, "POST", f"{self._base}/query?{q}", None, "text/plain"
            )
            if status != 200:
                raise StoreUnavailable(self.name, f"CREATE DATABASE: HTTP {status} {data[:200]!r}")

    async def write(self, chunks: Sequence[list[str]]) -> None:
        body = "\n".join(line for chunk in chunks for line in chunk).encode("utf-8")
        await self._run(self._write_sync, body)

    async def aclose(self) -> None:
        self._shutdown()
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class InfluxV2Sink(_LineProtocolSink):
    """The v2 write API through ``influxdb-client`` (InfluxDB 2.x/3.x, 1.8+, VictoriaMetrics)."""

    def __init__(
        self, url: str, bucket: str, *, org: str = "", token: str = "", timeout: float = 10.0
    ) -> None:
        from influxdb_client import InfluxDBClient  # type: ignore[attr-defined]
        from influxdb_client.client.write_api import SYNCHRONOUS

        super().__init__()
        self.name = f"influxdb-v2 {url} bucket {bucket}"
        self._url = url
        self._token = token
        self._timeout = timeout
        self._bucket = bucket
        self._org = org
        # retries=False: back-off and back-pressure are ours, not urllib3's
        self._client = InfluxDBClient(
            url=url, token=token, org=org, timeout=int(timeout * 1000), retries=False
        )
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)

    def _write_sync(self, body: bytes) -> None:
        from influxdb_client import WritePrecision  # type: ignore[attr-defined]
        from influxdb_client.rest import ApiException

        try:
            self._write_api.write(
                bucket=self._bucket,
                org=self._org,
                record=body,
                write_precision=WritePrecision.NS,  # type: ignore[arg-type]
            )
        except ApiException as exc:
            status = int(exc.status or 0)
            text = str(exc.body or exc.reason)[:500]
            if status in _REJECTED:
                raise StoreRejected(self.name, f"HTTP {status}: {text}") from None
            raise StoreUnavailable(self.name, f"HTTP {status}: {text}") from None
        except Exception as exc:  # urllib3 connection errors have no common public base here
            raise StoreUnavailable(self.name, f"{type(exc).__name__}: {exc}") from None

    def _query_sync(self, q: str) -> dict[str, Any]:
        # InfluxQL on /query: 2.x maps the bucket by DBRP, 3.x takes it as the database
        return influxql_query(
            self._url, q, database=self._bucket, token=self._token or None, timeout=self._timeout
        )

    async def open(self) -> None:
        return None

    async def write(self, chunks: Sequence[list[str]]) -> None:
        body = "\n".join(line for chunk in chunks for line in chunk).encode("utf-8")
        await self._run(self._write_sync, body)

    async def aclose(self) -> None:
        self._shutdown()
        self._write_api.close()  # type: ignore[no-untyped-call]  # influxdb-client
        self._client.close()  # type: ignore[no-untyped-call]


def influxql_query(
    url: str,
    q: str,
    *,
    database: str | None = None,
    username: str | None = None,
    password: str | None = None,
    token: str | None = None,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Run InfluxQL against the v1 ``/query`` API (1.x, 2.x compatibility, 3.x).

    Raises :class:`StoreUnavailable` on transport or HTTP errors,
    :class:`~supervision.sinks.LookupUnsupported` when the server has no such API (HTTP
    404, 405, 501), and :class:`StoreRejected` when it reports a query error.
    """
    import json

    u = urllib.parse.urlsplit(url)
    params = {"q": q, "epoch": "ns"}
    if database:
        params["db"] = database
    if username is not None:
        params |= {"u": username, "p": password or ""}
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if token:
        headers["Authorization"] = f"Token {token}"
    cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    conn = cls(u.hostname or "127.0.0.1", u.port or 8086, timeout=timeout)
    try:
        conn.request("POST", f"{u.path.rstrip('/')}/query", urllib.parse.urlencode(params), headers)
        resp = conn.getresponse()
        data = resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise StoreUnavailable(url, f"{type(exc).__name__}: {exc}") from None
    finally:
        conn.close()
    if resp.status in (404, 405, 501):
        raise LookupUnsupported(url, f"no InfluxQL /query: HTTP {resp.status}")
    if resp.status != 200:
        raise StoreUnavailable(url, f"HTTP {resp.status}: {data[:300]!r}")
    try:
        doc: dict[str, Any] = json.loads(data)
    except ValueError as exc:
        raise StoreUnavailable(url, f"/query answered with something not JSON: {exc}") from None
    for result in doc.get("results", []):
        if "error" in result:
            raise StoreRejected(url, f"query error: {result['error']}")
    return doc
