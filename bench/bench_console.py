"""Console: time to first chart over 30 days × 100 points in InfluxDB 1.x, and memory.

Fills a fresh InfluxDB 1.x with ``--points`` points (default 100) of one reading per
``--interval`` seconds (default 60) over ``--days`` days (default 30), written as the
ingest writes them; starts ``metrogate console`` as its own process; then, in headless
Chromium, logs in and opens point pages over 30 days, measuring from navigation to
the chart being drawn (``html[data-charts=drawn]``), and separately the server's time
for the page (the InfluxQL queries with their downsampling). Reports the console's
resident memory at start, after the first chart and after every point's page.
Run from the repo root: ``python bench/bench_console.py [--points 100 --days 30]``.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import rss_mb
from tests.console_support import PASSWORD, password_hash
from tests.db_services import InfluxDB1
from tests.services import free_port

DB = "bench"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


def fill(port: int, points: int, days: int, interval: int) -> int:
    """Write the readings (line protocol, 20,000 lines a request); returns how many."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", "/query", f"q=CREATE DATABASE {DB}",
                 {"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    conn.getresponse().read()
    end = time.time_ns() // 10**9
    start = end - days * 86400
    rng = random.Random(1)
    n = 0
    lines: list[str] = []

    def flush() -> None:
        conn.request("POST", f"/write?db={DB}&precision=s", "\n".join(lines).encode())
        r = conn.getresponse()
        body = r.read()
        assert r.status == 204, body
        lines.clear()

    for p in range(points):
        series = f"reading,site=plant,gateway=gw1,device=line{p // 10},point=p{p % 10},unit=bar"
        v = 6.0
        for t in range(start, end, interval):
            v += rng.gauss(0, 0.01) - (v - 6.0) * 0.05
            verdict = "pass" if 5.8 < v < 6.2 else "fail"
            lines.append(f'{series} value={v:.5f},quality="good",verdict="{verdict}",seq=1i {t}')
            n += 1
            if len(lines) >= 20_000:
                flush()
    if lines:
        flush()
    conn.close()
    return n


def console_config(tmp: Path, influx_url: str, port: int) -> Path:
    path = tmp / "console.yaml"
    path.write_text(
        "mqtt: {url: 'mqtt://127.0.0.1:1883', client_id: bench-console}\n"
        f"keys_dir: {tmp / 'keys'}\n"
        f"store: {{kind: influxdb_v1, url: '{influx_url}', database: {DB}, timeout: 60s}}\n"
        "console:\n"
        f"  listen: 127.0.0.1:{port}\n"
        "  query_timeout: 60s\n"
        f"  users: [{{name: bench, password_hash: '{password_hash()}', role: viewer}}]\n"
        "  points: [{match: '*', lower: 5.8, upper: 6.2}]\n"
    )
    (tmp / "keys").mkdir(exist_ok=True)
    return path


def server_time(port: int, cookie: str, path: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t0 = time.perf_counter()
    conn.request("GET", path, headers={"Cookie": cookie})
    r = conn.getresponse()
    r.read()
    took = time.perf_counter() - t0
    assert r.status == 200, r.status
    conn.close()
    return took


async def browse(port: int, points: int, pid: int) -> dict[str, object]:
    from playwright.async_api import async_playwright

    out: dict[str, object] = {}
    base = f"http://127.0.0.1:{port}"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        ctx = await browser.new_context(viewport={"width": 1280, "height": 900})
        page = await ctx.new_page()
        await page.goto(f"{base}/login")
        await page.fill("#user", "bench")
        await page.fill("#password", PASSWORD)
        await page.click("#login")
        await page.wait_for_url(f"{base}/fleet")
        cookie = "; ".join(f"{c['name']}={c['value']}" for c in await ctx.cookies())
        first: list[float] = []
        for i in range(points):
            path = f"/point/gw1/line{i // 10}/p{i % 10}?range=30d"
            t0 = time.perf_counter()
            await page.goto(base + path)
            await page.wait_for_selector("html[data-charts=drawn]", timeout=120_000)
            first.append(time.perf_counter() - t0)
            if i == 0:
                out["rss_after_first_chart_mb"] = rss_mb(pid)
                drawn = await page.evaluate(
                    "() => window.metrogateCharts.value.getOption().series[0].data.length"
                )
                out["points_drawn"] = drawn
                out["sampling"] = await page.locator("#sampling").inner_text()
        out["first_chart_s"] = first
        out["rss_after_all_mb"] = rss_mb(pid)
        out["rss_peak_mb"] = rss_mb(pid, "VmHWM")
        ranges = {}
        for rng in ("1h", "24h", "7d", "30d", "90d"):
            times = [server_time(port, cookie, f"/point/gw1/line0/p{k}?range={rng}")
                     for k in range(5)]  # fmt: skip
            ranges[rng] = times
        out["server_s"] = ranges
        out["fleet_s"] = [server_time(port, cookie, "/fleet") for _ in range(3)]
        out["risk_s"] = [server_time(port, cookie, "/risk") for _ in range(2)]
        await browser.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--interval", type=int, default=60, help="seconds between readings")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mg-bench-console-") as d:
        tmp = Path(d)
        influx = InfluxDB1(tmp / "influx")
        influx.start()
        try:
            port = int(influx.url.rsplit(":", 1)[1])
            t0 = time.perf_counter()
            n = fill(port, args.points, args.days, args.interval)
            print(f"stored {n:,} readings ({args.points} points × {args.days} d, "
                  f"one per {args.interval} s) in {time.perf_counter() - t0:.1f} s")  # fmt: skip
            cport = free_port()
            cfg = console_config(tmp, influx.url, cport)
            proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "console", "-c", str(cfg)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])},
            )  # fmt: skip
            try:
                assert proc.stdout is not None
                line = proc.stdout.readline()
                assert "console:" in line or "console on" in line, line
                while "console: http" not in line:
                    line = proc.stdout.readline()
                print(f"console RSS at start: {rss_mb(proc.pid):.1f} MB")
                res = asyncio.run(browse(cport, args.points, proc.pid))
            finally:
                proc.terminate()
                proc.wait(timeout=20)
        finally:
            influx.close()
    first = res["first_chart_s"]
    assert isinstance(first, list)
    print(f"first chart, 30 d, page {res['sampling']} ({res['points_drawn']} points drawn)")
    print(f"time to first chart (navigation → drawn), first page: {first[0]:.2f} s; "
          f"over {len(first)} points: median {statistics.median(first):.2f} s, "
          f"max {max(first):.2f} s")  # fmt: skip
    server = res["server_s"]
    assert isinstance(server, dict)
    for rng, times in server.items():
        print(f"server time for a point page, {rng:>4}: median {statistics.median(times):.3f} s")
    fleet, risk = res["fleet_s"], res["risk_s"]
    assert isinstance(fleet, list) and isinstance(risk, list)
    print(f"fleet page {statistics.median(fleet):.3f} s, risk page (30 d × {args.points} points, "
          f"7 d window) {statistics.median(risk):.3f} s")  # fmt: skip
    print(f"console RSS after the first chart {res['rss_after_first_chart_mb']:.1f} MB, "
          f"after {len(first)} point pages {res['rss_after_all_mb']:.1f} MB, "
          f"peak {res['rss_peak_mb']:.1f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
