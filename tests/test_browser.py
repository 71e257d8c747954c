"""The demo in a real browser: headless Chromium (Debian's) driven by Playwright.

``make test`` installs Chromium when it is missing. Assertions are on DOM
state and on the downloaded file, never on screenshots.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, sync_playwright

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


#: How the feed test serves the demo: gunicorn arguments and environment. One
#: worker on the in-process broker now; a cross-worker case (``--workers 2``
#: with ``LIVE_WSGI_BROKER=redis://...``) is one more entry here.
FEED_SERVERS = [
    pytest.param(("--config", "python:live_wsgi.gunicorn"), {"LIVE_WSGI_BROKER": "memory://"},
                 id="one-worker-memory"),
]


def feed_items(page: Page) -> list[dict[str, Any]]:
    """The messages a feed page shows, in order: their ids and texts."""
    return page.eval_on_selector_all(  # type: ignore[no-any-return]
        "#feed li", "els => els.map(el => ({id: el.dataset.id, "
        "text: el.querySelector('.text').textContent}))")


def wait_for_texts(page: Page, count: int) -> None:
    page.wait_for_function(f"document.querySelectorAll('#feed li').length >= {count}",
                           timeout=15_000)


def post(page: Page, text: str) -> None:
    page.fill("#feed-text", text)
    page.click("#feed-send")
    page.wait_for_function("document.getElementById('feed-text').value === ''",
                           timeout=15_000)


def ids_of(items: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return [tuple(int(part) for part in item["id"].split("-")) for item in items]  # type: ignore[misc]


@pytest.mark.parametrize(("args", "env"), FEED_SERVERS)
def test_feed_reaches_every_page_and_resumes_after_a_reload(
    args: tuple[str, ...], env: dict[str, str]
) -> None:
    """SPEC 9.1, 9.3: a message posted in one browser page appears in another; a page
    that comes back resumes from its last id with no gap and no duplicate, and an id the
    broker no longer has shows the stream-reset notice."""
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: run 'make test', which installs it"
    with gunicorn("examples.demo:app", *args, env=env) as server, \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            url = f"http://127.0.0.1:{server.port}/feed"
            alice, bob = browser.new_page(), browser.new_page()  # two contexts
            alice.goto(url)
            bob.goto(url)
            # No wait for the EventSources to connect: each page subscribes from
            # the id it was rendered with, so an early post is not lost.
            post(alice, "hello from alice")
            wait_for_texts(bob, 1)
            post(bob, "hi alice")
            wait_for_texts(alice, 2)
            wait_for_texts(bob, 2)
            assert feed_items(alice) == feed_items(bob)
            # Bob leaves; alice posts while he is away; bob comes back to the
            # same tab, which resumes from the last id it showed.
            bob.goto("about:blank")
            post(alice, "while bob was away")
            post(alice, "and once more")
            bob.goto(url)
            wait_for_texts(bob, 4)
            post(alice, "welcome back")
            wait_for_texts(bob, 5)
            wait_for_texts(alice, 5)
            expected = ["hello from alice", "hi alice", "while bob was away", "and once more",
                        "welcome back"]
            assert [item["text"] for item in feed_items(bob)] == expected
            assert feed_items(bob) == feed_items(alice)
            ids = ids_of(feed_items(bob))
            assert ids == sorted(set(ids))  # strictly increasing: none twice
            assert bob.text_content("#feed-notice") == ""
            # A last id the broker never had (as after a restart of an in-memory
            # broker): the page says so and goes on from the current top.
            bob.evaluate("""() => {
                const state = JSON.parse(sessionStorage.getItem("live_wsgi.demo.feed"));
                state.lastId = "1-0";
                sessionStorage.setItem("live_wsgi.demo.feed", JSON.stringify(state));
            }""")
            bob.reload()
            bob.wait_for_function(
                "document.getElementById('feed-notice').textContent.includes('replayed')",
                timeout=15_000)
            post(alice, "after the reset")
            wait_for_texts(bob, 6)
            assert [item["text"] for item in feed_items(bob)] == [*expected, "after the reset"]
        finally:
            browser.close()
