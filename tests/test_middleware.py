"""LiveMiddleware in process: the shape (SPEC 1), commit (2), disconnects (4), errors (5)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import pytest

from live_wsgi import (
    SSE,
    ClientDisconnected,
    CommitTimeout,
    HeadersAlreadySent,
    LiveMiddleware,
    ResponseAborted,
    StreamClosed,
    current_response,
    send_stream,
)

from .support import WAIT, ClosingIterable, Recorder, chunks, open_stream, wait, webtest_app

pytestmark = pytest.mark.timeout(30)


# -- 1. The shape -------------------------------------------------------------


def test_only_server_thread_calls_start_response(live: Any) -> None:
    """SPEC 1.1: the server's start_response and the body bytes stay on S."""
    seen = Recorder()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        seen["app thread"] = threading.current_thread()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"a", b"b"]

    calls = []

    def server_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        calls.append(threading.current_thread())
        return lambda data: None

    mw = live(app)
    body = mw({"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.multithread": True},
              server_start_response)
    data = b"".join(body)
    body.close()
    assert data == b"ab"
    assert calls == [threading.current_thread()]
    assert seen["app thread"] is not threading.current_thread()
    assert seen["app thread"].name.startswith("live_wsgi")


def test_three_ways_to_write_mix_in_order(live: Any) -> None:
    """SPEC 1.2: the write callable, stream.write and the iterable, mixed, in order."""
    iterable = ClosingIterable([b"4 iterable\n", b"5 iterable\n"])

    def app(environ: Any, start_response: Any) -> Any:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"1 legacy write\n")
        current_response().stream.write("2 stream\n")
        write(b"3 legacy again\n")
        return iterable

    response = webtest_app(live(app), lint=True).get("/")
    assert response.body == (b"1 legacy write\n2 stream\n3 legacy again\n"
                             b"4 iterable\n5 iterable\n")
    assert len(iterable.close_calls) == 1
    assert iterable.close_calls[0].startswith("live_wsgi")


def test_chunks_reach_server_while_app_runs(live: Any) -> None:
    """SPEC 1.2: each item of a returned iterable is streamed as W produces it."""
    gate = [threading.Event() for _ in range(3)]

    def produce(index: int) -> None:
        if index:
            wait(gate[index], f"gate {index}")

    iterable = ClosingIterable([b"one", b"two", b"three"], before_item=produce)
    response = open_stream(live(lambda environ, sr: iterable))
    body = chunks(response)
    assert next(body) == b"one"  # item 2 is not produced until the gate opens
    gate[1].set()
    assert next(body) == b"two"
    gate[2].set()
    assert next(body) == b"three"
    assert list(body) == []
    response.close()
    wait(iterable.closed, "close()")
    assert len(iterable.close_calls) == 1


def test_app_without_start_response_answers_200(live: Any) -> None:
    """SPEC 1.2: an app that never calls start_response answers 200."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        current_response().stream.write(b"hi")
        return []

    response = webtest_app(live(app), lint=True).get("/")
    assert response.status == "200 OK"
    assert response.body == b"hi"


def test_start_response_sets_status_and_adds_headers(live: Any) -> None:
    """SPEC 1.2: start_response sets the status and adds to response.headers."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        response = current_response()
        response.headers["X-Before"] = "1"
        start_response("201 Created", [("X-From-Start", "2")])
        assert response.status == "201 Created"
        assert response.status_code == 201
        assert response.headers["X-Before"] == "1"
        assert response.headers["X-From-Start"] == "2"
        return [b"made"]

    response = webtest_app(live(app), lint=True).post("/", status=201)
    assert response.headers["X-Before"] == "1"
    assert response.headers["X-From-Start"] == "2"


def test_start_response_twice_without_exc_info_is_refused(live: Any) -> None:
    """SPEC 1.2: PEP 3333 start_response rules hold on the worker."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        start_response("200 OK", [])
        return []

    with pytest.raises(RuntimeError, match="second time without exc_info"):
        webtest_app(live(app)).get("/")


def test_start_response_with_exc_info_replaces_before_commit(live: Any) -> None:
    """SPEC 1.2: exc_info before the commit replaces status and headers."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("X-Old", "1")])
        try:
            raise ValueError("oops")
        except ValueError:
            import sys

            start_response("500 Internal Server Error", [("X-New", "1")], sys.exc_info())
        return [b"error page"]

    response = webtest_app(live(app)).get("/", status=500)
    assert "X-Old" not in response.headers
    assert response.headers["X-New"] == "1"


def test_when_predicate_passes_other_requests_through(live: Any) -> None:
    """SPEC 1.3: non-matching requests run on the server thread, no hop."""
    threads = {}

    def app(environ: Any, start_response: Any) -> list[bytes]:
        threads[environ["PATH_INFO"]] = threading.current_thread()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    mw = live(app, when=lambda environ: environ["PATH_INFO"].startswith("/live"))
    plain = webtest_app(mw, lint=True).get("/plain")
    assert threads["/plain"] is threading.current_thread()
    assert plain.headers["Content-Length"] == "2"  # untouched
    assert "X-Accel-Buffering" not in plain.headers
    webtest_app(mw, lint=True).get("/live")
    assert threads["/live"] is not threading.current_thread()


