"""The console's web application against a real SQLite store: login, roles, CSRF,
cookies, 404s, a store that is down, and what each view shows."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervision.config import load_config
from supervision.console.app import make_app
from supervision.console.service import Console
from supervision.model import SecurityEvent
from tests.console_support import PASSWORD, StoreWriter, console_yaml, event_entries, reading
from tests.ingest_support import new_signer, register

NOW_US = time.time_ns() // 1000
S = 1_000_000


def sqlite_store(tmp: Path) -> str:
    return f"{{kind: sqlite, path: {tmp / 'store.sqlite'}}}"


def fill(tmp: Path, w: StoreWriter | None = None) -> None:
    """Two sites: north (a scale with an expired certificate, out-of-tolerance readings),
    south (a meter whose tamper counter changed)."""
    w = w or StoreWriter(sqlite=tmp / "store.sqlite")
    sig_n, sig_s = new_signer(), new_signer()
    register(tmp / "keys", "gw-n", sig_n)
    register(tmp / "keys", "gw-s", sig_s)
    t0 = NOW_US - 3600 * S
    w.status("gw-n", "north", "online", t0, "metrogate 0.1.0")
    w.status("gw-s", "south", "offline", t0, "metrogate 0.1.0")
    rows = []
    for i in range(600):
        v = 10.0 + 0.01 * (i % 7)
        extra: dict[str, Any] = {
            "instrument": "WT-1",
            "certificate": "C-1",
            "U": 0.02,
            "k": 2.0,
            "unit": "kg",
            "verdict": "pass",
        }
        if i >= 590:
            v = 12.5  # a jump: out of tolerance, rule 1 on the chart
            extra |= {"verdict": "fail", "flags": ["out_of_tolerance", "calibration_expired"]}
        rows.append(reading(t0 + i * 5 * S, "scale", "mass", v, **extra))
    w.readings("gw-n", "north", rows)
    w.readings(
        "gw-s",
        "south",
        [
            reading(
                t0 + i * 60 * S,
                "meter",
                "energy",
                float(i),
                instrument="EM-1",
                certificate="C-9",
                unit="kWh",
                verdict="pass",
            )
            for i in range(60)
        ],
    )
    w.batch(
        "alarm",
        "gw-n",
        "north",
        [
            {
                "ts": t0 + 2950 * S,
                "alarm": "scale/mass/high",
                "device": "scale",
                "point": "mass",
                "rule": "high",
                "state": "active_unacknowledged",
                "previous": "normal",
                "event": "raised",
                "active": True,
                "acknowledged": False,
                "shelved": False,
                "severity": "high",
                "value": 12.5,
                "limit": 11.0,
                "message": "too heavy",
            }
        ],
        t0 + 2950 * S,
    )
    ev_n = event_entries(
        tmp / "n",
        sig_n,
        [
            (
                "startup",
                {
                    "software": {"name": "metrogate", "version": "0.1.0", "sha256": "ab" * 32},
                    "pid": 1,
                },
                "gateway",
            ),
            (
                "calibration_expired",
                {
                    "instrument": "WT-1",
                    "certificate": "C-1",
                    "lab": "NIM",
                    "valid_until": "2026-01-01",
                    "days_left": -3,
                    "device": "scale",
                },
                "calibration",
            ),
            ("clock_sync", {"old": "unknown", "new": "synchronised"}, "clock"),
            (
                "parameter_changed",
                {
                    "param": "devices.scale.points.mass.spec.upper",
                    "change": "changed",
                    "old": 11.5,
                    "new": 11.0,
                },
                "/etc/gw.yaml",
            ),
        ],
        t0,
    )
    w.batch("event", "gw-n", "north", ev_n, t0 + 10 * S)
    ev_s = event_entries(
        tmp / "s",
        sig_s,
        [
            (
                "startup",
                {
                    "software": {"name": "metrogate", "version": "0.1.0", "sha256": "cd" * 32},
                    "pid": 1,
                },
                "gateway",
            ),
            (
                "tamper_counter",
                {
                    "device": "meter",
                    "counters": {"cover_open_count": 1},
                    "previous": {"cover_open_count": 0},
                },
                "gateway",
            ),
            (
                "tamper_counter",
                {
                    "device": "meter",
                    "counters": {"cover_open_count": 2},
                    "previous": {"cover_open_count": 1},
                },
                "gateway",
            ),
        ],
        t0,
    )
    w.batch("event", "gw-s", "south", ev_s, t0 + 10 * S)

    # what the ingest filed of gw-s: a replay, a forgery (filed again, later, by a restarted
    # worker: one payload), another dead letter, a batch-number reset, an event-log gap
    def forged(received_us: int) -> SecurityEvent:
        topic = "metrogate/v1/south/gw-s/data"
        return SecurityEvent.of_message("gw-s", "bad_signature", "<b>x</b>", topic,
                                        received_us, b"forged")  # fmt: skip

    for ev in (
        SecurityEvent("south", "gw-s", "replay", 3, t0 + 20 * S, "gw-s seq 3 received again"),
        forged(t0 + 30 * S),
        forged(t0 + 40 * S),
        SecurityEvent.of_message("gw-s", "schema", "bad", "t", t0 + 50 * S, b"bad"),
        SecurityEvent("south", "gw-s", "reset", 2, t0 + 60 * S, "went back"),
        SecurityEvent("south", "gw-s", "event_gap", 4, t0 + 70 * S, "4..5 never arrived"),
    ):
        w.security(ev)
    w.close()


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    fill(tmp_path)
    extra = "  points:\n    - {match: 'gw-n/scale/mass', lower: 9.5, upper: 11.0, min_cpk: 1.33}\n"
    cfg = load_config(console_yaml(tmp_path, sqlite_store(tmp_path), extra=extra))
    app = make_app(Console.from_config(cfg))
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF field on the page"
    return m.group(1)


async def login(c: TestClient[Any, Any], user: str = "alice", pw: str = PASSWORD) -> Any:
    page = await (await c.get("/login")).text()
    return await c.post(
        "/login", data={"csrf": csrf_of(page), "user": user, "password": pw}, allow_redirects=False
    )


async def test_every_page_needs_a_login(client: TestClient[Any, Any]) -> None:
    for path in (
        "/",
        "/fleet",
        "/points",
        "/point/gw-n/scale/mass",
        "/instruments",
        "/alarms",
        "/risk",
        "/audit/gw-n",
        "/report",
        "/report/html",
    ):
        r = await client.get(path, allow_redirects=False)
        assert r.status == 303 and r.headers["Location"] == "/login", path
    r = await client.post("/alarms/ack", data={"alarm": "x"}, allow_redirects=False)
    assert r.status == 403
    assert (await client.get("/login")).status == 200


async def test_login_cookies_are_httponly_and_samesite(client: TestClient[Any, Any]) -> None:
    r = await login(client)
    assert r.status == 303 and r.headers["Location"] == "/fleet"
    cookie = next(v for k, v in r.headers.items() if k == "Set-Cookie" and "mg_session=" in v)
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert (await client.get("/fleet")).status == 200


async def test_wrong_password_and_unknown_user_are_refused_alike(
    client: TestClient[Any, Any],
) -> None:
    for user, pw in (("alice", "wrong"), ("nobody", PASSWORD)):
        r = await login(client, user, pw)
        assert r.status == 401
        assert "Unknown user or wrong password." in await r.text()
    assert (await client.get("/fleet", allow_redirects=False)).status == 303


async def test_forms_without_the_csrf_token_or_from_elsewhere_are_refused(
    client: TestClient[Any, Any],
) -> None:
    page = await (await client.get("/login")).text()
    r = await client.post("/login", data={"user": "alice", "password": PASSWORD})
    assert r.status == 403 and 'id="csrf-error"' in await r.text()
    r = await client.post(
        "/login",
        data={"csrf": csrf_of(page), "user": "alice", "password": PASSWORD},
        headers={"Origin": "http://evil.example"},
    )
    assert r.status == 403
    await login(client)
    fleet = await (await client.get("/fleet")).text()
    token = csrf_of(fleet)
    form = {"gateway": "gw-n", "site": "north", "alarm": "scale/mass/high"}
    r = await client.post("/alarms/ack", data=form, allow_redirects=False)
    assert r.status == 403
    r = await client.post("/alarms/ack", data=form | {"csrf": "x" * 43}, allow_redirects=False)
    assert r.status == 403
    r = await client.post(
        "/logout",
        data={"csrf": token},
        allow_redirects=False,
        headers={"Origin": "http://evil.example"},
    )
    assert r.status == 403
    assert (await client.get("/fleet")).status == 200  # still logged in
    r = await client.post("/logout", data={"csrf": token}, allow_redirects=False)
    assert r.status == 303
    assert (await client.get("/fleet", allow_redirects=False)).status == 303


async def test_oversize_and_garbage_form_posts_are_refused_without_a_trace(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A body above the console's 64 KiB limit, bytes that are no form, a form field
    repeated or huge: each is a refusal page (4xx), nothing logged as a failure, and the
    console goes on serving."""
    page = await (await client.get("/login")).text()
    token = csrf_of(page)
    big = {"csrf": token, "user": "alice", "password": "x" * 100_000}
    r = await client.post("/login", data=big)
    assert r.status == 413 and "Traceback" not in await r.text()
    for body, ctype in (
        (b"\xff\xfe\x00garbage=%%%&&==", "application/x-www-form-urlencoded"),
        (b"--nope\r\n\r\n\x00\x01", "multipart/form-data; boundary=nope"),
        (b'{"user": "alice"}', "application/json"),
        (
            f"csrf={token}&csrf=x&user=alice&password=y".encode(),
            "application/x-www-form-urlencoded",
        ),
    ):
        r = await client.post("/login", data=body, headers={"Content-Type": ctype})
        assert 400 <= r.status < 500, (body, r.status)
        assert "Traceback" not in await r.text()
    await login(client)
    fleet = await (await client.get("/fleet")).text()
    form = {"csrf": csrf_of(fleet), "gateway": "gw-n" * 5000, "site": "north",
            "alarm": "scale/mass/high\x00<script>"}  # fmt: skip
    r = await client.post("/alarms/ack", data=form, allow_redirects=False)
    assert 400 <= r.status < 500 and "<script>" not in await r.text()
    assert not [rec for rec in caplog.records if rec.levelname in ("ERROR", "CRITICAL")]
    assert (await client.get("/fleet")).status == 200


