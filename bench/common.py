"""Shared helpers for the benchmarks: process CPU/RSS sampling, a paho counter, configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Counter:
    """Counts readings of data batches arriving on a topic filter (paho, own thread)."""

    def __init__(self, port: int, topic: str) -> None:
        self.readings = 0
        self.batches = 0
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-counter")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()

    def _on_message(self, client: object, userdata: object, msg: mqtt.MQTTMessage) -> None:
        cut = msg.payload.rfind(b"\n")
        doc = json.loads(msg.payload if cut < 0 else msg.payload[:cut])
        # a signed batch (body, newline, signature), or the plain loop's bare list
        n = len(doc) if isinstance(doc, list) else len(doc.get("readings", ()))
        with self.lock:
            self.readings += n
            self.batches += 1

    def snapshot(self) -> tuple[int, int]:
        with self.lock:
            return self.readings, self.batches

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def device_yaml(n_devices: int, n_points: int, port: int, poll: str, timeout: str) -> str:
    """Modbus TCP devices (one unit each behind one simulated port), float32 points."""
    out = []
    for d in range(1, n_devices + 1):
        pts = "\n".join(
            f"      - {{id: p{i}, table: holding, address: {2 * i}, type: float32, unit: bar,"
            f" sim: {{kind: sine, amplitude: 1, period: 10, mean: {d}}}}}"
            for i in range(n_points)
        )
        out.append(
            f"  - id: dev{d}\n    driver: modbus_tcp\n    host: 127.0.0.1\n    port: {port}\n"
            f"    unit: {d}\n    poll: {poll}\n    timeout: {timeout}\n    points:\n{pts}\n"
        )
    return "devices:\n" + "".join(out)


def start_sim(config: Path) -> tuple[subprocess.Popen[str], int]:
    """`metrogate sim --free-ports` in its own process; returns it and its port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "sim", "-c", str(config), "--free-ports"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    port = int(line.split()[1].rsplit(":", 1)[1])
    return proc, port


def stop(proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