def test_when_predicate_may_override_options(live: Any) -> None:
    """SPEC 1.3: a predicate may return per-route options; unknown keys are refused."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    mw = live(app, when=lambda environ: {"queue_size": 1, "write_timeout": 1})
    assert webtest_app(mw).get("/").body == b"ok"
    bad = live(app, when=lambda environ: {"queue_sise": 1})
    with pytest.raises(ValueError, match="unknown live option"):
        webtest_app(bad).get("/")


def test_route_options_keep_hooks_and_context_variables(live: Any) -> None:
    """SPEC 6.2: a per-route override keeps the middleware's hooks and ContextVar exclusions."""
    from contextvars import ContextVar

    class Pool:
        def __init__(self) -> None:
            self.returned = 0

        def teardown(self, environ: Any, error: BaseException | None) -> None:
            self.returned += 1

    pool = Pool()
    connection: ContextVar[str] = ContextVar("connection")
    mw = live(lambda environ, sr: [b"ok"], teardown=pool.teardown,
              excluded_keys=[connection], when=lambda environ: {"heartbeat": 5})
    assert webtest_app(mw).get("/").body == b"ok"
    assert mw.wait_idle(10)
    assert pool.returned == 1  # the very object, not a copy of it
    options = mw.options_for({})
    assert options.exclusions is mw.options.exclusions and options.heartbeat == 5


# -- 2. Commit -----------------------------------------------------------------


@pytest.mark.parametrize("trigger", ["write", "empty write", "close", "return"])
def test_commit_triggers(live: Any, trigger: str) -> None:
    """SPEC 2.1: a write (an empty one too), close or return commits."""
    release = threading.Event()
    done = Recorder()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        response = current_response()
        response.status = "202 Accepted"
        stream = response.stream
        if trigger == "write":
            stream.write(b"x")
        elif trigger == "empty write":
            stream.write(b"")
        elif trigger == "close":
            stream.close()
        else:
            return []
        done["committed"] = response.committed
        wait(release, "release")
        return []

    # open_stream returns once the server thread called start_response, while
    # the app is still blocked (except for "return", which ended the app).
    response = open_stream(live(app))
    assert response.status_code == 202
    release.set()
    response.close()
    if trigger != "return":
        assert done["committed"] is True


def test_error_commits_and_reaches_server(live: Any) -> None:
    """SPEC 2.1: an error commits (the server thread is released by it)."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        raise LookupError("no such thing")

    with pytest.raises(LookupError, match="no such thing"):
        webtest_app(live(app)).get("/")


def test_headers_mutable_before_commit_refused_after(live: Any) -> None:
    """SPEC 2.2: status and headers change freely before commit, raise after."""
    facts = Recorder()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        response = current_response()
        response.status = "404 Not Found"
        assert response.status_code == 404
        response.status_code = 418
        assert response.status == "418 I'm a teapot"
        response.status = 201
        assert response.status == "201 Created"
        response.headers["X-A"] = "1"
        response.headers.add("X-B", "2")
        del response.headers["X-B"]
        response.stream.write(b"body")
        for name, change in [
            ("status", lambda: setattr(response, "status", "500 Oops")),
            ("status_code", lambda: setattr(response, "status_code", 500)),
            ("setitem", lambda: response.headers.__setitem__("X-A", "2")),
            ("add", lambda: response.headers.add("X-C", "3")),
            ("set", lambda: response.headers.set("X-C", "3")),
            ("del", lambda: response.headers.__delitem__("X-A")),
            ("extend", lambda: response.headers.extend({"X-D": "4"})),
            ("update", lambda: response.headers.update({"X-D": "4"})),
            ("setdefault", lambda: response.headers.setdefault("X-E", "5")),
            ("clear", lambda: response.headers.clear()),
            ("pop", lambda: response.headers.pop("X-A")),
            ("remove", lambda: response.headers.remove("X-A")),
            ("content_length", lambda: setattr(response, "content_length", 3)),
        ]:
            with pytest.raises(HeadersAlreadySent):
                change()
            facts[name] = "refused"
        facts["headers"] = dict(response.headers)
        return []

    response = webtest_app(live(app), lint=True).get("/", status=201)
    assert response.body == b"body"
    assert facts["headers"]["X-A"] == "1"
    assert len(facts.facts) == 14


@pytest.mark.parametrize(
    "status",
    ["200 OK\r\nX-Injected: 1", "200\nOK", "abc", "99 Too Low", "200 OK\x00", 200.0],
)
def test_bad_status_is_refused(live: Any, status: Any) -> None:
    """SPEC 2.2: a status can never inject a header; bad ones raise clearly."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        current_response().status = status
        return []

    with pytest.raises((ValueError, TypeError), match="status"):
        webtest_app(live(app)).get("/")


