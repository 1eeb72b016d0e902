"""InfluxDB writers: the v1 ``/write`` API (InfluxDB 1.x) and the v2 write API.

Both encode a batch into line protocol (:mod:`supervision.sinks.line_protocol`) and
send many batches in one request. Blocking HTTP runs in a worker thread so the
event loop keeps parsing the next batch while the store works; each request is
bounded by the socket timeout.

Status codes: 2xx accepted; 400/413/422 (bad line, field type conflict, too large)
→ :class:`StoreRejected`; anything else, and every connection failure →
:class:`StoreUnavailable` (401/403/404 too: a wrong token or a missing database is
fixed by an operator, and the data must wait for that, not be discarded).
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from supervision.model import Batch, Status
from supervision.sinks import StoreRejected, StoreUnavailable
from supervision.sinks.line_protocol import batch_lines, status_line

__all__ = ["InfluxV1Sink", "InfluxV2Sink", "influxql_query"]

log = logging.getLogger(__name__)
T = TypeVar("T")

_REJECTED = frozenset({400, 413, 422})


class _LineProtocolSink:
    """Shared encoding for both API versions, and the one thread that does the HTTP."""

    name = "influxdb"
    _executor: ThreadPoolExecutor | None = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="influxdb-writer")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def encode(self, batch: Batch) -> list[str]:
        return batch_lines(batch)

    def encode_status(self, status: Status, received_ns: int) -> list[str]:
        return [status_line(status, received_ns)]

    def lines_in(self, chunk: list[str]) -> int:
        return len(chunk)


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
            timeout=self._timeout,
        )

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

        self.name = f"influxdb-v2 {url} bucket {bucket}"
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

    Raises :class:`StoreUnavailable` on transport or HTTP errors and
    :class:`StoreRejected` when the server reports a query error.
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
    if resp.status != 200:
        raise StoreUnavailable(url, f"HTTP {resp.status}: {data[:300]!r}")
    doc: dict[str, Any] = json.loads(data)
    for result in doc.get("results", []):
        if "error" in result:
            raise StoreRejected(url, f"query error: {result['error']}")
    return doc
