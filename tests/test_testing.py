"""live_wsgi.testing: incremental reads with timeouts (helpers for users' tests)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from werkzeug.test import Client

from live_wsgi import SSE, current_response
from live_wsgi.testing import Event, SSEParser, open_stream

from .support import webtest_app

pytestmark = pytest.mark.timeout(30)


def endless_events(environ: Any, start_response: Any) -> list[bytes]:
    stream = current_response().stream
    sse = SSE(stream, event="tick")
    n = 0
    while not stream.wait(0.001):
        sse.write({"n": n}, id=str(n))
        n += 1
    return []


@pytest.mark.parametrize("wrap", ["wsgi", "webtest", "werkzeug"])
def test_read_events_from_an_endless_stream(live: Any, wrap: str) -> None:
    """SPEC 7.1: N events from an endless stream, with WebTest's and Werkzeug's clients."""
    mw = live(endless_events)
    app = {"wsgi": mw, "webtest": webtest_app(mw), "werkzeug": Client(mw)}[wrap]
    with open_stream(app, "/ticks") as response:
        assert response.status_code == 200
        events = response.read_events(3)
    assert [(e.event, e.id, e.json()) for e in events] == [
        ("tick", "0", {"n": 0}), ("tick", "1", {"n": 1}), ("tick", "2", {"n": 2})]
    assert mw.wait_idle(10)  # closing made the producer stop


def test_a_stalled_stream_fails_the_read_clearly(live: Any) -> None:
    """SPEC 3.6: a read that gets nothing fails with what arrived, not a hang."""
    release = threading.Event()

    def stalls(environ: Any, start_response: Any) -> list[bytes]:
        current_response().stream.write(b"one")
        release.wait(10)
        return []

    with open_stream(live(stalls)) as response:
        assert response.read_chunks(1) == [b"one"]
        expected = r"no chunk within 0.2 s; received so far: \[b'one'\]"
        with pytest.raises(AssertionError, match=expected):
            response.next_chunk(timeout=0.2)
        release.set()


def test_read_past_the_end_fails_clearly(live: Any) -> None:
    """SPEC 3.4: asking for more than the body holds says how much there was."""
    app = live(lambda environ, sr: [b"a", b"b"])
    with open_stream(app) as response, pytest.raises(AssertionError, match="ended after"):
        response.read_chunks(5)


def test_plain_apps_work_too() -> None:
    """SPEC 1.3: the helper also reads apps that are not live."""

    def plain(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"x"
        yield b"y"

    with open_stream(plain) as response:
        assert response.read_all() == b"xy"


@pytest.mark.parametrize(("chunks", "expected"), [
    ([b"data: a\n\n"], [Event("a")]),
    ([b"data: a\r\n\r\n"], [Event("a")]),
    ([b"data: a\r", b"\ndata: b\r\r"], [Event("a\nb")]),
    ([b": comment\n", b"data:no space\n\n"], [Event("no space")]),
    ([b"event: e\nid: 1\nretry: 50\ndata: x\n\n", b"data: y\n\n"],
     [Event("x", "e", "1", 50), Event("y", "message", "1")]),
    ([b"retry: soon\ndata: z\n\n"], [Event("z")]),
    ([b"id\n\ndata\n\n"], [Event("", "message", "")]),
    ([b"event: only\n\n"], []),
])  # fmt: skip
def test_parser_follows_whatwg(chunks: list[bytes], expected: list[Event]) -> None:
    """SPEC 7.1: the helpers' parser: line breaks, comments, id persistence, retry."""
    parser = SSEParser()
    events = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    assert events == expected