@pytest.mark.parametrize(
    ("name", "value"),
    [("X-Evil", "a\x00b"), ("Bad Name", "v"), ("X-Uni", "caf\u00e9\u2603")],
)
def test_bad_headers_fail_before_commit(live: Any, name: str, value: str) -> None:
    """SPEC 2.3: unsafe headers fail the request before commit (a 500), never go out."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        current_response().headers.add(name, value)
        current_response().stream.write(b"never sent")
        return []

    with pytest.raises(ValueError, match="header"):
        webtest_app(live(app)).get("/")


def test_commit_defaults(live: Any) -> None:
    """SPEC 2.3: a response streamed live gets no-cache, no Content-Length,
    X-Accel-Buffering, no hop-by-hop header, a Content-Type."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [
            ("Content-Length", "5"), ("Connection", "keep-alive"),
            ("Keep-Alive", "timeout=5"), ("Transfer-Encoding", "chunked"),
            ("Upgrade", "h2c"), ("Trailer", "X-T"),
        ])  # fmt: skip
        write(b"hello world")  # streamed live: the commit is this write
        return []

    response = open_stream(live(app))  # the headers exactly as the server gets them
    headers = {k.lower(): v for k, v in response.headers.items()}
    assert headers["cache-control"] == "no-cache"
    assert headers["x-accel-buffering"] == "no"
    assert headers["content-type"] == "text/plain; charset=utf-8"
    for hop in ("content-length", "connection", "keep-alive", "transfer-encoding",
                "upgrade", "trailer"):
        assert hop not in headers
    assert b"".join(chunks(response)) == b"hello world"
    response.close()


def test_commit_defaults_keep_what_the_app_set(live: Any) -> None:
    """SPEC 2.3: the app's own Cache-Control, X-Accel-Buffering, Content-Type stay."""

    def app(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [("Cache-Control", "private, max-age=5"),
                                  ("X-Accel-Buffering", "yes"),
                                  ("Content-Type", "text/csv")])
        yield b"a,b\n"  # streamed live

    response = webtest_app(live(app), lint=True).get("/")
    assert response.headers["Cache-Control"] == "private, max-age=5"
    assert response.headers["X-Accel-Buffering"] == "yes"
    assert response.headers["Content-Type"] == "text/csv"


def test_known_length_keeps_content_length(live: Any) -> None:
    """SPEC 2.3: Content-Length stays when the app declared a known length."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        current_response().content_length = 6
        current_response().stream.write(b"abc")
        current_response().stream.write(b"def")
        return []

    response = webtest_app(live(app), lint=True).get("/")
    assert response.headers["Content-Length"] == "6"
    assert response.body == b"abcdef"


def test_list_body_of_the_declared_length_keeps_content_length(live: Any) -> None:
    """SPEC 2.3: a start_response Content-Length matching a whole list body is kept."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "11")])
        return [b"hello", b" ", b"world"]

    response = webtest_app(live(app), lint=True).get("/")
    assert response.headers["Content-Length"] == "11"
    assert response.body == b"hello world"


@pytest.mark.parametrize("body", [
    [b"hello"],  # a list shorter than declared
    ClosingIterable([b"hello"]),  # an iterable shorter than it promised
])  # fmt: skip
def test_a_whole_response_shorter_than_declared_is_cut(live: Any, body: Any) -> None:
    """SPEC 2.3, 5.2: a whole response keeps its declared Content-Length; a body
    that falls short of it is cut, never passed off as complete."""

    def app(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Length", "11")])
        return body

    response = open_stream(live(app))
    assert response.headers["Content-Length"] == "11"
    received = []
    with pytest.raises(ResponseAborted):
        received.extend(chunks(response))
    assert b"".join(received) == b"hello"
    response.close()


def test_an_iterable_of_a_declared_length_leaves_as_made(live: Any) -> None:
    """SPEC 2.3: an iterable with a declared length is a whole response: the
    app's own headers, no defaults added, its length kept."""

    def app(environ: Any, start_response: Any) -> Any:
        start_response("302 Found", [("Location", "/next"), ("Content-Length", "11")])
        return ClosingIterable([b"hello ", b"world"])

    response = open_stream(live(app))
    assert response.status == "302 Found"
    assert list(response.headers.items()) == [("Location", "/next"), ("Content-Length", "11")]
    assert b"".join(chunks(response)) == b"hello world"
    response.close()


def test_large_list_body_streams_through_a_small_queue(live: Any) -> None:
    """SPEC 3.1: a list body bigger than the queue is not held back until it ends."""
    body = [bytes([65 + n % 26]) * 65536 for n in range(40)]

    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Length", str(40 * 65536))])
        return body

    response = open_stream(live(app, queue_size=2))
    assert response.headers["Content-Length"] == str(40 * 65536)
    assert b"".join(chunks(response)) == b"".join(body)
    response.close()


def test_headers_object_taken_before_commit_is_frozen_after(live: Any) -> None:
    """SPEC 2.2: start_response headers show in response.headers; a reference
    taken before the commit refuses changes after it."""
    seen = Recorder()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("201 Created", [("X-From-App", "1")])
        headers = current_response().headers
        seen["before"] = headers.get("X-From-App")
        headers["X-Added"] = "2"
        current_response().stream.write(b"x")
        try:
            headers["X-Late"] = "3"
        except HeadersAlreadySent as exc:
            seen["error"] = exc
        return []

    response = webtest_app(live(app), lint=True).get("/", status=201)
    assert seen["before"] == "1"
    assert response.headers["X-From-App"] == "1"
    assert response.headers["X-Added"] == "2"
    assert "X-Late" not in response.headers
    assert isinstance(seen["error"], HeadersAlreadySent)


def test_commit_timeout_counts_from_the_start_of_the_job(live: Any) -> None:
    """SPEC 2.4: a job that waited in the queue, then hangs, gets 504 after
    commit_timeout from its start (not after queue_timeout)."""
    mw, held, release = _occupy(live, 1, queue_timeout=20, commit_timeout=0.5)
    hang = threading.Event()
    original = mw.app

    def app(environ: Any, start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/hang":
            wait(hang, "hang")
            return []
        return original(environ, start_response)

    mw.app = app
    result: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: result.setdefault("r", webtest_app(mw).get("/hang", status="*")))
    thread.start()
    release.set()  # the held stream ends: /hang starts on the freed worker
    for r in held:
        assert b"".join(chunks(r)) == b"holding\n"
        r.close()
    thread.join(10)  # far below queue_timeout=20: the 504 came from commit_timeout
    assert not thread.is_alive(), "S kept waiting past commit_timeout"
    hang.set()
    assert result["r"].status_int == 504
    assert mw.wait_idle(10)


def _occupy(live: Any, n: int, **options: Any) -> tuple[Any, list[Any], threading.Event]:
    """A middleware with an n-thread pool, every thread held by an open stream."""
    release = threading.Event()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/hold":
            current_response().stream.write(b"holding\n")
            wait(release, "release")
            return []
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"served"]

    mw = live(app, max_workers=n, **options)
    held = [open_stream(mw, "/hold") for _ in range(n)]
    return mw, held, release


