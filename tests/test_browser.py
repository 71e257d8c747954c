"""The demo in a real browser: headless Chromium (Debian's) driven by Playwright.

``make test`` installs Chromium when it is missing. Assertions are on DOM
state and on the downloaded file, never on screenshots.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from .realserver import gunicorn

pytestmark = pytest.mark.timeout(120)

# As this machine needs them: no sandbox as root, no background traffic.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]


def test_demo_page_streams_and_downloads(tmp_path: Path) -> None:
    """SPEC 8.1: EventSource updates arrive in a browser; the sized CSV downloads whole."""
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: run 'make test', which installs it"
    rows = 20_000
    with gunicorn("examples.demo:app", "--config", "python:live_wsgi.gunicorn") as server, \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(accept_downloads=True)
            page.goto(f"http://127.0.0.1:{server.port}/?rows={rows}")
            # At least three clock updates arrive over SSE.
            page.wait_for_function(
                "Number(document.getElementById('ticks').textContent) >= 3", timeout=20_000)
            assert page.text_content("#clock").count(":") == 2  # type: ignore[union-attr]
            # The live log shows the page's own streams starting.
            page.wait_for_selector("#log li", timeout=10_000)
            assert "stream started" in page.inner_text("#log")
            page.wait_for_function(
                "Number(document.getElementById('open-streams').textContent) >= 2",
                timeout=10_000)
            # The export downloads completely, with progress from its known size.
            with page.expect_download(timeout=60_000) as download_info:
                page.click("#download")
            saved = tmp_path / "export.csv"
            download_info.value.save_as(saved)
            lines = saved.read_bytes().splitlines()
            assert len(lines) == rows + 1
            assert lines[0] == b"id,email,plan,amount_cents"
            assert page.eval_on_selector("#progress", "el => el.value") == 100
            assert "done" in page.inner_text("#download-status")
        finally:
            browser.close()
