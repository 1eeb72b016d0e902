"""End-to-end throughput: simulator → gateway → Mosquitto → subscriber.

Each of the three runs in its own process (the subscriber is this one). Reported:
readings/s received, gateway CPU seconds per 1,000 readings and share of a core,
peak RSS, requests per poll cycle. Then the limits to compare against: a bare
pymodbus client loop on the same register map, and a bare paho QoS 1 publish loop
of batches of the same size. Finally the gateway's RSS with 100 devices × 50 points.

    python bench/bench_e2e.py [--seconds 20] [--devices 10] [--points 100] [--poll 10ms]
    python bench/bench_e2e.py --only-memory [--memory-devices 100] [--memory-points 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    REPO,
    Counter,
    cpu_seconds,
    device_yaml,
    rss_mb,
    start_sim,
    stop,
)

from tests.eventually import eventually_blocking
from tests.services import Mosquitto


def gateway_run(
    tmp: Path, broker: Mosquitto, devices: int, points: int, poll: str, seconds: float
) -> dict[str, float]:
    tmp.mkdir(parents=True, exist_ok=True)
    timeout = f"{_seconds(poll) * 800:.0f}ms"
    sim_cfg = tmp / "sim.yaml"
    sim_cfg.write_text(
        "gateway: {id: bench, site: lab}\n" + device_yaml(devices, points, 502, poll, timeout)
    )
    sim, port = start_sim(sim_cfg)
    try:
        cfg = tmp / "gateway.yaml"
        cfg.write_text(
            f"gateway: {{id: bench, site: lab, state_dir: {tmp / 'state'}}}\n"
            f"mqtt: {{url: 'mqtt://127.0.0.1:{broker.port}', inflight: 50}}\n"
            + device_yaml(devices, points, port, poll, timeout)
        )
        plan = subprocess.run(
            [sys.executable, "-m", "gateway", "plan", "-c", str(cfg)],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=True,
        ).stdout
        requests = int(plan.strip().splitlines()[-1].split()[1])
        counter = Counter(broker.port, "metrogate/v1/lab/bench/data")
        gw = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(cfg), "--log-level", "warning"],
            cwd=REPO,
        )
        try:
            eventually_blocking(lambda: counter.snapshot()[0] > 0, "first readings", within=30)
            time.sleep(2)  # warm up
            r0, b0 = counter.snapshot()
            c0, s0, t0 = cpu_seconds(gw.pid), cpu_seconds(sim.pid), time.monotonic()
            time.sleep(seconds)
            r1, b1 = counter.snapshot()
            c1, s1, t1 = cpu_seconds(gw.pid), cpu_seconds(sim.pid), time.monotonic()
            peak = rss_mb(gw.pid, "VmHWM")
            steady = rss_mb(gw.pid, "VmRSS")
        finally:
            stop(gw)
            counter.close()
    finally:
        stop(sim)
    readings = r1 - r0
    dt = t1 - t0
    return {
        "readings_per_s": readings / dt,
        "batches_per_s": (b1 - b0) / dt,
        "gateway_cpu_per_1000": (c1 - c0) / readings * 1000 if readings else float("nan"),
        "gateway_core_share": (c1 - c0) / dt,
        "sim_core_share": (s1 - s0) / dt,
        "peak_rss_mb": peak,
        "rss_mb_at_end": steady,
        "requests_per_cycle": requests,
        "scheduled_readings_per_s": devices * points / _seconds(poll),
    }


def _seconds(poll: str) -> float:
    return float(poll[:-2]) / 1000 if poll.endswith("ms") else float(poll.rstrip("s"))


def bare_pymodbus(tmp: Path, devices: int, points: int, seconds: float) -> dict[str, float]:
    """pymodbus clients (one connection per device) reading the same blocks back to back."""
    sim_cfg = tmp / "sim-bare.yaml"
    sim_cfg.write_text(
        "gateway: {id: bench, site: lab}\n" + device_yaml(devices, points, 502, "1s", "200ms")
    )
    sim, port = start_sim(sim_cfg)
    script = f"""
import asyncio, time, os
from pymodbus.client import AsyncModbusTcpClient
async def one(unit, stop, counts):
    c = AsyncModbusTcpClient("127.0.0.1", port={port}, retries=0)
    await c.connect()
    regs = {2 * points}
    while time.monotonic() < stop:
        a = 0
        while a < regs:
            n = min(124, regs - a)
            await c.read_holding_registers(a, count=n, device_id=unit)
            a += n
        counts[unit] += {points}
    c.close()