def test_saturated_pool_answers_503_with_retry_after(live: Any) -> None:
    """SPEC 2.4: with every worker busy, request N+1 gets 503 + Retry-After, never runs."""
    ran = threading.Event()
    mw, held, release = _occupy(live, 2, queue_timeout=0.2, retry_after=7)
    original = mw.app

    def spy(environ: Any, start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/extra":
            ran.set()
        return original(environ, start_response)

    mw.app = spy
    response = webtest_app(mw, lint=True).get("/extra", status=503)
    assert response.headers["Retry-After"] == "7"
    release.set()
    for r in held:
        assert b"".join(chunks(r)) == b"holding\n"
        r.close()
    assert mw.wait_idle(10)
    assert not ran.is_set(), "the job that got 503 must never run"
    assert webtest_app(mw, lint=True).get("/again").body == b"served"


def test_saturated_pool_gives_event_source_a_retry(live: Any) -> None:
    """SPEC 2.4: an EventSource gets 200, text/event-stream, retry:, and a clean end."""
    mw, held, release = _occupy(live, 1, queue_timeout=0.2, retry_after=3)
    response = webtest_app(mw, lint=True).get("/sse", headers={"Accept": "text/event-stream"})
    assert response.status_int == 200
    assert response.content_type == "text/event-stream"
    assert response.body == b"retry: 3000\n\n"
    curl_like = webtest_app(mw).get("/x", headers={"Accept": "*/*"}, status=503)
    assert curl_like.status_int == 503
    release.set()
    for r in held:
        r.close()


def test_commit_timeout_answers_504_and_next_write_raises(live: Any) -> None:
    """SPEC 2.4: commit_timeout bounds the wait for commit; W's next write raises."""
    release = threading.Event()
    seen = Recorder()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        wait(release, "release")
        try:
            current_response().stream.write(b"too late")
        except CommitTimeout as exc:
            seen["error"] = exc
        seen.done.set()
        return []

    response = webtest_app(live(app, commit_timeout=0.2), lint=True).get("/", status=504)
    assert response.status_int == 504
    release.set()
    wait(seen.done)
    assert isinstance(seen["error"], CommitTimeout)
    assert isinstance(seen["error"], TimeoutError)


@pytest.mark.parametrize(("method", "status"), [
    ("HEAD", "200 OK"), ("GET", "204 No Content"), ("GET", "304 Not Modified"),
])  # fmt: skip
def test_bodiless_responses_never_strand_the_worker(live: Any, method: str, status: str) -> None:
    """SPEC 2.5: HEAD, 204, 304 commit without a body; writes never block W."""
    seen = Recorder()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response(status, [("Content-Type", "text/plain")])
        stream = current_response().stream
        for _ in range(50):  # far more than queue_size=1
            stream.write(b"x" * 70_000)
        seen.done.set()
        wait(seen.facts.setdefault("go", threading.Event()), "go")
        try:
            while True:  # an endless producer must stop once the response is over
                stream.write(b"more")
        except ClientDisconnected:
            seen["stopped"] = True
        return []

    seen["go"] = threading.Event()
    mw = live(app, queue_size=1)
    response = open_stream(mw, "/", method=method)
    wait(seen.done, "50 writes")
    assert b"".join(chunks(response)) == b""
    response.close()
    seen["go"].set()
    assert mw.wait_idle(10)
    assert seen["stopped"] is True


# -- 4. Disconnects ---------------------------------------------------------


def _endless(seen: Recorder, ignore: bool = False) -> Any:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        stream = current_response().stream
        stream.ignore_disconnect = ignore
        dropped = 0
        try:
            for i in range(100_000):
                if stream.write(b"tick %d\n" % i) == 0:
                    dropped += 1
                    if dropped == 3:
                        break
        except ClientDisconnected as exc:
            seen["error"] = exc
            raise
        finally:
            seen["dropped"] = dropped
            seen["connected"] = stream.connected
        return []

    return app


def test_disconnect_raises_in_producer_and_frees_the_thread(live: Any) -> None:
    """SPEC 4.1, 4.3: an early close aborts; the next write raises; the thread is freed."""
    seen = Recorder()
    mw = live(_endless(seen), queue_size=2)
    response = open_stream(mw)
    assert next(chunks(response)).startswith(b"tick 0")
    response.close()  # the server closes the body early: the client left
    assert mw.wait_idle(10)
    assert isinstance(seen["error"], ClientDisconnected)
    assert seen["connected"] is False
    assert mw.active_streams == 0


def test_ignore_disconnect_drops_writes(live: Any) -> None:
    """SPEC 4.1: with ignore_disconnect the writes after a disconnect are dropped."""
    seen = Recorder()
    mw = live(_endless(seen, ignore=True), queue_size=2)
    response = open_stream(mw)
    next(chunks(response))
    response.close()
    assert mw.wait_idle(10)
    assert seen.get("error") is None
    assert seen["dropped"] == 3


def test_uncaught_disconnect_runs_on_error_but_logs_info(live: Any, caplog: Any) -> None:
    """SPEC 4.1 and SPEC 5.3: an uncaught ClientDisconnected runs on_error, logs at INFO."""
    seen = Recorder()
    reported = []
    called = []

    def app(environ: Any, start_response: Any) -> list[bytes]:
        current_response().stream.on_error(called.append)
        return _endless(seen)(environ, start_response)  # type: ignore[no-any-return]

    mw = live(app, queue_size=2, on_error=lambda environ, exc: reported.append(exc))
    caplog.set_level(logging.DEBUG, logger="live_wsgi")
    response = open_stream(mw)
    next(chunks(response))
    response.close()
    assert mw.wait_idle(10)
    assert len(called) == 1 and isinstance(called[0], ClientDisconnected)
    assert reported == []
    records = [r for r in caplog.records if r.name == "live_wsgi"]
    assert records and all(r.levelno <= logging.INFO for r in records)


def test_blocked_writer_wakes_on_disconnect(live: Any) -> None:
    """SPEC 4.3: a producer blocked on a full queue is released by the abort."""
    seen = Recorder()
    mw = live(_endless(seen), queue_size=1, write_timeout=None)
    response = open_stream(mw)
    body = chunks(response)
    next(body)
    # Without reading further the producer soon blocks on the full queue,
    # and nothing but the abort can wake it (write_timeout is off).
    response.close()
    assert mw.wait_idle(10)
    assert isinstance(seen["error"], ClientDisconnected)


# -- 5. Errors ---------------------------------------------------------------


def test_error_before_commit_is_raised_on_server_thread(live: Any) -> None:
    """SPEC 5.1: the outer stack sees the app's exception, on its own thread."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        current_response().headers["X-A"] = "1"
        raise KeyError("missing")

    caught = []

    def outer(environ: Any, start_response: Any) -> Any:
        try:
            return mw(environ, start_response)
        except KeyError as exc:
            caught.append((exc, threading.current_thread()))
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
            return [b"handled outside"]

    mw = live(app)
    response = webtest_app(outer, lint=True).get("/", status=500)
    assert response.body == b"handled outside"
    assert caught[0][1] is threading.current_thread()
    assert "app" in [f.name for f in _frames(caught[0][0])]  # traceback reaches into the app


def _frames(exc: BaseException) -> list[Any]:
    import traceback

    return traceback.extract_tb(exc.__traceback__)


def test_error_after_commit_logs_reports_and_cuts(live: Any, caplog: Any) -> None:
    """SPEC 5.2: logged once, on_error callbacks (a failing one logged), reporter, body cut."""
    calls: list[str] = []
    reported = []

    def app(environ: Any, start_response: Any) -> list[bytes]:
        stream = current_response().stream

        @stream.on_error
        def first(exc: BaseException) -> None:
            calls.append("first")
            raise OSError("callback broke")

        stream.on_error(lambda exc: calls.append(f"second {exc}"))
        stream.write(b"partial")
        raise RuntimeError("producer broke")

    mw = live(app, on_error=lambda environ, exc: reported.append((environ["PATH_INFO"], exc)))
    caplog.set_level(logging.INFO, logger="live_wsgi")
    response = open_stream(mw, "/report")
    body = chunks(response)
    assert next(body) == b"partial"
    with pytest.raises(ResponseAborted):
        next(body)
    response.close()
    assert mw.wait_idle(10)
    assert calls == ["first", "second producer broke"]
    assert [(path, str(exc)) for path, exc in reported] == [("/report", "producer broke")]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len([r for r in errors if "producer broke" in str(r.exc_info)]) == 1
    assert any("callback" in r.getMessage() for r in errors)


def test_other_status_after_commit_cuts_the_body(live: Any, caplog: Any) -> None:
    """SPEC 2.2, 5.2: start_response with another status after the commit (a
    framework's error page) raises HeadersAlreadySent: logged, reported, body cut,
    never the error page appended to the streamed bytes with a clean end."""
    reported: list[BaseException] = []

    def app(environ: Any, start_response: Any) -> list[bytes]:
        current_response().stream.write(b"id,name\n")
        start_response("500 Internal Server Error", [("Content-Type", "text/html")])
        return [b"<h1>Internal Server Error</h1>"]

    mw = live(app, on_error=lambda environ, exc: reported.append(exc))
    caplog.set_level(logging.INFO, logger="live_wsgi")
    response = open_stream(mw, "/export.csv")
    body = chunks(response)
    assert next(body) == b"id,name\n"
    with pytest.raises(ResponseAborted):
        next(body)
    response.close()
    assert mw.wait_idle(10)
    assert [type(exc) for exc in reported] == [HeadersAlreadySent]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("500 Internal Server Error" in str(r.exc_info) for r in errors)


def test_same_status_after_commit_only_appends_the_body(live: Any) -> None:
    """SPEC 2.2: start_response repeating the committed status after the commit
    (a framework ending a view that wrote) is accepted; the body follows."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        response = current_response()
        response.status_code = 201
        response.stream.write(b"head ")
        # The same code with the framework's own reason phrase.
        start_response("201 CREATED", [("Content-Type", "text/html; charset=UTF-8")])
        return [b"tail"]

    assert webtest_app(live(app)).get("/", status=201).body == b"head tail"


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exceptions_before_commit_hang_nothing(live: Any, exc_type: type) -> None:
    """SPEC 5.4: KeyboardInterrupt/SystemExit release S; W is cleaned up."""
    iterable = ClosingIterable([b"a"], before_item=lambda i: (_ for _ in ()).throw(exc_type()))
    mw = live(lambda environ, sr: iterable)
    with pytest.raises(exc_type):
        open_stream(mw)
    assert mw.wait_idle(10)
    assert len(iterable.close_calls) == 1


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exceptions_after_commit_hang_nothing(live: Any, exc_type: type) -> None:
    """SPEC 5.4: after commit the stream is cut and S is released."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        current_response().stream.write(b"started")
        raise exc_type()

    mw = live(app)
    response = open_stream(mw)
    with pytest.raises(ResponseAborted):
        b"".join(chunks(response))
    response.close()
    assert mw.wait_idle(10)


# -- close() of the app's iterable on every path (SPEC 1.2) -------------------


def _exit_paths() -> list[str]:
    return ["normal", "error before commit", "error after commit",
            "early close", "write timeout", "commit timeout"]


@pytest.mark.parametrize("path", _exit_paths())
def test_app_iterable_closed_once_on_worker(live: Any, path: str) -> None:
    """SPEC 1.2: close() of the app's iterable runs on W exactly once, whatever happens."""
    release = threading.Event()

    def before(index: int) -> None:
        if path == "commit timeout" and index == 0:
            wait(release, "release")

    items = [b"x" * 70_000 for _ in range(20)]
    fail_at = {"error before commit": 0, "error after commit": 2}.get(path)
    iterable = ClosingIterable(items, fail_at=fail_at, before_item=before)
    options: dict[str, Any] = {"queue_size": 1}
    if path == "write timeout":
        options["write_timeout"] = 0.2
    if path == "commit timeout":
        options["commit_timeout"] = 0.2
    mw = live(lambda environ, sr: iterable, **options)
    if path == "error before commit":
        with pytest.raises(ValueError):
            open_stream(mw)
    elif path == "commit timeout":
        response = open_stream(mw)
        assert response.status_code == 504
        release.set()
        response.close()
    else:
        response = open_stream(mw)
        body = chunks(response)
        next(body)
        if path == "normal":
            assert len(b"".join(body)) == 19 * 70_000
        elif path == "error after commit":
            with pytest.raises(ResponseAborted):
                list(body)
        elif path == "write timeout":
            wait(iterable.closed, "close after the write timeout")
        response.close()
    assert mw.wait_idle(10)
    assert len(iterable.close_calls) == 1, iterable.close_calls
    assert iterable.close_calls[0].startswith("live_wsgi")


# -- arguments -------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_workers": 0}, "max_workers"),
    ({"queue_size": 0}, "queue_size"),
    ({"queue_timeout": 0}, "queue_timeout"),
    ({"queue_timeout": None}, "queue_timeout"),
    ({"commit_timeout": -1}, "commit_timeout"),
    ({"write_timeout": "5"}, "write_timeout"),
    ({"on_error": 3}, "on_error"),
    ({"when": "yes"}, "when"),
    ({"retry_after": -1}, "retry_after"),
    ({"excluded_keys": "db"}, "excluded_keys"),
])  # fmt: skip
def test_bad_arguments_are_refused_clearly(kwargs: dict[str, Any], message: str) -> None:
    """SPEC 2.4: options are validated in __init__, with a message naming them."""
    with pytest.raises((ValueError, TypeError), match=message):
        LiveMiddleware(lambda e, s: [], **kwargs)