async def test_a_viewer_cannot_acknowledge(client: TestClient[Any, Any]) -> None:
    await login(client, "victor")
    page = await (await client.get("/alarms")).text()
    assert 'id="viewer-note"' in page and 'class="ack"' not in page
    r = await client.post(
        "/alarms/ack",
        data={
            "csrf": csrf_of(page),
            "gateway": "gw-n",
            "site": "north",
            "alarm": "scale/mass/high",
        },
    )
    assert r.status == 403
    assert "您的角色不允许执行此操作" in await r.text()  # victor reads Chinese


async def test_unknown_point_gateway_or_page_is_a_404_page(client: TestClient[Any, Any]) -> None:
    await login(client)
    for path in (
        "/point/gw-n/scale/nope",
        "/point/nope/x/y",
        "/audit/nope",
        "/nope",
        "/alarm/gw-n/no/such/alarm",
        "/point/gw-n/scale/%3Cscript%3E",
    ):
        r = await client.get(path)
        text = await r.text()
        assert r.status == 404, path
        assert "<h1>Not found</h1>" in text and "Traceback" not in text
        assert "<script>" not in text.split("</header>", 1)[-1].replace(
            '<script src="/static/console.js"></script>', ""
        )


async def test_fleet_shows_state_completeness_software_key_and_clock(
    client: TestClient[Any, Any],
) -> None:
    await login(client)
    html = await (await client.get("/fleet")).text()
    row = html.split('data-gateway="gw-n"', 1)[1].split("</tr>", 1)[0]
    assert 'data-state="online"' in html.split("<tr", 2)[2] or "online" in row
    assert "100.00 %" in row and "metrogate 0.1.0 sha256:abababababab" in row
    assert "synchronised" in row and 'href="/audit/gw-n"' in row
    s_row = html.split('data-gateway="gw-s"', 1)[1].split("</tr>", 1)[0]
    assert "offline" in s_row
    # replays / forgeries / dead letters, then counter resets / event-log gaps
    assert "<td>1 / 1 / 1</td><td>1 / 1</td>" in s_row and "<td>0 / 0 / 0</td>" in row


