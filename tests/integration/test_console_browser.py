"""The console in real headless Chromium, over a real stack: Mosquitto, two gateways on
simulated instruments, the ingest into InfluxDB 1.x (and SQLite), the console.

What a person sees is checked: the chart holds the stored values, a Nelson-rule
violation the simulated drift produces is marked, the expired certificate is listed as
expired, the site with the tampered meter is ranked first, and an operator's
acknowledgement in the browser changes the alarm at the gateway and is in its event log.
Screenshots go to ``$METROGATE_ARTEFACTS`` (default ``<tmp>/metrogate-artefacts``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.simulate import run_simulators
from gateway.config.loader import load_config as load_gateway_config
from gateway.daemon import Gateway
from gateway.wire.keys import PUBLIC_KEY_NAME, ensure_signer, generate_keypair
from simulators.pty import SimLine
from simulators.serial_instruments import Dlt645Sim
from supervision.config import load_config as load_ingest_config
from supervision.console.app import serve
from supervision.console.service import Console
from supervision.console.store import InfluxReader
from supervision.ingest import running_ingest
from tests.console_support import PASSWORD, password_hash
from tests.db_services import InfluxDB1
from tests.integration.gwtest import synced_clock
from tests.services import Mosquitto

pytestmark = pytest.mark.services

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
METER = "123456789012"
COVER_OPEN = 0x03300D00
ALARM = "oven/level/high"
DB = "mg"


def artefacts() -> Path:
    d = Path(
        os.environ.get("METROGATE_ARTEFACTS") or Path(tempfile.gettempdir()) / "metrogate-artefacts"
    )
    d.mkdir(parents=True, exist_ok=True)
    return d


async def until(cond: Callable[[], Any], limit: float, what: str, step: float = 0.2) -> Any:
    """Wait for ``cond()`` to be truthy (it may be a coroutine function); bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        got = cond()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return got
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {limit} s waiting for {what}")
        await asyncio.sleep(step)


def gateway_a(tmp: Path, broker: int) -> Path:
    """plant-a: an oven whose thermometer's certificate expired, a pressure that drifts
    (SPC: Nelson rules against a fixed centre line) and a level above its alarm limit."""
    text = f"""
gateway: {{id: gw-a, site: plant-a, state_dir: {tmp / "state-a"}}}
mqtt: {{url: 'mqtt://127.0.0.1:{broker}', publish_timeout: 3s, backoff_max: 1s}}
ops: {{listen: '127.0.0.1:0'}}
operators:
  - {{id: alice, public_key: {tmp / "ops" / "alice.pub"}, roles: [ack, shelve]}}
instruments:
  - id: TT-1
    unit: degC
    range: {{min: 0, max: 300}}
    calibrations:
      - {{certificate: CAL-2024-0007, lab: City Metrology Institute, date: 2024-01-10,
          valid_until: 2024-12-31}}
devices:
  - id: oven
    driver: modbus_tcp
    host: 127.0.0.1
    port: 15020
    unit: 1
    poll: 200ms
    timeout: 100ms
    points:
      - {{id: temperature, table: holding, address: 0, type: float32, unit: degC,
          instrument: TT-1, spec: {{lower: 175, upper: 185, rule: non_binary}},
          sim: {{kind: sine, mean: 180, amplitude: 1, period: 30}}}}
      - id: pressure
        table: holding
        address: 2
        type: float32
        unit: bar
        spec: {{lower: 5.5, upper: 6.5}}
        spc: {{chart: individuals, center: 6.0, sigma: 0.05, nelson: [1, 2, 3, 5]}}
        sim: {{kind: ramp, start: 5.95, rate: 0.005}}
      - {{id: level, table: holding, address: 4, type: float32, unit: "%",
          rules: [{{kind: high, limit: 80, severity: high}}], sim: 90.0}}
"""
    path = tmp / "gw-a.yaml"
    path.write_text(text)
    return path