def test_executor_and_max_workers_are_exclusive() -> None:
    """SPEC 2.4: a given executor excludes max_workers."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool, pytest.raises(ValueError, match="not both"):
        LiveMiddleware(lambda e, s: [], executor=pool, max_workers=2)


def test_user_executor_is_used_and_not_shut_down(live: Any) -> None:
    """SPEC 2.4: the app runs on a user's executor, which the middleware leaves open."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2, thread_name_prefix="mine") as pool:
        names = []

        def app(environ: Any, start_response: Any) -> list[bytes]:
            names.append(threading.current_thread().name)
            return [b"ok"]

        mw = live(app, executor=pool)
        assert webtest_app(mw).get("/").body == b"ok"
        mw.shutdown()
        assert pool.submit(lambda: 1).result(5) == 1
    assert names[0].startswith("mine")


def test_write_after_close_in_app_raises_stream_closed(live: Any) -> None:
    """SPEC 3.3: a write after close raises StreamClosed in the app."""
    seen = Recorder()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        stream = current_response().stream
        stream.write(b"a")
        stream.close()
        stream.close()
        try:
            stream.write(b"b")
        except StreamClosed as exc:
            seen["error"] = exc
        return []

    assert webtest_app(live(app), lint=True).get("/").body == b"a"
    assert isinstance(seen["error"], StreamClosed)