async def main():
    counts = {{u: 0 for u in range(1, {devices} + 1)}}
    t0 = time.monotonic(); c0 = os.times()
    await asyncio.gather(*(one(u, t0 + {seconds}, counts) for u in counts))
    c1 = os.times(); dt = time.monotonic() - t0
    n = sum(counts.values())
    print(n / dt, (c1.user - c0.user + c1.system - c0.system) / n * 1000)
asyncio.run(main())
"""
    try:
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        )
    finally:
        stop(sim)
    rate, cpu = map(float, out.stdout.split())
    return {"readings_per_s": rate, "client_cpu_per_1000": cpu}


def bare_paho(broker: Mosquitto, points: int, seconds: float) -> dict[str, float]:
    """paho QoS 1 publishing ready batches of ``points`` readings, 50 in flight."""
    reading = {
        "ts": 1795847523123456,
        "device": "dev1",
        "point": "p0",
        "value": 1.2345678,
        "raw": 1.2345678,
        "unit": "bar",
        "quality": "good",
    }
    body = json.dumps({"v": 1, "readings": [reading] * points}, separators=(",", ":"))
    script = f"""
import time, os, threading
import paho.mqtt.client as mqtt
payload = {body!r}.encode() + b"\\n" + b"x" * 120
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
c.max_inflight_messages_set(50)
window = threading.Semaphore(50)
c.on_publish = lambda *a: window.release()
c.connect("127.0.0.1", {broker.port}); c.loop_start()
n = 0; t0 = time.monotonic(); c0 = os.times()
while time.monotonic() < t0 + {seconds}:
    window.acquire(); c.publish("bench/bare", payload, qos=1); n += 1
c1 = os.times(); dt = time.monotonic() - t0
c.loop_stop()
print(n * {points} / dt, (c1.user - c0.user + c1.system - c0.system) / (n * {points}) * 1000)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    rate, cpu = map(float, out.stdout.split())
    return {"readings_per_s": rate, "publisher_cpu_per_1000": cpu}


def plain_loop(
    tmp: Path, broker: Mosquitto, devices: int, points: int, poll: str, seconds: float
) -> dict[str, float]:
    """bench/plain_loop.py against the same simulated devices and schedule."""
    sim_cfg = tmp / "sim-plain.yaml"
    sim_cfg.write_text(
        "gateway: {id: bench, site: lab}\n" + device_yaml(devices, points, 502, "1s", "200ms")
    )
    sim, port = start_sim(sim_cfg)
    args = [str(a) for a in (port, devices, points, _seconds(poll), seconds, broker.port)]
    try:
        out = subprocess.run(
            [sys.executable, str(REPO / "bench" / "plain_loop.py"), *args],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        stop(sim)
    rate, cpu = map(float, out.stdout.split())
    return {"readings_per_s": rate, "cpu_per_1000": cpu}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--devices", type=int, default=10)
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--poll", default="10ms")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--only-memory", action="store_true")
    ap.add_argument("--memory-devices", type=int, default=100)
    ap.add_argument("--memory-points", type=int, default=50)
    args = ap.parse_args()
    if args.only_memory:
        with tempfile.TemporaryDirectory() as d, Mosquitto(Path(d) / "mosquitto") as broker:
            memory_run(Path(d), broker, args.memory_devices, args.memory_points)
        return
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        with Mosquitto(tmp / "mosquitto") as broker:
            e2e = gateway_run(
                tmp / "e2e", broker, args.devices, args.points, args.poll, args.seconds
            )
            print("gateway end to end:", json.dumps(e2e, indent=1), flush=True)
            plain = plain_loop(tmp, broker, args.devices, args.points, args.poll, args.seconds)
            print("plain pymodbus+paho loop, same schedule:", json.dumps(plain), flush=True)
            print(f"gateway / plain loop = {e2e['readings_per_s'] / plain['readings_per_s']:.2f}")
            modbus = bare_pymodbus(tmp, args.devices, args.points, args.seconds)
            print("bare pymodbus loop:", json.dumps(modbus), flush=True)
            paho = bare_paho(broker, args.points, args.seconds)
            print("bare paho QoS 1 loop:", json.dumps(paho), flush=True)
            limit = min(modbus["readings_per_s"], paho["readings_per_s"])
            print(f"gateway / min(bare limits) = {e2e['readings_per_s'] / limit:.2f}", flush=True)
            if not args.skip_memory:
                memory_run(tmp, broker, args.memory_devices, args.memory_points)


def memory_run(tmp: Path, broker: Mosquitto, devices: int, points: int) -> None:
    """The gateway's RSS (``VmHWM`` peak, ``VmRSS`` at the end) polling every 1 s for 15 s."""
    mem = gateway_run(tmp / "mem", broker, devices, points, "1s", 15)
    print(f"{devices} devices x {points} points at 1 s:", json.dumps(mem, indent=1), flush=True)


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
