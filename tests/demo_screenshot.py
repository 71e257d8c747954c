"""Take the docs' picture of the demo: ``make screenshot`` (docs/_static/demo.png).

    python -m tests.demo_screenshot [OUT.png]

Serves the demo under gunicorn on a free loopback port (stopped by its PID),
opens it in Debian's headless Chromium, waits for a few clock ticks and the
log, starts the in-page export and takes the page while its progress bar is
partway. Not a test: the browser tests assert on the DOM, never on pictures.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

from .realserver import ROOT, gunicorn
from .test_browser import CHROMIUM_FLAGS

OUT = ROOT / "docs" / "_static" / "demo.png"
#: A wide desktop window, at 1x: the picture stays small (the docs show it
#: scaled to their column anyway).
VIEWPORT = {"width": 1000, "height": 800}


def take(out: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("Debian's chromium is missing: 'make browser' installs it")
    with gunicorn("examples.demo:app", "--config", "python:live_wsgi.gunicorn") as server, \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport=VIEWPORT, color_scheme="light")
            page.goto(f"http://127.0.0.1:{server.port}/")
            # A small export first, so the log shows a stream's whole life.
            page.evaluate("fetch('/export.csv?rows=1000&seconds=0').then(r => r.text())")
            page.wait_for_function(
                "document.getElementById('log').innerText.includes('complete')", timeout=20_000)
            page.wait_for_function(
                "Number(document.getElementById('ticks').textContent) >= 3", timeout=20_000)
            # The default export, caught partway (it takes a few seconds).
            page.click("#download")
            page.wait_for_function(
                "document.getElementById('progress').value >= 30", timeout=30_000)
            out.parent.mkdir(parents=True, exist_ok=True)
            # The header and the panels, not the footer: a smaller picture.
            bottom = page.evaluate(
                "document.querySelector('main').getBoundingClientRect().bottom + scrollY")
            page.screenshot(path=str(out), full_page=True, clip={
                "x": 0, "y": 0, "width": VIEWPORT["width"], "height": bottom + 20})
        finally:
            browser.close()
    print(f"{out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}: "
          f"{out.stat().st_size // 1024} KB")


if __name__ == "__main__":
    take(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else OUT)
