"""Signals: SPEC 7.3."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from live_wsgi import ResponseAborted, current_response, send_stream, signals

from .support import chunks, open_stream, webtest_app

pytestmark = pytest.mark.timeout(30)

NAMES = ["stream_started", "stream_committed", "stream_closed", "client_disconnected",
         "stream_error", "send_stream", "stream_refused"]


@pytest.fixture
def received() -> Iterator[list[tuple[str, Any, dict[str, Any]]]]:
    log: list[tuple[str, Any, dict[str, Any]]] = []
    lock = threading.Lock()
    receivers = []
    for name in NAMES:
        def receiver(sender: Any, _name: str = name, **facts: Any) -> None:
            with lock:
                log.append((_name, sender, facts))
        receivers.append(receiver)
        getattr(signals, name).connect(receiver)
    yield log
    for name, receiver in zip(NAMES, receivers, strict=True):
        getattr(signals, name).disconnect(receiver)


def by_name(log: list[Any]) -> dict[str, dict[str, Any]]:
    return {name: facts for name, _, facts in log}


def test_normal_stream_signals(live: Any, received: list[Any]) -> None:
    """SPEC 7.3: started, committed, closed with path, status, bytes, duration."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("201 Created", [("Content-Type", "text/plain")])
        return [b"12345", b"678"]

    mw = live(app)
    webtest_app(mw).post("/things", status=201)
    assert mw.wait_idle(10)
    names = [name for name, _, _ in received]
    assert names == ["stream_started", "stream_committed", "stream_closed"]
    assert all(sender is mw for _, sender, _ in received)
    facts = by_name(received)
    assert facts["stream_started"]["method"] == "POST"
    assert facts["stream_started"]["path"] == "/things"
    assert facts["stream_committed"]["status"] == "201 Created"
    assert ("Content-Type", "text/plain") in facts["stream_committed"]["headers"]
    closed = facts["stream_closed"]
    assert closed["status"] == "201 Created"
    assert closed["bytes_sent"] == 8
    assert closed["outcome"] == "complete"
    assert closed["duration"] > 0


def test_error_after_commit_signals(live: Any, received: list[Any]) -> None:
    """SPEC 7.3: stream_error carries the error; stream_closed says cut."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        current_response().stream.write(b"part")
        raise ValueError("broken export")

    mw = live(app)
    started = open_stream(mw, "/export")
    with pytest.raises(ResponseAborted):
        b"".join(chunks(started))
    started.close()
    assert mw.wait_idle(10)
    facts = by_name(received)
    assert str(facts["stream_error"]["error"]) == "broken export"
    assert facts["stream_error"]["path"] == "/export"
    assert facts["stream_error"]["status"] == "200 OK"
    assert facts["stream_closed"]["outcome"] == "cut"
    assert "client_disconnected" not in facts


def test_disconnect_signals(live: Any, received: list[Any]) -> None:
    """SPEC 7.3: client_disconnected, and stream_closed with outcome disconnected."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        stream = current_response().stream
        stream.write(b"first")
        stream.wait(30)
        return []

    mw = live(app)
    started = open_stream(mw, "/feed")
    next(chunks(started))
    started.close()
    assert mw.wait_idle(10)
    facts = by_name(received)
    assert facts["client_disconnected"]["path"] == "/feed"
    assert facts["client_disconnected"]["bytes_sent"] == 5
    assert facts["stream_closed"]["outcome"] == "disconnected"
    assert "stream_error" not in facts


def test_send_stream_signal(live: Any, received: list[Any]) -> None:
    """SPEC 7.3: send_stream carries filename, disposition and type."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        with send_stream("report.csv", disposition="inline", size=2) as stream:
            stream.write(b"ok")
        return []

    mw = live(app)
    webtest_app(mw).get("/")
    facts = by_name(received)["send_stream"]
    assert (facts["filename"], facts["disposition"], facts["type"], facts["size"]) == (
        "report.csv", "inline", "text/csv", 2)


def test_failing_receiver_is_logged_not_raised(live: Any, caplog: Any) -> None:
    """SPEC 7.3: a broken receiver never breaks the stream."""

    def broken(sender: Any, **facts: Any) -> None:
        raise RuntimeError("apm down")

    signals.stream_committed.connect(broken)
    try:
        mw = live(lambda environ, sr: [b"fine"])
        assert webtest_app(mw).get("/").body == b"fine"
    finally:
        signals.stream_committed.disconnect(broken)
    assert any("receiver" in r.getMessage() and r.levelno == logging.ERROR
               for r in caplog.records)


def test_refused_requests_are_signalled(live: Any, received: list[Any]) -> None:
    """SPEC 2.4, 7.3: stream_refused for a 503, an EventSource turn-away and a
    refusal at shutdown, with path, answer and reason; the app never runs."""
    release, started = threading.Event(), threading.Event()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        started.set()
        release.wait(10)
        return [b"ok"]

    mw = live(app, max_workers=1, queue_timeout=0.05)
    busy = threading.Thread(target=lambda: webtest_app(mw).get("/busy"))
    busy.start()
    try:
        assert started.wait(10)
        webtest_app(mw).get("/a", status=503)
        webtest_app(mw).get("/b", headers={"Accept": "text/event-stream"})
    finally:
        release.set()
        busy.join(10)
    mw.shutdown()
    webtest_app(mw).get("/c", status=503)
    refused = [(f["path"], f["answer"], f["reason"]) for name, sender, f in received
               if name == "stream_refused" and sender is mw]
    assert refused == [("/a", "503", "busy"), ("/b", "retry", "busy"),
                       ("/c", "503", "shutdown")]


def test_a_stream_committed_receiver_may_use_the_stream(live: Any) -> None:
    """SPEC 7.3: a stream_committed receiver runs during the commit and may reach
    the response's stream (made on first use) without a deadlock."""
    seen: list[bool] = []

    def receiver(sender: Any, **facts: Any) -> None:
        seen.append(facts["environ"]["live_wsgi.response"].stream.closed)

    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    with signals.stream_committed.connected_to(receiver):
        body = live(app)({"REQUEST_METHOD": "GET", "PATH_INFO": "/",
                          "wsgi.multithread": True},
                         lambda status, headers, exc_info=None: None)
        assert b"".join(body) == b"ok"
        body.close()  # type: ignore[attr-defined]
    assert seen == [False]