async def test_instruments_view_lists_the_expired_certificate_and_filters(
    client: TestClient[Any, Any],
) -> None:
    await login(client)
    html = await (await client.get("/instruments")).text()
    row = html.split('data-instrument="WT-1"', 1)[1].split("</tr>", 1)[0]
    assert 'data-status="expired"' in html and "expired" in row and "NIM" in row
    assert "C-1" in row and "2026-01-01" in row
    only = await (await client.get("/instruments?status=valid")).text()
    assert 'data-instrument="WT-1"' not in only and 'data-instrument="EM-1"' in only
    found = await (await client.get("/instruments?q=em-")).text()
    assert 'data-instrument="EM-1"' in found and 'data-instrument="WT-1"' not in found


async def test_point_view_charts_limits_verdicts_and_rule_1(client: TestClient[Any, Any]) -> None:
    await login(client)
    html = await (await client.get("/point/gw-n/scale/mass?range=24h")).text()
    data = re.search(r'<script type="application/json" id="point-data">(.*?)</script>', html)
    assert data
    import json

    d = json.loads(data.group(1))
    assert d["raw"] and len(d["samples"]) == 600 and d["lower"] == 9.5 and d["upper"] == 11.0
    assert d["U"] == 0.02 and d["k"] == 2.0
    assert len([m for m in d["markers"] if m[2] == "fail"]) == 10
    assert any(1 in v[2] for v in d["chart"]["violations"])
    assert 'id="violations"' in html and "rule 1" in html
    assert "fail: 10" in html and "pass: 590" in html
    assert '<script src="/static/vendor/echarts.min.js"></script>' in html


