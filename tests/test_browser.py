"""The demo in a real browser: headless Chromium (Debian's) driven by Playwright.

``make test`` installs Chromium when it is missing. Assertions are on DOM
state and on the downloaded file, never on screenshots.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from .realserver import Server, gunicorn
from .redisserver import RedisServer

pytestmark = pytest.mark.timeout(120)

# As this machine needs them: no sandbox as root, no background traffic.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]


def test_demo_page_streams_and_downloads() -> None:
    """SPEC 8.1, 7.2: EventSource updates arrive in a browser, the clock names the server's
    time zone; the sized CSV downloads whole both in the page (its progress bar moving
    on the way) and through the native download link; the page links to the feed."""
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: run 'make test', which installs it"
    rows = 20_000
    # A zone with a half-hour offset and no DST: the label is known, whatever the date.
    env = {"TZ": "Asia/Kolkata"}
    with gunicorn("examples.demo:app", "--config", "python:live_wsgi.gunicorn",
                  env=env) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(accept_downloads=True)
            page.goto(f"http://127.0.0.1:{server.port}/?rows={rows}&seconds=2")
            # At least three clock updates arrive over SSE.
            page.wait_for_function(
                "Number(document.getElementById('ticks').textContent) >= 3", timeout=20_000)
            assert page.text_content("#clock").count(":") == 2  # type: ignore[union-attr]
            assert page.text_content("#clock-zone") == "Asia/Kolkata (IST, UTC+05:30)"
            # The live log shows the page's own streams starting.
            page.wait_for_selector("#log li", timeout=10_000)
            assert "stream started" in page.inner_text("#log")
            page.wait_for_function(
                "Number(document.getElementById('open-streams').textContent) >= 2",
                timeout=10_000)
            # In the page: the export downloads completely, the bar moving on the way
            # (paced over 2 s, it is partway for most of them).
            with page.expect_download(timeout=60_000) as download_info:
                page.click("#download")
                page.wait_for_function(
                    "(p => p.value > 0 && p.value < 100)(document.getElementById('progress'))",
                    timeout=30_000)
            assert_whole_export(download_info.value.path(), rows)
            assert page.eval_on_selector("#progress", "el => el.value") == 100
            assert "done" in page.inner_text("#download-status")
            # Natively: a plain <a download> to the same route.
            url = page.get_attribute("#download", "data-url")
            assert url == f"/export.csv?rows={rows}&seconds=2"
            assert page.get_attribute("#download-link", "href") == url
            assert page.get_attribute("#download-link", "download") == "export.csv"
            with page.expect_download(timeout=60_000) as download_info:
                page.click("#download-link")
            assert download_info.value.suggested_filename == "export.csv"
            assert_whole_export(download_info.value.path(), rows)
            # The feed is a click away, and links back.
            page.click("#feed-link")
            page.wait_for_url("**/feed", timeout=10_000)
            page.wait_for_function(
                "document.getElementById('feed-status').textContent === 'live'",
                timeout=15_000)
            assert page.get_attribute("text=Back to the demo", "href") == "/"
        finally:
            browser.close()


def assert_whole_export(saved: Path, rows: int) -> None:
    lines = saved.read_bytes().splitlines()
    assert len(lines) == rows + 1
    assert lines[0] == b"id,email,plan,amount_cents"
    assert lines[-1].startswith(b"%07d," % (rows - 1))


class FeedServer(NamedTuple):
    """How the feed test serves the demo."""

    args: tuple[str, ...]  # gunicorn's
    broker: str  # "memory", or "redis": a redis-server of the test's own
    workers: int  # the feed pages' streams are served by this many worker processes


#: One worker on the in-process broker; two workers sharing a Redis, where the
#: two pages' streams are held by different worker processes.
FEED_SERVERS = [
    pytest.param(FeedServer(("--config", "python:live_wsgi.gunicorn"), "memory", 1),
                 id="one-worker-memory"),
    pytest.param(FeedServer(("--workers", "2", "--config", "python:live_wsgi.gunicorn"),
                            "redis", 2), id="two-workers-redis"),
]
#: Pages opened (each a fresh browser context, so fresh connections) until one's
#: stream is held by another worker than the first page's. The kernel hands a
#: connection to whichever worker accepts first: about even odds each time.
MAX_PAGE_TRIES = 20


def feed_broker_env(setup: FeedServer, request: pytest.FixtureRequest) -> dict[str, str]:
    if setup.broker == "redis":
        # A server of the test's own: the demo's channel name is fixed.
        new_redis: Callable[..., RedisServer] = request.getfixturevalue("new_redis")
        return {"LIVE_WSGI_BROKER": new_redis().url}
    return {"LIVE_WSGI_BROKER": "memory://"}


def wait_for_workers(server: Server, workers: int) -> None:
    """Until ``workers`` distinct worker processes have answered ``/feed`` (each
    names itself in X-Worker-PID): while one is still starting, the other
    takes every connection."""
    seen: set[str] = set()
    deadline = time.monotonic() + 30
    while len(seen) < workers:
        assert time.monotonic() < deadline, f"only workers {seen} answered within 30 s"
        response = server.get("/feed")
        seen.add(response.headers["x-worker-pid"])
        response.close()


def workers_of(server: Server) -> list[int]:
    """The PIDs of the gunicorn master's worker processes."""
    master = server.proc.pid
    return [int(pid) for pid in
            Path(f"/proc/{master}/task/{master}/children").read_text().split()]


def open_feed(browser: Browser, url: str) -> tuple[Page, int]:
    """A new page (in a context of its own) on the feed, and the PID of the
    worker that holds its event stream."""
    page = browser.new_page()
    with page.expect_response(lambda response: "/feed/events" in response.url,
                              timeout=15_000) as stream:
        page.goto(url)
    return page, int(stream.value.headers["x-worker-pid"])


def open_feed_elsewhere(browser: Browser, url: str, pid: int) -> tuple[Page, int]:
    """A feed page whose stream another worker than ``pid`` holds."""
    for _ in range(MAX_PAGE_TRIES):
        page, other = open_feed(browser, url)
        if other != pid:
            return page, other
        page.close()  # and its context: the next page connects afresh
    raise AssertionError(f"{MAX_PAGE_TRIES} pages' streams all landed on worker {pid}")


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


@pytest.mark.parametrize("setup", FEED_SERVERS)
def test_feed_reaches_every_page_and_resumes_after_a_reload(
    setup: FeedServer, request: pytest.FixtureRequest
) -> None:
    """SPEC 9.1, 9.3: a message posted in one browser page appears in another (with two
    workers, each page's stream held by a different worker process); a page that comes
    back resumes from its last id with no gap and no duplicate, and an id the broker no
    longer has shows the stream-reset notice."""
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: run 'make test', which installs it"
    env = feed_broker_env(setup, request)
    with gunicorn("examples.demo:app", *setup.args, env=env) as server, \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            url = f"http://127.0.0.1:{server.port}/feed"
            if setup.workers > 1:
                wait_for_workers(server, setup.workers)
                alice, alice_pid = open_feed(browser, url)
                bob, bob_pid = open_feed_elsewhere(browser, url, alice_pid)
                assert {alice_pid, bob_pid} <= set(workers_of(server))
            else:
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
