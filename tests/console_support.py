"""Helpers for console tests: a store filled through the real sinks, console configs.

:class:`StoreWriter` turns batch bodies (as a gateway would send them) into the
store's content with the ingest's own encoders — ``SqliteSink.encode`` for SQLite,
``batch_lines`` plus the v1 ``/write`` API for InfluxDB 1.x — so what the console
reads is exactly what the ingest would have written.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gateway.audit.eventlog import EventLog
from gateway.wire.keys import generate_keypair
from gateway.wire.signing import Signer
from supervision.console.auth import hash_password
from supervision.model import SecurityEvent, Status, parse_batch
from supervision.sinks.line_protocol import batch_lines, security_line, status_line
from supervision.sinks.sqlite import SqliteSink
from tests.ingest_support import register

PASSWORD = "correct horse battery staple"
_HASH: list[str] = []


def password_hash() -> str:
    if not _HASH:
        _HASH.append(hash_password(PASSWORD))
    return _HASH[0]


def body(kind: str, gateway: str, site: str, seq: int, sealed_us: int, items: list[Any]) -> bytes:
    key = {"data": "readings", "alarm": "alarms", "event": "events"}[kind]
    doc = {
        "v": 1,
        "type": kind,
        "gateway": gateway,
        "site": site,
        "seq": seq,
        "sealed": sealed_us,
        key: items,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


class StoreWriter:
    """Writes batches into a SQLite store and/or an InfluxDB 1.x database."""

    def __init__(self, *, sqlite: Path | None = None, influx: tuple[int, str] | None = None):
        self.sqlite = sqlite
        self.influx = influx
        self.seq: dict[str, int] = {}
        self._sink: SqliteSink | None = None
        if sqlite is not None:
            self._sink = SqliteSink(sqlite)
            self._sink._open_sync()
        if influx is not None:
            self._post("/query", f"q=CREATE DATABASE {influx[1]}".encode())

    def _post(self, path: str, data: bytes) -> None:
        assert self.influx is not None
        conn = http.client.HTTPConnection("127.0.0.1", self.influx[0], timeout=30)
        try:
            ctype = "application/x-www-form-urlencoded" if path == "/query" else "text/plain"
            conn.request("POST", path, data, {"Content-Type": ctype})
            resp = conn.getresponse()
            text = resp.read()
            assert resp.status in (200, 204), text
        finally:
            conn.close()

    def batch(
        self,
        kind: str,
        gateway: str,
        site: str,
        items: list[Any],
        sealed_us: int,
        *,
        seq: int | None = None,
    ) -> int:
        n = seq if seq is not None else self.seq.get(gateway, 0) + 1
        self.seq[gateway] = max(self.seq.get(gateway, 0), n)
        parsed = parse_batch(body(kind, gateway, site, n, sealed_us, items), site, gateway, kind)
        if self._sink is not None:
            self._sink._write_sync([self._sink.encode(parsed)])
        if self.influx is not None:
            lines = "\n".join(batch_lines(parsed))
            self._post(f"/write?db={self.influx[1]}&precision=ns", lines.encode())
        return n

    def readings(
        self, gateway: str, site: str, rows: Iterable[dict[str, Any]], *, per_batch: int = 5000
    ) -> None:
        batch: list[dict[str, Any]] = []
        for r in rows:
            batch.append(r)
            if len(batch) >= per_batch:
                self.batch("data", gateway, site, batch, batch[-1]["ts"])
                batch = []
        if batch:
            self.batch("data", gateway, site, batch, batch[-1]["ts"])

    def status(self, gateway: str, site: str, state: str, since_us: int, version: str) -> None:
        st = Status(site, gateway, state, since_us, version)
        if self._sink is not None:
            self._sink._write_sync([self._sink.encode_status(st, since_us * 1000)])
        if self.influx is not None:
            line = status_line(st, since_us * 1000)
            self._post(f"/write?db={self.influx[1]}&precision=ns", line.encode())

    def security(self, event: SecurityEvent) -> None:
        """A security event as the ingest files it (docs/ingest.md)."""
        if self._sink is not None:
            self._sink._write_sync([self._sink.encode_security(event)])
        if self.influx is not None:
            line = security_line(event)
            self._post(f"/write?db={self.influx[1]}&precision=ns", line.encode())

    def close(self) -> None:
        if self._sink is not None and self._sink._db is not None:
            self._sink._db.close()
            self._sink._db = None


def event_entries(
    tmp: Path, signer: Signer, events: list[tuple[str, dict[str, Any], str]], clock_us: int
) -> list[dict[str, Any]]:
    """Real, signed event-log entries (as the gateway publishes them) from ``events``."""
    t = [clock_us]

    def clock() -> int:
        t[0] += 1000
        return t[0]

    out = []
    with EventLog(tmp / "events.log", signer, software_id="test", clock_us=clock) as log:
        for type_, data, source in events:
            out.append(log.append(type_, data, source=source))
    return out


def reading(ts: int, device: str, point: str, value: Any, **extra: Any) -> dict[str, Any]:
    return {"ts": ts, "device": device, "point": point, "value": value, "quality": "good"} | extra


def console_yaml(
    tmp: Path, store: str, *, mqtt_port: int = 1883, extra: str = "", operators: bool = True
) -> Path:
    """An ingest config with a console section: users alice (operator) and victor (viewer)."""
    keys = tmp / "ops"
    if operators and not (keys / "alice.key").exists():
        generate_keypair(keys, name="alice")
    h = password_hash()
    text = (
        f"mqtt: {{url: 'mqtt://127.0.0.1:{mqtt_port}', client_id: console-test}}\n"
        f"keys_dir: {tmp / 'keys'}\n"
        f"store: {store}\n"
        "console:\n"
        "  listen: 127.0.0.1:0\n"
        "  users:\n"
        f"    - {{name: alice, password_hash: '{h}', role: operator, operator_id: alice,"
        f" operator_key: {keys / 'alice.key'}}}\n"
        f"    - {{name: victor, password_hash: '{h}', role: viewer, language: zh}}\n"
        f"{extra}"
    )
    path = tmp / "console.yaml"
    path.write_text(text)
    (tmp / "keys").mkdir(exist_ok=True)
    return path


__all__ = [
    "PASSWORD",
    "StoreWriter",
    "body",
    "console_yaml",
    "event_entries",
    "reading",
    "register",
]