async def test_long_ranges_are_downsampled_in_the_query(tmp_path: Path) -> None:
    w = StoreWriter(sqlite=tmp_path / "store.sqlite")
    t0 = NOW_US - 89 * 86400 * S
    w.readings(
        "g", "s", (reading(t0 + i * 60 * S, "d", "p", float(i % 100)) for i in range(89 * 24 * 60))
    )
    w.close()
    cfg = load_config(
        console_yaml(tmp_path, f"{{kind: sqlite, path: {tmp_path / 'store.sqlite'}}}")
    )
    console = Console.from_config(cfg)
    end = time.time_ns()
    series = console.reader.series("g", "d", "p", end - 90 * 86400 * 10**9, end, 1500)
    assert not series.raw and series.total == 89 * 24 * 60
    assert len(series.samples) <= 1500 and series.bucket_s == 7200
    assert sum(s.n for s in series.samples) == series.total
    app = make_app(console)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        await login(c)
        r = await c.get("/point/g/d/p?range=90d")
        html = await r.text()
        assert r.status == 200 and 'data-bucket="7200"' in html
        assert len(html) < 400_000  # buckets, not 128,160 readings


async def test_a_store_that_is_down_says_so_and_retries(tmp_path: Path) -> None:
    cfg = load_config(
        console_yaml(
            tmp_path,
            "{kind: influxdb_v1, url: 'http://127.0.0.1:9', database: nowhere, timeout: 2s}",
        )
    )
    async with TestClient(TestServer(make_app(Console.from_config(cfg)), host="127.0.0.1")) as c:
        await login(c)
        for path in ("/fleet", "/instruments", "/risk", "/point/a/b/c"):
            r = await c.get(path)
            text = await r.text()
            assert r.status == 503, path
            assert 'id="store-down"' in text and '<meta http-equiv="refresh" content="10">' in text
            assert "Traceback" not in text