def gateway_b(tmp: Path, broker: int, pty: str) -> Path:
    """plant-b: a DL/T 645 energy meter whose cover will be opened."""
    text = f"""
gateway: {{id: gw-b, site: plant-b, state_dir: {tmp / "state-b"}}}
mqtt: {{url: 'mqtt://127.0.0.1:{broker}', publish_timeout: 3s, backoff_max: 1s}}
ops: {{listen: '127.0.0.1:0'}}
buses:
  - {{id: rs485, port: {pty}, baudrate: 9600, parity: E, timeout: 1s}}
devices:
  - {{id: meter, driver: dlt645, bus: rs485, address: "{METER}", poll: 2s,
      profile: dlt645-single-phase}}
"""
    path = tmp / "gw-b.yaml"
    path.write_text(text)
    return path


def ingest_yaml(tmp: Path, broker: int, store: str) -> Path:
    text = f"""
mqtt: {{url: 'mqtt://127.0.0.1:{broker}', client_id: ingest-browser, protocol: "5"}}
keys_dir: {tmp / "keys"}
store: {store}
batch: {{max_lines: 5000, max_delay: 0.1}}
stats_interval: 0
ops: {{enabled: false}}
console:
  listen: 127.0.0.1:0
  refresh: 0s                       # the test reloads pages itself
  users:
    - {{name: alice, password_hash: '{password_hash()}', role: operator, operator_id: alice,
        operator_key: {tmp / "ops" / "alice.key"}}}
    - {{name: victor, password_hash: '{password_hash()}', role: viewer}}
  points:
    - {{match: gw-a/oven/temperature, lower: 175, upper: 185}}
    - {{match: gw-a/oven/pressure, lower: 5.5, upper: 6.5}}
"""
    path = tmp / "ingest.yaml"
    path.write_text(text)
    return path


@dataclass
class Stack:
    url: str
    gateways: dict[str, Gateway]
    meter: Dlt645Sim
    console: Console
    tmp: Path


@asynccontextmanager
async def stack(tmp: Path, broker: Mosquitto, store: str) -> AsyncIterator[Stack]:
    """Simulators, two gateways, the ingest and the console, all on loopback."""
    generate_keypair(tmp / "ops", name="alice")
    (tmp / "keys").mkdir(exist_ok=True)
    meters = {
        METER: {
            di: 0
            for di in (
                0x00010000,
                0x00020000,
                0x02010100,
                0x02020100,
                0x02030000,
                0x02060000,
                0x02800002,
                COVER_OPEN,
                0x03300000,
                0x03300400,
                0x03110000,
            )
        }
    }
    meters[METER][0x00010000] = 123456
    meters[METER][0x02010100] = 2301
    meter = Dlt645Sim(meters)
    async with AsyncExitStack() as es:
        line = es.enter_context(SimLine(meter))
        loaded = {
            "gw-a": load_gateway_config(gateway_a(tmp, broker.port)),
            "gw-b": load_gateway_config(gateway_b(tmp, broker.port, line.path)),
        }
        await es.enter_async_context(run_simulators(loaded["gw-a"].config, free_ports=True))
        for gw, lc in loaded.items():
            ensure_signer(lc.config.signing_key, create=True)
            shutil.copyfile(
                lc.config.gateway.state_dir / PUBLIC_KEY_NAME, tmp / "keys" / f"{gw}.pub"
            )
        icfg = load_ingest_config(ingest_yaml(tmp, broker.port, store))
        ingest = await es.enter_async_context(running_ingest(icfg))
        async with asyncio.timeout(10):
            await ingest.connected.wait()
        gateways: dict[str, Gateway] = {}
        stop = asyncio.Event()
        tasks = []
        for gw, lc in loaded.items():
            g = Gateway(lc, clock_monitor=synced_clock())
            gateways[gw] = g
            tasks.append(asyncio.create_task(g.run(stop), name=f"gateway-{gw}"))
        try:
            for g in gateways.values():
                async with asyncio.timeout(20):
                    await g.ready.wait()
            console = Console.from_config(icfg)
            runner, port = await serve(console, "127.0.0.1", 0)
            try:
                yield Stack(f"http://127.0.0.1:{port}", gateways, meter, console, tmp)
            finally:
                await runner.cleanup()
        finally:
            stop.set()
            async with asyncio.timeout(20):
                await asyncio.gather(*tasks)


