"""The operations endpoint: ``/metrics`` (Prometheus) and ``/health`` (JSON) over plain HTTP.

A deliberately tiny HTTP/1.1 server on :func:`asyncio.start_server` — GET only, one
request per connection, bounded header size, read time and number of connections open
at once (a flood of idle connections cannot take the file descriptors the daemon's
devices, outbox and broker need) — so neither the daemon
nor the ingest needs a web framework. Bind it to loopback (the default): it has no
authentication. ``/health`` answers 200 when the health document says ``"status":
"ok"``, else 503; ``/metrics`` is always 200.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Self

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

__all__ = ["HealthFn", "OpsServer", "counter", "gauge"]

log = logging.getLogger("metrogate.ops")

MAX_HEADER_BYTES = 8192
READ_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 32
"""Connections served at once; one more is closed at once (and counted in ``refused``)."""
SAMPLE_EVERY_S = 5.0

HealthFn = Callable[[], dict[str, Any]]


class OpsServer:
    """Serves ``/metrics`` from ``registry`` and ``/health`` from ``health()``.

    An async context manager: the listening socket is open inside the ``async
    with`` block (``port`` is the bound port, useful with port 0); ``on_tick`` is
    called every ``SAMPLE_EVERY_S`` seconds (rate sampling) by a task of its own.
    """

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        health: HealthFn,
        *,
        on_tick: Callable[[], None] | None = None,
        tick_s: float = SAMPLE_EVERY_S,
    ) -> None:
        self.host = host
        self.port = port
        self.registry = registry
        self.health = health
        self.on_tick = on_tick
        self.tick_s = tick_s
        self._server: asyncio.Server | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.open_connections = 0
        """Connections being served now."""
        self.refused = 0
        """Connections closed unanswered because :data:`MAX_CONNECTIONS` were open."""
        self._refusing = False

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        if self.on_tick is not None:
            self._ticker = self._tg.create_task(self._tick(), name="ops-sampler")
        log.info("metrics and health on http://%s:%d/", self.host, self.port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None and self._tg is not None
        self._server.close()
        if self._ticker is not None:
            self._ticker.cancel()
        await self._tg.__aexit__(exc_type, exc, tb)
        async with asyncio.timeout(5):
            await self._server.wait_closed()

    async def _tick(self) -> None:
        assert self.on_tick is not None
        while True:
            self.on_tick()
            await asyncio.sleep(self.tick_s)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open_connections >= MAX_CONNECTIONS:
            if not self._refusing:  # once per flood
                log.warning(
                    "ops endpoint: %d connections open, closing new ones unanswered until "
                    "they end (%d refused so far)",
                    MAX_CONNECTIONS,
                    self.refused,
                )
            self._refusing = True
            self.refused += 1
            writer.close()
            return
        self.open_connections += 1
        try:
            await self._answer(reader, writer)
        finally:
            self.open_connections -= 1
            if self.open_connections == 0:
                self._refusing = False  # the next flood is logged again

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            status, ctype, body = self._respond(head)

        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            status, ctype, body = 400, "text/plain", b"bad request\n"
        except Exception:  # a failing probe must never take the daemon down
            log.exception("ops endpoint: request failed")
            status, ctype, body = 500, "text/plain", b"internal error\n"
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                  500: "Internal Server Error", 503: "Service Unavailable"}[status]  # fmt: skip
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                await writer.drain()
        except (TimeoutError, ConnectionError):
            pass  # the client went away; nothing to tell it
        finally:
            writer.close()

    def _respond(self, head: bytes) -> tuple[int, str, bytes]:
        if len(head) > MAX_HEADER_BYTES:
            return 400, "text/plain", b"header too large\n"
        try:
            method, target, _ = head.split(b"\r\n", 1)[0].decode("ascii").split(" ", 2)
        except (UnicodeDecodeError, ValueError):
            return 400, "text/plain", b"bad request line\n"
        if method != "GET":
            return 405, "text/plain", b"GET only\n"
        path = target.split("?", 1)[0]
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path in ("/health", "/"):
            doc = self.health()
            code = 200 if doc.get("status") == "ok" else 503
            return code, "application/json", json.dumps(doc, indent=1).encode() + b"\n"
        return 404, "text/plain", b"not found: try /metrics or /health\n"


def gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    """A gauge family for a collector's ``collect``."""
    return GaugeMetricFamily(name, doc, labels=list(labels))


def counter(name: str, doc: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    """A counter family; ``name`` as exposed (the exposition adds ``_total`` back)."""
    return CounterMetricFamily(name.removesuffix("_total"), doc, labels=list(labels))