async def test_risk_ranks_the_site_with_the_tampered_meter_and_explains(
    client: TestClient[Any, Any],
) -> None:
    await login(client)
    html = await (await client.get("/risk")).text()
    rows = re.findall(r'<tr data-kind="(\w+)" data-name="([^"]+)" data-score="([\d.]+)"', html)
    assert rows[0][:2] == ("site", "south"), rows
    south = html.split('data-name="south"', 1)[1].split("</tr>", 1)[0]
    assert 'data-indicator="tamper"' in south and "/audit/gw-s?type=tamper_counter" in south
    assert 'data-indicator="security"' in south and 'data-indicator="log_gaps"' in south
    assert "gw-s: seq ↺2; gw-s: log 4…" in south
    north = html.split('data-name="north"', 1)[1].split("</tr>", 1)[0]
    for key in ("out_of_tolerance", "calibration_expired"):
        assert f'data-indicator="{key}"' in north


async def test_audit_view_verifies_entries_and_shows_tampering(tmp_path: Path) -> None:
    fill(tmp_path)
    import sqlite3

    db = sqlite3.connect(tmp_path / "store.sqlite")
    db.execute(
        "UPDATE items SET fields = json_set(fields, '$.data', "
        "replace(json_extract(fields, '$.data'), '\"cover_open_count\":2', "
        "'\"cover_open_count\":1')) WHERE gateway = 'gw-s' AND json_extract(fields, '$.n') = 3"
    )
    db.commit()
    db.close()
    cfg = load_config(
        console_yaml(tmp_path, f"{{kind: sqlite, path: {tmp_path / 'store.sqlite'}}}")
    )
    async with TestClient(TestServer(make_app(Console.from_config(cfg)), host="127.0.0.1")) as c:
        await login(c)
        good = await (await c.get("/audit/gw-n")).text()
        assert good.count('data-check="ok"') == 4 and "4 entries received; 4 verified" in good
        assert "<b>devices.scale.points.mass.spec.upper</b>: 11.5 → 11.0" in good
        bad = await (await c.get("/audit/gw-s")).text()
        assert '<tr data-n="3" data-type="tamper_counter" data-check="bad_signature">' in bad
        assert '<tr data-n="2" data-type="tamper_counter" data-check="ok">' in bad


async def test_language_per_user_and_switch(client: TestClient[Any, Any]) -> None:
    await login(client, "victor")
    html = await (await client.get("/fleet")).text()
    assert '<html lang="zh-CN">' in html and "网关总览" in html
    r = await client.post(
        "/language",
        data={"csrf": csrf_of(html)},
        headers={"Referer": f"{client.make_url('/instruments')}"},
    )
    assert r.status == 200 and '<html lang="en">' in await r.text()


async def test_html_report_is_self_contained(client: TestClient[Any, Any]) -> None:
    await login(client)
    html = await (await client.get("/report/html?range=24h&site=north")).text()
    assert html.startswith("<!doctype html>") and "<svg" in html
    assert "gw-n/scale/mass" in html and "gw-s" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html) and "<script" not in html


async def test_language_switch_never_redirects_to_another_host(
    client: TestClient[Any, Any],
) -> None:
    await login(client)
    token = csrf_of(await (await client.get("/fleet")).text())
    for referer in ("//evil.example/x", "https://evil.example/x"):
        r = await client.post(
            "/language", data={"csrf": token}, allow_redirects=False, headers={"Referer": referer}
        )
        assert r.status in (303, 403)
        if r.status == 303:
            assert r.headers["Location"] in ("/fleet", "/x")