def test_shutdown_wakes_waits_allows_farewell_then_ends_cleanly(live: Any) -> None:
    """SPEC 8.3: shutdown(grace): waits return, farewells go out, the rest end complete."""
    seen = Recorder()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        stream = current_response().stream
        stream.write(b"hello\n")
        if environ["PATH_INFO"] == "/polite":
            seen["woken"] = stream.wait(60)
            seen["shutting down"] = stream.shutting_down
            stream.write(b"farewell\n")
            return []
        # A producer that ignores shutdown: its stream is ended for it.
        try:
            while True:
                stream.wait(0.05)
                stream.write(b".")
        except StreamClosed:
            seen["stubborn stopped"] = True
        return []

    mw = live(app)
    polite = open_stream(mw, "/polite")
    stubborn = open_stream(mw, "/stubborn")
    assert next(chunks(polite)) == b"hello\n"
    finished = threading.Event()
    result = []
    threading.Thread(target=lambda: (result.append(mw.shutdown(grace=0.3)), finished.set())).start()
    assert b"".join(chunks(polite)) == b"farewell\n"  # complete: iteration ended normally
    stubborn_body = b"".join(chunks(stubborn))  # ends cleanly after the grace period
    wait(finished, "shutdown")
    polite.close()
    stubborn.close()
    assert result == [True]
    assert stubborn_body.startswith(b"hello\n")
    assert seen["woken"] is True and seen["shutting down"] is True
    assert seen["stubborn stopped"] is True
    assert webtest_app(mw).get("/late", status=503).status_int == 503


