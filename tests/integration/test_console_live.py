"""Live pages of the console reload themselves (in headless Chromium, over a SQLite store)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from supervision.config import load_config
from supervision.console.app import make_app
from supervision.console.service import Console
from tests.console_support import PASSWORD, console_yaml
from tests.unit.test_console_app import fill, sqlite_store

pytestmark = pytest.mark.services


async def test_live_pages_reload_themselves_in_chromium(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    from tests.integration.test_console_browser import CHROMIUM, CHROMIUM_ARGS

    fill(tmp_path)
    cfg = load_config(console_yaml(tmp_path, sqlite_store(tmp_path), extra="  refresh: 1s\n"))
    async with (
        TestClient(TestServer(make_app(Console.from_config(cfg)), host="127.0.0.1")) as c,
        async_playwright() as pw,
    ):
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await b.new_page()
            base = str(c.make_url("")).rstrip("/")
            await page.goto(f"{base}/login")
            await page.fill("#user", "alice")
            await page.fill("#password", PASSWORD)
            await page.click("#login")
            await page.wait_for_url(f"{base}/fleet")
            assert await page.get_attribute("body", "data-live") == "1"
            await page.evaluate("() => { window.marker = 1 }")
            await page.wait_for_function("() => window.marker === undefined", timeout=10_000)
            await page.goto(f"{base}/instruments")
            assert await page.get_attribute("body", "data-live") == "0"
        finally:
            await b.close()