def test_report_command_writes_the_html_file(tmp_path: Path) -> None:
    from gateway.cli.app import main

    fill(tmp_path)
    cfg = console_yaml(tmp_path, sqlite_store(tmp_path))
    out = tmp_path / "report.html"
    code = main(
        [
            "report",
            "-c",
            str(cfg),
            "--since",
            "1d",
            "--html",
            str(out),
            "--site",
            "south",
            "--language",
            "zh",
        ]
    )
    html = out.read_text()
    assert code == 0 and '<html lang="zh-CN">' in html and "质量监督报告" in html
    assert "gw-s/meter/energy" in html and "gw-n" not in html


def test_hash_password_reads_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    from argon2 import PasswordHasher

    from gateway.cli.app import main

    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret\n"))
    assert main(["console", "--hash-password"]) == 0
    hashed = capsys.readouterr().out.strip()
    assert hashed.startswith("$argon2id$") and PasswordHasher().verify(hashed, "s3cret")


def test_console_refuses_a_config_without_users(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli.app import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"mqtt: {{client_id: c}}\nkeys_dir: {tmp_path}\nstore: {sqlite_store(tmp_path)}\n"
    )
    assert main(["console", "-c", str(cfg)]) == 2
    assert "console.users is empty" in capsys.readouterr().err


async def test_stored_text_is_escaped_everywhere(tmp_path: Path) -> None:
    w = StoreWriter(sqlite=tmp_path / "store.sqlite")
    t0 = NOW_US - 60 * S
    evil = '<img src=x onerror="alert(1)">'
    w.readings("gw-x", "site-x", [reading(t0, "dev", "pt", 1.0)])
    w.batch(
        "alarm",
        "gw-x",
        "site-x",
        [
            {
                "ts": t0,
                "alarm": "dev/pt/high",
                "device": "dev",
                "point": "pt",
                "rule": "high",
                "state": "active_unacknowledged",
                "previous": "normal",
                "event": "raised",
                "active": True,
                "acknowledged": False,
                "shelved": False,
                "severity": "critical",
                "value": 1.0,
                "limit": 0.5,
                "message": evil,
            }
        ],
        t0,
    )
    w.close()
    cfg = load_config(console_yaml(tmp_path, sqlite_store(tmp_path)))
    async with TestClient(TestServer(make_app(Console.from_config(cfg)), host="127.0.0.1")) as c:
        await login(c, "victor")
        html = await (await c.get("/alarms")).text()
        assert evil not in html and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
        assert "严重" in html and "触发" in html  # severity and event in the user's language
        r = await c.get("/point/gw-x/dev/%3Cimg%20src=x%3E")
        assert r.status == 404 and "<img src=x>" not in await r.text()


# --------------------------------------------------------------- hostile requests, at random

_HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            "9" * 400,
            "-1",
            "1e308",
            "nan",
            "24h\x00",
            "../../etc/passwd",
            "%00",
            "<script>alert(1)</script>",
            "' OR 1=1 --",
            '"; DROP MEASUREMENT readings; --',
            "/^.*$/",
            "\ud7ff\ue000\U0010ffff",
            "x" * 5000,
        ]
    ),
)
_GET_ROUTES = (
    "/",
    "/fleet",
    "/points",
    "/point/{a}/{b}/{c}",
    "/point/gw-n/scale/mass",
    "/instruments",
    "/alarms",
    "/alarm/{a}/{b}",
    "/risk",
    "/audit/{a}",
    "/audit/gw-n",
    "/report",
    "/report/html",
    "/static/{a}",
)
_QUERY_KEYS = ("range", "site", "type", "sort", "status", "q", "lang", "next", "gateway")