@asynccontextmanager
async def serving_page(html: str) -> AsyncIterator[str]:
    """Another web server on loopback serving one page; yields its URL."""
    from aiohttp import web

    async def handler(_r: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            ctx = await b.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
            yield ctx
            await ctx.close()
        finally:
            await b.close()


async def log_in(page: Any, url: str, user: str = "alice") -> None:
    await page.goto(f"{url}/login")
    await page.fill("#user", user)
    await page.fill("#password", PASSWORD)
    await page.click("#login")
    await page.wait_for_url(f"{url}/fleet")


def event_log(tmp: Path, state: str) -> list[dict[str, Any]]:
    path = tmp / state / "events.log"
    lines = path.read_bytes().splitlines() if path.exists() else []
    return [json.loads(line.split(b"\t", 1)[0]) for line in lines]


async def check_everything(s: Stack, ctx: Any, name: str, *, reader: Any) -> None:
    shots = artefacts()
    errors: list[str] = []
    page = await ctx.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    # let data accumulate and the meter's first counters reach the audit trail
    await until(
        lambda: any(e["type"] == "tamper_counter" for e in event_log(s.tmp, "state-b")),
        60,
        "the meter's first tamper counters",
    )
    s.meter.values[METER][COVER_OPEN] = 1  # somebody opened the meter's cover
    await until(
        lambda: len([e for e in event_log(s.tmp, "state-b") if e["type"] == "tamper_counter"]) >= 2,
        60,
        "the cover opened",
    )
    metro = s.gateways["gw-a"].metrology["oven"]
    await until(
        lambda: any(
            a["alarm"] == ALARM and a["state"] == "active_unacknowledged"
            for a in metro.active_alarms()
        ),
        60,
        "level alarm raised",
    )

    # -- no page without login; the session cookie is HttpOnly and SameSite
    await page.goto(f"{s.url}/risk")
    assert page.url == f"{s.url}/login"
    await log_in(page, s.url)
    cookie = next(c for c in await ctx.cookies() if c["name"] == "mg_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    await page.screenshot(path=str(shots / f"{name}-fleet.png"), full_page=True)
    assert await page.locator('tr[data-gateway="gw-a"] .state.online').count() == 1

    # -- the chart is drawn with the stored values
    async def stored_enough() -> bool:
        n = await asyncio.to_thread(
            lambda: reader.stats("gw-a", "oven", "temperature", 0, 2**62).count
        )
        return n >= 30

    await until(stored_enough, 60, "temperature readings in the store")
    await page.goto(f"{s.url}/point/gw-a/oven/temperature?range=1h")
    await page.wait_for_selector("html[data-charts=drawn]")
    drawn = await page.evaluate(
        "() => window.metrogateCharts.value.getOption().series.find(x => x.id === 'value').data"
    )
    assert len(drawn) >= 30
    lo, hi = drawn[0][0] * 1_000_000, drawn[-1][0] * 1_000_000 + 1_000_000
    stored = await asyncio.to_thread(reader.series, "gw-a", "oven", "temperature", lo, hi, 5000)
    by_ms = {sm.ts_ns // 1_000_000: sm.value for sm in stored.samples}
    assert all(by_ms.get(ts) == v for ts, v in drawn), "chart values differ from the store"
    canvas = await page.locator("#value-chart canvas").count()
    assert canvas >= 1
    # the specification limits (175 / 185 °C) are in view although the values are not near
    low, high = await page.evaluate(
        "() => window.metrogateCharts.value.getModel().getComponent('yAxis').axis.scale.getExtent()"
    )
    assert low <= 175 and high >= 185, (low, high)
    await page.screenshot(path=str(shots / f"{name}-point-temperature.png"), full_page=True)

    # -- a Nelson-rule violation produced by the simulated drift is marked
    await page.goto(f"{s.url}/point/gw-a/oven/pressure?range=1h")
    await page.wait_for_selector("html[data-charts=drawn]")
    marks = await page.evaluate(
        "() => window.metrogateCharts.control.getOption().series"
        ".find(x => x.id === 'violations').data"
    )
    assert marks and all(m[2] for m in marks), "no Nelson-rule violation marked"
    assert await page.locator("#violations tbody tr").count() >= 1
    flagged = await page.locator("#markers").inner_text()
    assert "spc_nelson_" in flagged  # the gateway's own SPC flags are shown as evidence
    await page.screenshot(path=str(shots / f"{name}-point-pressure.png"), full_page=True)

    # -- the expired certificate is listed as expired
    await page.goto(f"{s.url}/instruments")
    row = page.locator('tr[data-instrument="TT-1"]')
    assert await row.get_attribute("data-status") == "expired"
    text = await row.inner_text()
    assert "expired" in text and "CAL-2024-0007" in text and "2024-12-31" in text
    await page.screenshot(path=str(shots / f"{name}-instruments.png"), full_page=True)

    # -- the site with the tampered meter is ranked first, with its evidence
    await page.goto(f"{s.url}/risk")
    first = page.locator("#risk tbody tr").first
    assert await first.get_attribute("data-name") == "plant-b"
    assert await first.locator('li[data-indicator="tamper"]').count() == 1
    await page.screenshot(path=str(shots / f"{name}-risk.png"), full_page=True)
    await first.locator('li[data-indicator="tamper"] a').click()
    await page.wait_for_url(f"{s.url}/audit/gw-b?type=tamper_counter")
    assert await page.locator('#audit tr[data-check="ok"]').count() >= 2

    # -- an operator acknowledges in the console; the gateway carries it out and logs it
    await page.goto(f"{s.url}/alarms")

    async def ack_button() -> bool:
        await page.reload()
        return await page.locator(f'tr[data-alarm="{ALARM}"] button.ack').count() == 1

    await until(ack_button, 60, "the alarm with its acknowledge button", step=1.0)
    await page.screenshot(path=str(shots / f"{name}-alarms-before.png"), full_page=True)
    await page.locator(f'tr[data-alarm="{ALARM}"] button.ack').click()
    await page.wait_for_url(f"{s.url}/alarms")
    assert "signed as operator alice" in await page.locator(".flash").inner_text()
    await until(
        lambda: any(
            a["alarm"] == ALARM and a["state"] == "active_acknowledged"
            for a in metro.active_alarms()
        ),
        30,
        "acknowledged at the gateway",
    )
    acks = [e for e in event_log(s.tmp, "state-a") if e["type"] == "alarm_ack"]
    assert [(e["source"], e["data"]["alarm"]) for e in acks] == [("alice", ALARM)]

    async def shown_acknowledged() -> bool:
        await page.reload()
        return (
            await page.locator(f'tr[data-alarm="{ALARM}"]').get_attribute("data-state")
            == "active_acknowledged"
        )

    await until(shown_acknowledged, 60, "the console showing it acknowledged", step=1.0)
    await page.screenshot(path=str(shots / f"{name}-alarms-after.png"), full_page=True)
    # ... and shelves it for 5 minutes
    row = page.locator(f'tr[data-alarm="{ALARM}"]')
    await row.locator("input.minutes").fill("5")
    await row.locator("button.shelve").click()
    await page.wait_for_url(f"{s.url}/alarms")
    await until(
        lambda: any(a["alarm"] == ALARM and a["shelved"] for a in metro.active_alarms()),
        30,
        "shelved at the gateway",
    )
    shelves = [e for e in event_log(s.tmp, "state-a") if e["type"] == "alarm_shelve"]
    assert [(e["source"], e["data"]["duration"]) for e in shelves] == [("alice", 300.0)]
    await page.goto(f"{s.url}/audit/gw-a?type=alarm_ack")
    assert "alice" in await page.locator("#audit").inner_text()

    # -- a form posted from another site is refused and changes nothing
    before = len([e for e in event_log(s.tmp, "state-a") if e["type"].startswith("alarm_")])
    evil = await ctx.new_page()
    # an attacker's page on another origin (another port of this host: the same *site*,
    # so the SameSite cookie is sent and only the CSRF token and Origin check stand)
    form = (
        f'<form id="f" method="post" action="{s.url}/alarms/ack">'
        '<input name="gateway" value="gw-a"><input name="site" value="plant-a">'
        f'<input name="alarm" value="{ALARM}"><input name="csrf" value="guessed"></form>'
        "<script>document.getElementById('f').submit()</script>"
    )
    async with serving_page(form) as evil_url:
        async with evil.expect_response(lambda r: r.url.endswith("/alarms/ack")) as forged:
            await evil.goto(evil_url)
        response = await forged.value
        assert response.status == 403
        assert "did not come from this console" in await response.text()
    await evil.close()
    await asyncio.sleep(1.0)  # what the gateway would have done, it would have done by now
    after = len([e for e in event_log(s.tmp, "state-a") if e["type"].startswith("alarm_")])
    assert after == before

    # -- a viewer sees no actions; an unknown point is a 404 page
    viewer = await ctx.browser.new_context()
    vpage = await viewer.new_page()
    await log_in(vpage, s.url, "victor")
    await vpage.goto(f"{s.url}/alarms")
    assert await vpage.locator("button.ack").count() == 0
    resp = await vpage.goto(f"{s.url}/point/gw-a/oven/nope")
    assert resp is not None and resp.status == 404
    assert "Not found" in await vpage.locator("h1").inner_text()
    await viewer.close()

    # -- every label in the user's language, switched in the header
    await page.goto(f"{s.url}/instruments")
    await page.click("#language")
    await page.wait_for_url(f"{s.url}/instruments")
    assert await page.locator("h1").inner_text() == "计量器具"
    assert "已过期" in await page.locator('tr[data-instrument="TT-1"]').inner_text()
    await page.screenshot(path=str(shots / f"{name}-instruments-zh.png"), full_page=True)
    await page.click("#language")
    assert not errors, errors


async def test_console_in_chromium_over_influxdb(
    tmp_path: Path, mosquitto: Mosquitto, influx: InfluxDB1
) -> None:
    store = f"{{kind: influxdb_v1, url: '{influx.url}', database: {DB}, create_database: true}}"
    async with stack(tmp_path, mosquitto, store) as s, browser() as ctx:
        reader = InfluxReader(influx.url, DB)
        await check_everything(s, ctx, "influxdb", reader=reader)
        # a store that goes down: the page says so, and comes back by itself
        page = await ctx.new_page()
        await page.goto(f"{s.url}/fleet")
        await asyncio.to_thread(influx.stop)
        resp = await page.goto(f"{s.url}/fleet")
        assert resp is not None and resp.status == 503
        assert "cannot read the store" in await page.locator("#store-down").inner_text()
        await page.screenshot(path=str(artefacts() / "influxdb-store-down.png"))
        await asyncio.to_thread(influx.start)
        await page.wait_for_selector("#fleet", timeout=60_000)  # its own retry, no reload


async def test_console_in_chromium_over_sqlite(tmp_path: Path, mosquitto: Mosquitto) -> None:
    store = f"{{kind: sqlite, path: {tmp_path / 'store.sqlite'}}}"
    async with stack(tmp_path, mosquitto, store) as s, browser() as ctx:
        await check_everything(s, ctx, "sqlite", reader=s.console.reader)
