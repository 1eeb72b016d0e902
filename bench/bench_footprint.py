"""Footprint of the daemon at rest: idle CPU, RSS and import time.

Run from the repository root: ``PYTHONPATH=. python bench/bench_footprint.py
[--devices 20] [--points 10] [--poll 1s] [--seconds 60]``.

The gateway runs in its own process — the daemon as ``metrogate run`` starts it,
plus the ops endpoint (``gateway.ops.health.gateway_ops_server``) — against a
simulated Modbus TCP line (``metrogate sim``, another process) and a real
Mosquitto, so only the gateway's own CPU is counted. After a warm-up the CPU time
of the gateway process over ``--seconds`` is divided by the wall time: the share
of one core. The target on a Raspberry-Pi-class board is ≤ 1 % of a core with 20
devices polled every second. Also reported: RSS after the run, the CPU one
``/metrics`` scrape costs, and the import time of the daemon's and of
``metrogate status``'s modules (fresh interpreters, best of 5).

Results (x86-64 container, 2 shared cores, Python 3.11, 20 devices × 10 float32
points at 1 s, 60 s measured) are in docs/operations.md ("Footprint").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script too

from bench.common import REPO, cpu_seconds, device_yaml, rss_mb, start_sim, stop


def child(config: str, ops_port: int) -> None:
    """The daemon (Gateway.run + ops endpoint) until SIGTERM."""
    from gateway.acquisition.clock import ClockMonitor, SyncState
    from gateway.cli.app import run_until_signal
    from gateway.config.loader import load_config
    from gateway.daemon import Gateway
    from gateway.ops.health import gateway_ops_server

    loaded = load_config(config)
    # containers often lack NTP; the clock state does not change the work done
    gw = Gateway(loaded, clock_monitor=ClockMonitor(probe=lambda: SyncState.SYNCHRONISED))

    async def main(stop_event: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(gw.run(stop_event), name="gateway")
            async with asyncio.timeout(30):
                await gw.ready.wait()
            async with gateway_ops_server(gw, "127.0.0.1", ops_port):
                print("ready", flush=True)
                await stop_event.wait()
            await task

    run_until_signal(main)


def import_time(code: str, runs: int = 5) -> float:
    """Best wall time of a fresh interpreter running ``code`` (minus an empty one)."""

    def best(c: str) -> float:
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", c], check=True, cwd=REPO)
            times.append(time.perf_counter() - t0)
        return min(times)

    return best(code) - best("pass")


def scrape_cpu(port: int, n: int = 50) -> tuple[float, int]:
    """Mean seconds per /metrics scrape (client side wall, a bound on server CPU), bytes."""
    url = f"http://127.0.0.1:{port}/metrics"
    size = 0
    t0 = time.perf_counter()
    for _ in range(n):
        with urllib.request.urlopen(url, timeout=5) as r:
            size = len(r.read())
    return (time.perf_counter() - t0) / n, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--points", type=int, default=10)
    ap.add_argument("--poll", default="1s")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--child", nargs=2, metavar=("CONFIG", "OPS_PORT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return

    from tests.services import Mosquitto, free_port

    with tempfile.TemporaryDirectory() as tmp_s, Mosquitto(Path(tmp_s) / "mqtt") as broker:
        tmp = Path(tmp_s)
        sim_cfg = tmp / "sim.yaml"
        sim_cfg.write_text(
            "gateway: {id: bench, site: lab}\n"
            + device_yaml(args.devices, args.points, 15020, args.poll, "300ms")
        )
        sim, sim_port = start_sim(sim_cfg)
        cfg = tmp / "gateway.yaml"
        cfg.write_text(
            f"gateway: {{id: bench, site: lab, state_dir: {tmp / 'state'}}}\n"
            f"mqtt: {{url: 'mqtt://127.0.0.1:{broker.port}'}}\n"
            "ops: {enabled: false}\n"  # the child serves the endpoint it measures itself
            + device_yaml(args.devices, args.points, sim_port, args.poll, "300ms")
        )
        ops_port = free_port()
        gw = subprocess.Popen(
            [sys.executable, __file__, "--child", str(cfg), str(ops_port)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        try:
            assert gw.stdout is not None
            assert gw.stdout.readline().strip() == "ready"
            time.sleep(args.warmup)  # first polls, connections, key creation settle
            c0, t0 = cpu_seconds(gw.pid), time.monotonic()
            time.sleep(args.seconds)
            c1, t1 = cpu_seconds(gw.pid), time.monotonic()
            rss = rss_mb(gw.pid)
            hwm = rss_mb(gw.pid, "VmHWM")
            per_scrape, size = scrape_cpu(ops_port)
            health = json.loads(
                urllib.request.urlopen(f"http://127.0.0.1:{ops_port}/health", timeout=5).read()
            )
        finally:
            stop(gw)
            stop(sim)
    polls = sum(d["polls"] for d in health["devices"])
    missed = sum(d["missed"] for d in health["devices"])
    result = {
        "devices": args.devices,
        "points_per_device": args.points,
        "poll": args.poll,
        "measured_s": round(t1 - t0, 1),
        "cpu_percent_of_one_core": round(100 * (c1 - c0) / (t1 - t0), 2),
        "rss_mb": round(rss, 1),
        "rss_peak_mb": round(hwm, 1),
        "polls": polls,
        "missed_slots": missed,
        "scrape_ms": round(per_scrape * 1000, 2),
        "scrape_bytes": size,
        "import_daemon_s": round(import_time("import gateway.daemon, gateway.ops.health"), 3),
        "import_cli_s": round(import_time("import gateway.cli.app"), 3),
        "import_status_s": round(import_time("import gateway.cli.status"), 3),
        "python": sys.version.split()[0],
    }
    print(json.dumps(result, indent=1))
    if result["cpu_percent_of_one_core"] > 1.0:
        print("above the target of 1 % of a core", file=sys.stderr)


if __name__ == "__main__":
    main()
