"""`metrogate run` as a process under a stand-in service manager: READY, watchdog, SIGHUP.

NOTIFY_SOCKET is a real AF_UNIX datagram socket in a temp dir, as systemd provides.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.eventually import eventually_blocking
from tests.services import Mosquitto, free_port
from tests.unit.ops_support import NotifySocket

pytestmark = pytest.mark.services

REPO = Path(__file__).resolve().parents[2]


def health(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            doc: dict[str, Any] = json.loads(r.read())
    except urllib.error.HTTPError as exc:
        doc = json.loads(exc.read())
    return doc


def events(state: Path) -> list[str]:
    log = state / "events.log"
    if not log.exists():
        return []
    return [json.loads(line.split("\t", 1)[0])["type"] for line in log.read_text().splitlines()]


def test_ready_watchdog_and_sighup_reload(mosquitto: Mosquitto, tmp_path: Path) -> None:
    ops_port = free_port()
    state = tmp_path / "state"
    good = (
        f"gateway: {{id: gw1, site: s1, state_dir: {state}}}\n"
        f"mqtt: {{url: 'mqtt://127.0.0.1:{mosquitto.port}'}}\n"
        f"ops: {{listen: '127.0.0.1:{ops_port}'}}\n"
        "devices:\n"
        f"  - id: dead1\n    driver: modbus_tcp\n    host: 127.0.0.1\n    port: {free_port()}\n"
        "    poll: 1s\n    timeout: 100ms\n    points:\n"
        "      - {id: p0, table: holding, address: 0, type: float32, unit: bar}\n"
    )
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(good)
    notify = NotifySocket(tmp_path)
    env = dict(os.environ, NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="1000000")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "-c", str(cfg)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    got: list[str] = []
    try:
        env["WATCHDOG_PID"] = str(proc.pid)

        def received(pred: Callable[[list[str]], bool]) -> Callable[[], bool]:
            def check() -> bool:
                got.extend(notify.messages())
                return pred(got)

            return check

        eventually_blocking(
            received(lambda g: any(m.startswith("READY=1") for m in g)), "READY=1", within=30
        )
        eventually_blocking(
            received(lambda g: g.count("WATCHDOG=1") >= 2), "watchdog pings", within=10
        )
        first = health(ops_port)
        assert first["devices"][0]["id"] == "dead1"

        cfg.write_text(good.replace("poll: 1s", "pol: 1s"))  # invalid
        proc.send_signal(signal.SIGHUP)
        eventually_blocking(
            lambda: "config_reload_refused" in events(state), "refusal recorded", within=10
        )
        assert proc.poll() is None, "a bad config on SIGHUP must not stop the daemon"
        assert health(ops_port)["config"]["sha256"] == first["config"]["sha256"]

        cfg.write_text(good.replace("id: dead1", "id: dead2"))
        proc.send_signal(signal.SIGHUP)
        eventually_blocking(
            lambda: "config_reloaded" in events(state), "reload recorded", within=10
        )
        eventually_blocking(
            lambda: [d["id"] for d in health(ops_port)["devices"]] == ["dead2"],
            "device tasks rebuilt",
            within=10,
        )
        assert health(ops_port)["config"]["sha256"] != first["config"]["sha256"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        notify.close()
    assert proc.returncode == 0, err
    assert "reload refused" in err