# -- Options that no lock can wait for -------------------------------------------


@pytest.mark.parametrize("name", ["queue_timeout", "commit_timeout", "write_timeout",
                                  "heartbeat", "probe_interval"])
@pytest.mark.parametrize("value", [float("inf"), threading.TIMEOUT_MAX * 2, float("nan")])
def test_timeouts_no_lock_can_wait_for_are_refused_up_front(name: str, value: float) -> None:
    """SPEC 2.4: a timeout above threading.TIMEOUT_MAX (or inf, nan) is refused in
    __init__ with a message naming it, never at every request after submission."""
    with pytest.raises(ValueError, match=name):
        LiveMiddleware(lambda environ, sr: [], **{name: value})


def test_heartbeat_message_says_none_disables() -> None:
    """SPEC 4.2: the heartbeat error says None disables it."""
    with pytest.raises(ValueError, match="None disables"):
        LiveMiddleware(lambda environ, sr: [], heartbeat=0)


def test_route_timeouts_are_checked_before_the_app_runs(live: Any) -> None:
    """SPEC 2.4: an unusable per-route timeout fails the request before its job
    exists: the app never runs."""
    ran = []
    mw = live(lambda environ, sr: ran.append(1) or [],
              when=lambda environ: {"queue_timeout": float("inf")})
    with pytest.raises(ValueError, match="queue_timeout"):
        webtest_app(mw).get("/")
    assert ran == []


# -- Shutdown against arrivals, and downloads ------------------------------------


class _ArrivalEnviron(dict):  # type: ignore[type-arg]
    """An environ that lets the test hold a request inside the middleware just
    before it registers its job, to let shutdown() begin meanwhile."""

    def __init__(self, base: dict[str, Any], arrived: threading.Event,
                 go: threading.Event) -> None:
        super().__init__(base)
        self.arrived = arrived
        self.go = go

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        if key == "live_wsgi.response":
            self.arrived.set()
            wait(self.go, "the test to start shutdown")


