"""``metrogate demo`` as a user runs it: a subprocess with the embedded broker, the real
ingest and the SQLite store; its summary and its live view come from the store."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.db_services import InfluxDB1
from tests.eventually import eventually_blocking

ROOT = Path(__file__).resolve().parents[2]
SUMMARY = re.compile(
    r"demo summary: (\d+) readings, (\d+) batches, .* stored in (\S+); "
    r"(\d+) messages verified, (\d+) rejected"
)


def demo(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", "--state-dir", str(tmp_path / "state"), *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def finished(proc: subprocess.Popen[str], timeout: float = 90) -> tuple[str, str]:
    """The demo's output once it ended by itself; killed (and the test failed) if it
    did not within ``timeout`` — never left running to disturb the tests after it."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"the demo did not end within {timeout} s: {err[-2000:]}") from None


def stored_readings(path: Path) -> int:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT count(*) FROM readings").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_demo_runs_for_a_duration_and_summarises_the_store(tmp_path: Path) -> None:
    proc = demo(tmp_path, "--duration", "12", "--no-view")
    out, err = finished(proc)
    assert proc.returncode == 0, out + err
    m = SUMMARY.search(out)
    assert m, out
    readings, batches, store, verified, rejected = m.groups()
    assert int(readings) > 0 and int(batches) > 0 and int(rejected) == 0, out
    assert int(verified) >= int(batches)
    # the summary's numbers are what the store really holds
    assert Path(store) == tmp_path / "state" / "demo-store.sqlite"
    assert stored_readings(Path(store)) == int(readings)


def test_demo_with_the_live_view_ends_cleanly_after_its_duration(tmp_path: Path) -> None:
    proc = demo(tmp_path, "--duration", "5")  # the view, drawn into a pipe
    out, err = finished(proc)
    assert proc.returncode == 0, out[-2000:] + err
    assert "Traceback" not in err, err
    assert out.count("\x1b[H\x1b[2J") >= 2 and "completeness:" in out  # frames were drawn
    m = SUMMARY.search(out)
    assert m and int(m.group(1)) > 0 and int(m.group(5)) == 0, out[-2000:]


def test_ctrl_c_stops_the_demo_promptly_and_cleanly(tmp_path: Path) -> None:
    store = tmp_path / "state" / "demo-store.sqlite"
    proc = demo(tmp_path)  # with the live view
    assert proc.stdout is not None
    frames: list[str] = []
    reader = threading.Thread(target=lambda: frames.extend(proc.stdout or []), daemon=True)
    reader.start()

    def stored() -> bool:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        return stored_readings(store) >= 20

    try:
        eventually_blocking(stored, "readings in the demo's store", within=60, interval=0.2)
        # a frame drawn after the store filled shows the store's content
        mark = len(frames)
        eventually_blocking(
            lambda: any("store holds" in f and "store holds 0 " not in f for f in frames[mark:]),
            "a frame that shows the store's content",
            within=30,
            interval=0.2,
        )
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        rc = proc.wait(timeout=20)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    reader.join(10)
    text = "".join(frames)
    assert rc == 0, text[-2000:]
    assert took < 10, f"Ctrl-C took {took:.1f} s"
    m = SUMMARY.search(text)
    assert m and int(m.group(1)) > 0 and int(m.group(5)) == 0, text[-2000:]
    assert "quality" in text and "completeness:" in text
    # the last frame shows what the store held then: its count and its points
    with sqlite3.connect(store) as db:
        points = {p for (p,) in db.execute("SELECT DISTINCT point FROM readings")}
        total = int(db.execute("SELECT count(*) FROM readings").fetchone()[0])
    last_frame = text.rsplit("\x1b[H\x1b[2J", 1)[-1]
    held = re.search(r"store holds (\d+) readings", last_frame)
    assert held and 0 < int(held.group(1)) <= total, last_frame
    assert len({p for p in points if p in last_frame}) >= 3, last_frame


def test_demo_writes_to_influxdb_when_asked(tmp_path: Path) -> None:
    influx = InfluxDB1(tmp_path / "influxdb")
    influx.start()
    try:
        url = f"{influx.url}/demo"
        proc = demo(tmp_path, "--duration", "8", "--no-view", "--influx", url)
        out, err = finished(proc)
        assert proc.returncode == 0, out + err
        m = SUMMARY.search(out)
        assert m and m.group(3) == url, out
        assert influx.scalar("SELECT count(quality) FROM reading", "demo") == int(m.group(1)) > 0
        assert not (tmp_path / "state" / "demo-store.sqlite").exists()
    finally:
        influx.close()


def test_demo_serves_the_console_over_its_store(tmp_path: Path) -> None:
    import http.cookiejar
    import urllib.parse
    import urllib.request

    proc = demo(tmp_path, "--duration", "25", "--no-view")
    assert proc.stdout is not None
    line = ""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "console:" not in line:
        line = proc.stdout.readline()
        assert line or proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    try:
        m = re.search(r"console: (http://127\.0\.0\.1:\d+/) \(user (\w+), password (\S+)\)", line)
        assert m, line
        url, user, password = m.groups()
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        page = opener.open(url + "login", timeout=10).read().decode()
        token = re.search(r'name="csrf" value="([^"]+)"', page)
        assert token
        form = urllib.parse.urlencode(
            {"csrf": token.group(1), "user": user, "password": password}
        ).encode()
        fleet = opener.open(url + "login", data=form, timeout=10).read().decode()
        assert 'data-gateway="demo-gw"' in fleet
        while stored_readings(tmp_path / "state" / "demo-store.sqlite") < 10:
            assert time.monotonic() < deadline + 30, "no readings stored"
            time.sleep(0.2)
        point = opener.open(url + "point/demo-gw/oven-1/temperature?range=1h", timeout=10)
        body = point.read().decode()
        assert '"lower":175' in body and '"upper":185' in body  # limits from the demo config
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