@pytest.fixture(scope="module")
def hostile_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    """One logged-in client on a loop of its own, for many requests at random."""
    tmp = tmp_path_factory.mktemp("hostile")
    fill(tmp)
    cfg = load_config(console_yaml(tmp, sqlite_store(tmp)))
    loop = asyncio.new_event_loop()

    async def start() -> TestClient[Any, Any]:
        c = TestClient(TestServer(make_app(Console.from_config(cfg)), host="127.0.0.1"))
        await c.start_server()
        assert (await login(c)).status == 303
        return c

    c = loop.run_until_complete(start())
    try:
        yield loop, c
    finally:
        loop.run_until_complete(c.close())
        loop.close()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    route=st.sampled_from(_GET_ROUTES),
    segments=st.lists(
        _HOSTILE_TEXT.filter(lambda s: s not in ("", ".", "..")), min_size=3, max_size=3
    ),
    query=st.dictionaries(st.sampled_from(_QUERY_KEYS), _HOSTILE_TEXT, max_size=4),
)
def test_hostile_paths_and_query_strings_get_a_page_or_a_clear_refusal(
    hostile_target: tuple[Any, Any], route: str, segments: list[str], query: dict[str, str]
) -> None:
    """Whatever a browser (or anyone) puts in a path or query string: a page, a 404 or a
    4xx refusal — never a server error — and nothing of it comes back unescaped."""
    loop, c = hostile_target
    a, b, cc = (urllib.parse.quote(s, safe="") for s in segments)
    path = route.format(a=a, b=b, c=cc)
    url = path + ("?" + urllib.parse.urlencode(query) if query else "")

    async def get() -> tuple[int, str]:
        async with asyncio.timeout(20):
            r = await c.get(url, allow_redirects=False)
            return r.status, await r.text(errors="replace")

    status, body = loop.run_until_complete(get())
    assert status in (200, 303, 400, 404, 414, 431), (url, status, body[:300])
    assert "<script>alert(1)</script>" not in body, url


async def test_static_files_are_the_vendored_ones_and_nothing_else(
    client: TestClient[Any, Any],
) -> None:
    for name in ("console.js", "console.css", "vendor/echarts.min.js"):
        r = await client.get(f"/static/{name}")  # public: the login page needs them
        assert r.status == 200, name
        assert r.headers.get("ETag") or r.headers.get("Last-Modified"), name
    for name in ("..%2fapp.py", "..%2f..%2fconfig.py", "vendor", "vendor/", "9" * 400, "a%00b"):
        r = await client.get(f"/static/{name}")
        assert r.status == 404, (name, r.status)


async def test_fleet_says_what_came_from_senders_that_are_no_registered_gateway(
    tmp_path: Path,
) -> None:
    w = StoreWriter(sqlite=tmp_path / "store.sqlite")
    for i, reason in enumerate(("unknown_gateway", "unknown_gateway", "bad_signature")):
        topic = f"metrogate/v1/x/stranger-{i}/data"
        # the ingest files a message whose topic names no registered gateway under "-"
        w.security(SecurityEvent.of_message(None, reason, "?", topic, NOW_US - i * S, b"%d" % i))
    w.close()
    fill(tmp_path)
    cfg = load_config(console_yaml(tmp_path, sqlite_store(tmp_path)))
    async with TestClient(TestServer(make_app(Console.from_config(cfg)), host="127.0.0.1")) as c:
        await login(c)
        html = await (await c.get("/fleet")).text()
        line = html.split('id="unregistered">', 1)[1].split("</p>", 1)[0]
        assert "1 forgeries, 2 dead letters" in line
        assert 'data-gateway="-"' not in html  # not a gateway of the fleet
        await c.post("/logout", data={"csrf": csrf_of(html)})
        await login(c, "victor")
        html = await (await c.get("/fleet")).text()
        assert "伪造 1 条，死信 2 条" in html.split('id="unregistered">', 1)[1]


async def test_fleet_has_no_unregistered_line_when_there_is_nothing_to_say(
    client: TestClient[Any, Any],
) -> None:
    await login(client)
    assert 'id="unregistered"' not in await (await client.get("/fleet")).text()
