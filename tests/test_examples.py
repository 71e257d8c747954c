"""The examples run as they are."""

from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from .realserver import gunicorn
from .support import WAIT

pytestmark = pytest.mark.timeout(60)


def test_demo_page_and_streams_under_gunicorn() -> None:
    """SPEC 8.1: the demo serves its page, SSE clock and log, and a sized export."""
    from examples.csv_export import HEADER, ROW_SIZE

    with gunicorn("examples.demo:app", "--config", "python:live_wsgi.gunicorn") as server:
        page = server.get("/")
        assert page.status == 200
        html = page.read_all().decode()
        page.close()
        for route in ("/clock", "/log", "/export.csv", "/feed", "/docs/", "EventSource"):
            assert route in html
        clock = server.get("/clock")
        assert clock.headers["content-type"] == "text/event-stream"
        assert clock.next_chunk() == b":\n"  # the opening comment: the head leaves at once
        first = clock.next_chunk()
        assert first is not None and b"event: tick" in first and b"open_streams" in first
        log = server.get("/log")
        assert b"/clock: stream started" in log.read_until(b"stream started\n\n")
        clock.close()
        log.close()
        export = server.get("/export.csv?rows=1000&seconds=0")  # unpaced
        assert export.headers["content-length"] == str(len(HEADER) + 1000 * ROW_SIZE)
        body = export.read_all()
        export.close()
        assert body.count(b"\n") == 1001
        feed = server.get("/feed/events")  # the fan-out route, not live: no pool thread
        assert feed.headers["content-type"] == "text/event-stream"
        assert feed.next_chunk() == b":\nretry: 2000\n\n"
        feed.close()


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _worker_pid(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def test_csv_export_streams_a_million_rows_in_constant_memory() -> None:
    """SPEC 7.2: 1,000,000 rows with a known size; the worker's memory stays flat."""
    from examples.csv_export import HEADER, ROW_SIZE, row

    with gunicorn("examples.csv_export:app") as server:
        warm = server.get("/subscribers.csv?rows=1000")
        warm.read_all()
        warm.close()
        worker = _worker_pid(server.proc.pid)
        before = _rss_kb(worker)
        response = server.get("/subscribers.csv")
        expected = len(HEADER) + 1_000_000 * ROW_SIZE
        assert response.headers["content-length"] == str(expected)
        assert response.headers["content-type"] == "text/csv"
        assert "subscribers.csv" in response.headers["content-disposition"]
        received = 0
        rows = 0
        peak = before
        tail = b""
        while received < expected:
            data = response.sock.recv(1 << 20) if not response.buffer else response.buffer
            response.buffer = b""
            assert data, "connection closed early"
            received += len(data)
            rows += data.count(b"\n")
            tail = (tail + data)[-200:]
            peak = max(peak, _rss_kb(worker))
        response.close()
        assert received == expected
        assert rows == 1_000_001
        assert tail.endswith(row(999_999))
        # The body is 44 MB; buffering it would show. Streaming keeps the
        # worker within a few queue-fulls of where it started.
        assert peak - before < 16_000, f"worker RSS grew by {peak - before} KiB"


def test_sse_clock_sends_ticks_and_resumes_from_last_event_id() -> None:
    """SPEC 7.1: the clock example streams tick events and honours Last-Event-ID."""
    import json

    from sseclient import SSEClient

    with gunicorn("examples.sse_clock:app") as server:
        page = server.get("/")
        assert b"EventSource" in page.read_all()
        page.close()
        response = server.get("/clock", headers={"Last-Event-ID": "41"})
        assert response.headers["content-type"] == "text/event-stream"

        def body() -> Any:
            while (chunk := response.next_chunk()) is not None:
                yield chunk

        events = SSEClient(body()).events()
        first = next(events)
        assert first.event == "tick" and first.id == "42" and first.retry == "2000"
        assert json.loads(first.data)["n"] == 42
        second = next(events)  # one second later
        assert second.id == "43"
        response.close()


# -- the demo's page, clock and export, in process ---------------------------------


@pytest.mark.parametrize(("offset", "abbreviation", "key", "label"), [
    (timedelta(hours=5, minutes=30), "IST", "Asia/Kolkata", "Asia/Kolkata (IST, UTC+05:30)"),
    (-timedelta(hours=3, minutes=30), "NST", "America/St_Johns",
     "America/St_Johns (NST, UTC-03:30)"),
    (timedelta(0), "UTC", "Etc/UTC", "Etc/UTC (UTC, UTC+00:00)"),
    (timedelta(0), "UTC", "UTC", "UTC (UTC+00:00)"),
    (timedelta(hours=1), "CET", None, "CET (UTC+01:00)"),
])
def test_demo_clock_names_its_zone_and_offset(
    offset: timedelta, abbreviation: str, key: str | None, label: str
) -> None:
    """SPEC 8.1: the demo's clock says which zone its time is in: the server's zone
    name, its abbreviation and its offset from UTC."""
    now = datetime(2026, 12, 2, 12, 0, tzinfo=timezone(offset, abbreviation))
    assert _demo().zone_label(now, key) == label


@pytest.mark.parametrize(("tz", "key"), [
    ("Asia/Kolkata", "Asia/Kolkata"),
    (":Europe/Paris", "Europe/Paris"),
    ("/usr/share/zoneinfo/Europe/Paris", "Europe/Paris"),
    ("/etc/some-local-file", None),
])
def test_demo_zone_key_reads_tz(monkeypatch: pytest.MonkeyPatch, tz: str,
                                key: str | None) -> None:
    """SPEC 8.1: the server's zone name comes from TZ (a name or a zoneinfo path)."""
    monkeypatch.setenv("TZ", tz)
    assert _demo().zone_key() == key


def test_demo_page_links_both_downloads_to_the_same_bounded_export() -> None:
    """SPEC 7.2: the page's in-page download and its native <a download> link fetch the
    same export, its rows and pacing taken from the page's query within bounds."""
    from werkzeug.test import Client

    web = Client(_demo().app)
    for query, url in [
        ("", "/export.csv?rows=200000&amp;seconds=4"),
        ("?rows=20000&seconds=1.5", "/export.csv?rows=20000&amp;seconds=1.5"),
        ("?rows=-1&seconds=1e9", "/export.csv?rows=0&amp;seconds=60"),
        ("?rows=x&seconds=nan", "/export.csv?rows=200000&amp;seconds=4"),
    ]:
        html = web.get("/" + query).get_data(as_text=True)
        assert f'id="download" data-url="{url}"' in html
        assert f'id="download-link" href="{url}" download="export.csv"' in html
        assert 'id="feed-link" href="/feed"' in html


def test_demo_paced_export_ends_when_the_client_leaves() -> None:
    """SPEC 4.2, 4.3: a paced export's producer, pausing in stream.wait between writes,
    is freed as soon as the server notices its client left (the clock's count of open
    streams drops back), long before the pacing would have sent the next rows."""
    with gunicorn("examples.demo:app", "--config", "python:live_wsgi.gunicorn") as server:
        clock = server.get("/clock")
        # Two batches a minute apart: the second would leave after 30 s.
        export = server.get(f"/export.csv?rows={2 * 512}&seconds=60")
        assert export.status == 200
        assert _open_streams(clock, until=lambda count: count == 2) == 2  # clock, export
        export.close()  # with the head and the first rows, never the rest
        assert _open_streams(clock, until=lambda count: count == 1) == 1  # the clock
        clock.close()


def _open_streams(clock: Any, until: Any) -> int:
    """The open-stream count from the clock's ticks, once ``until(count)``; within
    twice WAIT (well under the export's 30 s pause)."""
    deadline = time.monotonic() + 2 * WAIT
    while True:
        chunk = clock.next_chunk() or b""
        for line in chunk.decode().splitlines():
            if line.startswith("data: {"):
                count: int = json.loads(line[len("data: "):])["open_streams"]
                if until(count):
                    return count
        assert time.monotonic() < deadline, f"still {chunk!r}"


def test_demo_serves_the_docs_site_once_built(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    """SPEC 8.1: the page's docs links lead into the built documentation site under
    /docs/; before it is built they say how to build it; nothing outside it is served."""
    from werkzeug.test import Client

    demo = _demo()
    site = tmp_path / "html"
    monkeypatch.setattr(demo, "DOCS_HTML", site)
    web = Client(demo.app)
    missing = web.get("/docs/toolkit.html")
    assert missing.status_code == 404
    assert "make docs" in missing.get_data(as_text=True)
    site.mkdir()
    (site / "index.html").write_text("the index")
    (site / "toolkit.html").write_text("the toolkit")
    (tmp_path / "secret.txt").write_text("not the docs")
    assert web.get("/docs/").get_data(as_text=True) == "the index"
    assert web.get("/docs/toolkit.html").get_data(as_text=True) == "the toolkit"
    assert web.get("/docs/nothing.html").status_code == 404
    assert web.get("/docs/../secret.txt").status_code == 404
    assert web.get("/docs/%2E%2E/secret.txt").status_code == 404


def test_demo_docs_links_name_pages_and_sections_of_the_site() -> None:
    """SPEC 8.1: every docs link on the demo's pages names a page of the built site
    and a section on it (checked when ``make docs`` has built the site)."""
    demo = _demo()
    if not (demo.DOCS_HTML / "index.html").is_file():
        pytest.skip("the documentation site is not built (make docs)")
    links = set(re.findall(r'href="/docs/([^"#]*)(?:#([^"]*))?"', demo.PAGE + demo.FEED_PAGE))
    assert len(links) >= 6
    for page, section in links:
        html = (demo.DOCS_HTML / (page or "index.html")).read_text(encoding="utf-8")
        assert not section or f'id="{section}"' in html, (page, section)


# -- the demo's feed, in process ---------------------------------------------------


def _demo() -> Any:
    from examples import demo

    return demo


def _post(demo: Any, text: str, **form: str) -> Any:
    from werkzeug.test import Client

    return Client(demo.app).post("/feed", data={"text": text, **form},
                                 headers={"Accept": "application/json"})


def test_demo_feed_delivers_a_post_from_the_id_the_page_embeds() -> None:
    """SPEC 9.1, 9.3, 9.7: /feed embeds current_id; a feed opened from it gets a message
    posted after the render (even one posted before it connects), with its id, on a
    fan-out stream that holds no pool thread."""
    from werkzeug.test import Client

    from live_wsgi.testing import open_stream

    demo = _demo()
    page = Client(demo.app).get("/feed")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    last_id = demo.broker.current_id(demo.FEED)
    assert f'data-last-id="{last_id}"' in html
    for needed in ("EventSource", "/feed/events?lastEventId=", "stream-reset"):
        assert needed in html
    posted = _post(demo, "before the feed connects", name="ann")
    assert posted.status_code == 201
    with open_stream(demo.app, f"/feed/events?lastEventId={last_id}") as feed:
        assert feed.headers["Content-Type"] == "text/event-stream"
        (first,) = feed.read_events(1, timeout=WAIT)
        assert (first.event, first.id) == ("chat", posted.json["id"])
        assert first.json()["name"] == "ann"
        assert first.json()["text"] == "before the feed connects"
        # A fan-out response: the live middleware never saw it.
        assert demo.live_ext.middleware.active_streams == 0
        second = _post(demo, "while it is open")
        (event,) = feed.read_events(1, timeout=WAIT)
        assert (event.id, event.json()["text"]) == (second.json["id"], "while it is open")
    assert demo.broker.subscriptions() == 0


def test_demo_feed_resumes_from_the_last_id_or_resets() -> None:
    """SPEC 9.3: the feed replays after a Last-Event-ID (header first, then ?lastEventId=)
    without gap or duplicate; an id the broker no longer has gets a stream-reset."""
    from live_wsgi.broadcast import RESET_EVENT
    from live_wsgi.testing import open_stream

    demo = _demo()
    ids = [_post(demo, f"message {n}").json["id"] for n in range(3)]
    with open_stream(demo.app, f"/feed/events?lastEventId={ids[0]}") as feed:
        assert [e.id for e in feed.read_events(2, timeout=WAIT)] == ids[1:]
        later = _post(demo, "later").json["id"]
        assert [e.id for e in feed.read_events(1, timeout=WAIT)] == [later]
    # A reconnecting EventSource sends the header; it wins over the page's query.
    with open_stream(demo.app, f"/feed/events?lastEventId={ids[0]}",
                     headers={"Last-Event-ID": ids[1]}) as feed:
        assert [e.id for e in feed.read_events(2, timeout=WAIT)] == [ids[2], later]
    with open_stream(demo.app, "/feed/events?lastEventId=1-0") as feed:
        (reset,) = feed.read_events(1, timeout=WAIT)
        assert (reset.event, reset.id) == (RESET_EVENT, later)


def test_demo_feed_refuses_empty_posts_and_reports_a_broker_outage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SPEC 9.6: a publish that fails fast is a 503 the page can show; bad input is a
    400 and publishes nothing; a form posted without JavaScript is redirected back."""
    from werkzeug.test import Client

    from live_wsgi.broadcast import BrokerUnavailable

    demo = _demo()
    top = demo.broker.current_id(demo.FEED)
    for text in ("", "   ", "x" * (demo.MAX_TEXT + 1)):
        refused = _post(demo, text)
        assert refused.status_code == 400
        assert "characters" in refused.json["error"]
    assert demo.broker.current_id(demo.FEED) == top
    plain = Client(demo.app).post("/feed", data={"text": "no script"})
    assert (plain.status_code, plain.headers["Location"]) == (303, "/feed")

    def down(*args: Any, **kwargs: Any) -> str:
        raise BrokerUnavailable("connection refused")

    monkeypatch.setattr(demo.broker, "publish", down)
    unavailable = _post(demo, "hello?")
    assert unavailable.status_code == 503
    assert "unavailable" in unavailable.json["error"]


def test_demo_feed_routes_name_their_worker() -> None:
    """SPEC 9.1: every feed response names the worker process that served it
    (X-Worker-PID), so a page's stream and a post can be seen crossing workers;
    the other routes do not."""
    from werkzeug.test import Client

    from live_wsgi.testing import open_stream

    demo = _demo()
    web = Client(demo.app)
    pid = str(os.getpid())
    assert web.get("/feed").headers["X-Worker-PID"] == pid
    assert _post(demo, "who served this?").headers["X-Worker-PID"] == pid
    with open_stream(demo.app, "/feed/events") as feed:
        assert feed.headers["X-Worker-PID"] == pid
    assert "X-Worker-PID" not in web.get("/").headers