def test_shutdown_sees_a_request_that_arrives_while_it_runs(live: Any) -> None:
    """SPEC 8.3: shutdown() and an arriving request are ordered: the request is
    either refused (503) or seen and ended by shutdown, never left running."""
    from werkzeug.test import EnvironBuilder

    def app(environ: Any, start_response: Any) -> list[bytes]:
        stream = current_response().stream
        stream.write(b"hi")
        if environ["PATH_INFO"] == "/busy":
            # Ignores shutdown and keeps working through the grace period,
            # until its stream is ended under it.
            slow_work = threading.Event()  # never set
            with contextlib.suppress(StreamClosed):
                while True:
                    slow_work.wait(0.01)
                    stream.write(b".")
            return []
        while not stream.wait(WAIT):
            pass
        stream.write(b"bye")
        return []

    mw = live(app)
    busy = open_stream(mw, "/busy")
    assert next(chunks(busy)) == b"hi"
    reader = threading.Thread(target=lambda: b"".join(chunks(busy)))
    reader.start()
    arrived, go = threading.Event(), threading.Event()
    environ = _ArrivalEnviron(EnvironBuilder("/late").get_environ(), arrived, go)
    environ["wsgi.multithread"] = True
    statuses: list[str] = []
    request = threading.Thread(target=lambda: mw(environ, lambda s, h, e=None: statuses.append(s)))
    request.start()
    wait(arrived, "the request to arrive")
    result: list[bool] = []
    stopper = threading.Thread(target=lambda: result.append(mw.shutdown(grace=1.0)))
    stopper.start()
    deadline = time.monotonic() + WAIT
    while not mw.closing and time.monotonic() < deadline:
        threading.Event().wait(0.005)  # polling a flag with a deadline
    go.set()
    request.join(WAIT)
    stopper.join(WAIT)
    reader.join(WAIT)
    busy.close()
    assert result == [True]
    assert statuses == ["503 Service Unavailable"]


@pytest.mark.parametrize("kind", ["declared length", "attachment"])
def test_shutdown_cuts_a_download_instead_of_ending_it(live: Any, kind: str) -> None:
    """SPEC 8.3, 5.2: a download (a declared length, a send_stream attachment)
    that shutdown ends early is cut, never ended with a clean EOF."""
    wrote = threading.Event()
    row = b"row,of,data\n"

    def app(environ: Any, start_response: Any) -> list[bytes]:
        if kind == "attachment":
            with send_stream("rows.csv") as stream:
                _rows(stream, row, wrote)
        else:
            current_response().content_length = 100 * len(row)
            _rows(current_response().stream, row, wrote)
        return []

    mw = live(app, queue_size=None)  # the 25 rows wait in the queue unread
    response = open_stream(mw)
    body = chunks(response)
    received = [next(body)]
    wait(wrote, "25 rows")
    assert mw.shutdown(grace=0.05)
    with pytest.raises(ResponseAborted):
        received.extend(body)
    response.close()
    assert 25 <= b"".join(received).count(row) < 100


def _rows(stream: Any, row: bytes, wrote: threading.Event) -> None:
    for _ in range(25):
        stream.write(row)
    wrote.set()
    stream.wait(WAIT)  # the shutdown begins; this producer ignores it
    slow_work = threading.Event()  # never set: each row takes 10 ms to make
    for _ in range(75):
        slow_work.wait(0.01)
        stream.write(row)  # raises StreamClosed once the grace is over


def test_shutdown_ends_an_event_stream_cleanly_with_its_farewell(live: Any) -> None:
    """SPEC 8.3: a stream that is not a download ends cleanly after its farewell."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        sse = SSE(current_response().stream)
        sse.write("hello")
        sse.stream.wait(WAIT)
        sse.write("farewell", event="bye")
        return []

    mw = live(app)
    response = open_stream(mw)
    assert [e.data for e in response.read_events(1, WAIT)] == ["hello"]
    assert mw.shutdown(grace=WAIT)
    assert [(e.event, e.data) for e in response.read_events(1, WAIT)] == [("bye", "farewell")]
    assert response.next_chunk(WAIT) is None  # a clean end
    response.close()


@pytest.mark.parametrize("kind", ["declared length", "attachment"])
def test_shutdown_cuts_a_download_that_had_not_started(live: Any, kind: str) -> None:
    """SPEC 8.3, 5.2: a download still pending when shutdown ends it is judged by
    the headers it commits with: cut, never a body that looks complete."""
    parked, release = threading.Event(), threading.Event()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        if kind == "attachment":
            with send_stream("report.csv") as stream:
                parked.set()
                wait(release, "the shutdown")  # slow work before the first row
                stream.write(b"id,name\n")  # commits, then finds the body ended
        else:
            response = current_response()
            response.content_length = 100
            parked.set()
            wait(release, "the shutdown")
            response.stream.write(b"x" * 10)
        return []

    mw = live(app)
    result: list[Any] = []
    server = threading.Thread(target=lambda: result.append(open_stream(mw)))
    server.start()
    wait(parked, "the producer")
    (job,) = list(mw._jobs)
    stopper = threading.Thread(target=mw.shutdown, kwargs={"grace": 0.01, "timeout": WAIT})
    stopper.start()
    deadline = time.monotonic() + WAIT
    while not job.channel.ended and time.monotonic() < deadline:
        threading.Event().wait(0.001)  # polling a flag with a deadline
    release.set()
    server.join(WAIT)
    stopper.join(WAIT)
    (response,) = result
    with pytest.raises(ResponseAborted):
        b"".join(chunks(response))
    response.close()


def test_an_executor_that_fails_to_submit_leaves_nothing_behind(live: Any) -> None:
    """SPEC 5.4: whatever the executor's submit raises, the job leaves the books."""
    from concurrent.futures import ThreadPoolExecutor

    class Broken(ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            raise MemoryError("no room for the job")

    executor = Broken(1)
    try:
        mw = live(lambda environ, sr: [b"x"], executor=executor)
        with pytest.raises(MemoryError):
            webtest_app(mw).get("/")
        assert mw.active_streams == 0 and mw.wait_idle(0)
    finally:
        executor.shutdown()
