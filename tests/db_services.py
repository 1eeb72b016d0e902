"""Real database processes for integration tests (the broker is tests/services.py).

Each class starts its server on a free 127.0.0.1 port in a temporary directory,
waits for readiness by polling with a bounded deadline, and can ``stop()`` and
``restart()`` it on the same port with the same data to inject faults. ``close()``
always kills the process.
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

from tests.eventually import eventually_blocking
from tests.services import free_port

INFLUXD = "/usr/bin/influxd"
VICTORIA = "/usr/bin/victoria-metrics"
MOSQUITTO = "/usr/sbin/mosquitto"


def http_ok(port: int, path: str) -> bool:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        c.request("GET", path)
        ok = 200 <= c.getresponse().status < 300
        c.close()
        return ok
    except OSError:
        return False


class _Service:
    """A server process with stop/restart; subclasses give the command and readiness."""

    name = "service"

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = (self.dir / "server.log").open("ab")

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> None:
        assert self.proc is None, f"{self.name} already running"
        self.proc = subprocess.Popen(
            self.command(), stdout=self._log, stderr=subprocess.STDOUT, cwd=self.dir
        )

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                log = (self.dir / "server.log").read_text(errors="replace")[-2000:]
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{log}")
            return self.ready()

        eventually_blocking(up, f"{self.name} on port {self.port}", within=timeout, interval=0.05)

    def stop(self) -> None:
        """Kill the server (SIGKILL: a crash, not a shutdown) and wait for it."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        self._log.close()


class InfluxDB1(_Service):
    """Debian's influxd 1.x: v1 ``/write`` and InfluxQL ``/query``."""

    name = "influxd"

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.rpc_port = free_port()
        cfg = f"""
reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"
[meta]
  dir = "{tmp}/meta"
[data]
  dir = "{tmp}/data"
  wal-dir = "{tmp}/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{self.port}"
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
"""
        (tmp / "influxdb.conf").write_text(cfg)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [INFLUXD, "-config", str(self.dir / "influxdb.conf")]

    def ready(self) -> bool:
        return http_ok(self.port, "/ping")

    def query(self, q: str, db: str | None = None) -> dict[str, Any]:
        params = {"q": q, "epoch": "ns"} | ({"db": db} if db else {})
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        c.request(
            "POST",
            "/query",
            urllib.parse.urlencode(params),
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        r = c.getresponse()
        body = r.read()
        c.close()
        assert r.status == 200, body
        doc: dict[str, Any] = json.loads(body)
        return doc

    def scalar(self, q: str, db: str) -> Any:
        """The first value of the first row of a query, or 0 when there is none."""
        res = self.query(q, db)["results"][0]
        assert "error" not in res, res
        series = res.get("series")
        return series[0]["values"][0][1] if series else 0


class VictoriaMetrics(_Service):
    """victoria-metrics: accepts the v2 write API at /api/v2/write."""

    name = "victoria-metrics"

    def command(self) -> list[str]:
        return [
            VICTORIA,
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.dir / 'data'}",
            "-search.latencyOffset=0s",
            "-loggerLevel=ERROR",
            "-retentionPeriod=100y",  # test data is stamped in the past
        ]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        return http_ok(self.port, "/health")

    def export(self, match: str) -> list[dict[str, Any]]:
        """Every series matching ``match`` from /api/v1/export (after a flush)."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        c.request("GET", "/internal/force_flush")
        c.getresponse().read()
        q = urllib.parse.urlencode({"match[]": match, "start": "0"})
        c.request("GET", f"/api/v1/export?{q}")
        r = c.getresponse()
        body = r.read()
        c.close()
        assert r.status == 200, body
        return [json.loads(line) for line in body.splitlines() if line.strip()]


def have(binary: str) -> bool:
    return shutil.which(binary) is not None
