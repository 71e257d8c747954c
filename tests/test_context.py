"""Execution state follows the request into the worker: SPEC 6."""

from __future__ import annotations

import threading
from contextvars import ContextVar
from typing import Any

import pytest

from live_wsgi import (
    ClientDisconnected,
    current_response,
    share_local,
    unshare_local,
)
from live_wsgi.context import Exclusions

from .support import Recorder, chunks, open_stream, wait, webtest_app

pytestmark = pytest.mark.timeout(60)

request_id: ContextVar[str] = ContextVar("request_id", default="unset")
db_route: ContextVar[str] = ContextVar("db_route", default="primary")
span: ContextVar[Any] = ContextVar("span")
request_globals = threading.local()
replica_stack = threading.local()


@pytest.fixture(autouse=True)
def shared_locals() -> Any:
    share_local(request_globals, "request_globals")
    share_local(replica_stack, "replica_stack")
    yield
    unshare_local("request_globals")
    unshare_local("replica_stack")


def outer(inner: Any) -> Any:
    """An outer WSGI middleware setting state on the server thread."""

    def middleware(environ: Any, start_response: Any) -> Any:
        rid = environ.get("HTTP_X_REQUEST_ID", "r0")
        request_id.set(rid)
        db_route.set("replica")
        request_globals.user = f"user-of-{rid}"
        replica_stack.roles = ["reading"]
        try:
            return inner(environ, start_response)
        finally:
            environ["outer.after"] = (request_id.get(), db_route.get(),
                                      request_globals.user, replica_stack.roles)

    return middleware


def observe(seen: Recorder) -> Any:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        seen["request_id"] = request_id.get()
        seen["db_route"] = db_route.get()
        seen["user"] = getattr(request_globals, "user", "no user")
        seen["roles"] = getattr(replica_stack, "roles", "no roles")
        seen["thread"] = threading.current_thread()
        # Changes on the worker must not flow back to the server thread.
        request_id.set("changed on W")
        request_globals.user = "changed on W"
        return [b"ok"]

    return app


def test_contextvars_and_shared_locals_follow_the_request(live: Any) -> None:
    """SPEC 6.1: a ContextVar and a registered local set outside are visible on W."""
    seen = Recorder()
    environ: dict[str, Any] = {}

    def capture_environ(environ_: Any, start_response: Any) -> Any:
        environ["ref"] = environ_
        return mw(environ_, start_response)

    mw = live(observe(seen))
    webtest_app(outer(capture_environ)).get("/", headers={"X-Request-Id": "r1"})
    assert seen["thread"] is not threading.current_thread()
    assert seen["request_id"] == "r1"
    assert seen["db_route"] == "replica"
    assert seen["user"] == "user-of-r1"
    assert seen["roles"] == ["reading"]
    # SPEC 6.3: nothing the worker changed came back.
    assert environ["ref"]["outer.after"] == ("r1", "replica", "user-of-r1", ["reading"])


@pytest.mark.parametrize("keys", [["db_route", "replica_stack"], [db_route, "replica_stack"]])
def test_excluded_keys_read_as_defaults_on_worker(live: Any, keys: list[Any]) -> None:
    """SPEC 6.2: excluded vars/locals read their defaults on W; S keeps its values."""
    seen = Recorder()
    environ: dict[str, Any] = {}

    def capture_environ(environ_: Any, start_response: Any) -> Any:
        environ["ref"] = environ_
        return mw(environ_, start_response)

    mw = live(observe(seen), excluded_keys=keys)
    webtest_app(outer(capture_environ)).get("/", headers={"X-Request-Id": "r2"})
    assert seen["db_route"] == "primary"  # the default, not the parent's "replica"
    assert seen["roles"] == "no roles"
    assert seen["request_id"] == "r2"  # not excluded: still follows
    assert seen["user"] == "user-of-r2"
    assert environ["ref"]["outer.after"][1:] == ("replica", "user-of-r2", ["reading"])


def test_excluded_keys_per_route(live: Any) -> None:
    """SPEC 6.2: a route may override the middleware's excluded_keys."""
    seen = Recorder()
    mw = live(observe(seen), excluded_keys=["request_id"],
              when=lambda environ: {"excluded_keys": ["db_route"]}
              if environ["PATH_INFO"] == "/reports" else True)
    app = webtest_app(outer(mw))
    app.get("/reports", headers={"X-Request-Id": "r3"})
    assert (seen["request_id"], seen["db_route"]) == ("r3", "primary")
    app.get("/other", headers={"X-Request-Id": "r4"})
    assert (seen["request_id"], seen["db_route"]) == ("unset", "replica")


def test_exclusions_reject_bad_keys() -> None:
    """SPEC 6.2: excluded_keys takes names or ContextVar objects, clearly."""
    with pytest.raises(TypeError, match="list of names"):
        Exclusions("db_route")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="str names or ContextVar"):
        Exclusions([42])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"threading\.local"):
        share_local(object(), "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already registered"):
        share_local(threading.local(), "request_globals")


def test_no_state_leaks_across_1000_requests_on_two_threads(live: Any) -> None:
    """SPEC 6.3: request N+1 never sees request N's state; workers keep nothing."""
    mismatches = []
    leftovers = []

    def app(environ: Any, start_response: Any) -> list[bytes]:
        expected = environ["HTTP_X_REQUEST_ID"]
        got = (request_id.get(), getattr(request_globals, "user", None))
        if got != (expected, f"user-of-{expected}"):
            mismatches.append((expected, got))
        # State the app adds on W must not survive the job either.
        request_globals.extra = expected
        db_route.set(f"set-by-{expected}")
        return [b"ok"]

    mw = live(app, max_workers=2)
    wrapped = outer(mw)
    client = webtest_app(wrapped)
    for i in range(1000):
        client.get("/", headers={"X-Request-Id": f"r{i}"})
    assert mismatches == []
    # Now look at both pool threads from plain pool tasks, outside any job.
    barrier = threading.Barrier(2, timeout=10)

    def inspect() -> None:
        barrier.wait()  # both pool threads take one task each
        leftovers.append((request_id.get(), db_route.get(),
                          dict(request_globals.__dict__), dict(replica_stack.__dict__)))

    futures = [mw.executor.submit(inspect) for _ in range(2)]
    for future in futures:
        future.result(10)
    assert leftovers == [("unset", "primary", {}, {})] * 2


def _hooked(seen: Recorder, mode: str) -> Any:
    def setup(environ: Any) -> None:
        seen["setup"] = (threading.current_thread().name, request_id.get())

    def teardown(environ: Any, error: BaseException | None) -> None:
        calls = seen.get("teardown", [])
        calls.append((threading.current_thread().name, request_id.get(),
                      type(error).__name__ if error else None,
                      current_response().stream.closed))
        seen["teardown"] = calls
        seen.done.set()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        stream = current_response().stream
        if mode == "error before commit":
            raise ValueError("before")
        stream.write(b"first")
        if mode == "error after commit":
            raise ValueError("after")
        if mode == "disconnect":
            for _ in range(100_000):
                stream.write(b"more")
        return []

    return setup, teardown, app


@pytest.mark.parametrize("mode", ["normal", "error before commit", "error after commit",
                                  "disconnect"])
def test_teardown_runs_once_on_worker_on_every_path(live: Any, mode: str) -> None:
    """SPEC 6.4: setup/teardown run on W in the copied context; teardown once, after the end."""
    seen = Recorder()
    setup, teardown, app = _hooked(seen, mode)
    mw = live(app, setup=setup, teardown=teardown, queue_size=1)
    wrapped = outer(mw)
    if mode == "error before commit":
        with pytest.raises(ValueError):
            open_stream(wrapped, headers={"X-Request-Id": "h1"})
    else:
        response = open_stream(wrapped, headers={"X-Request-Id": "h1"})
        body = chunks(response)
        assert next(body).startswith(b"first")  # later small writes may merge in
        if mode == "normal":
            assert list(body) == []
        elif mode == "error after commit":
            with pytest.raises(Exception, match="incomplete"):
                list(body)
        response.close()
    wait(seen.done, "teardown")
    assert mw.wait_idle(10)
    calls = seen["teardown"]
    assert len(calls) == 1
    thread_name, rid, error, closed = calls[0]
    assert thread_name.startswith("live_wsgi")
    assert rid == "h1"
    assert closed is True
    assert error == {"normal": None, "error before commit": "ValueError",
                     "error after commit": "ValueError",
                     "disconnect": "ClientDisconnected"}[mode]
    assert seen["setup"] == (thread_name, "h1")


def test_failing_teardown_is_logged_and_the_job_still_ends(live: Any, caplog: Any) -> None:
    """SPEC 6.4: an error in teardown is logged, never lost, and hangs nothing."""

    def teardown(environ: Any, error: BaseException | None) -> None:
        raise RuntimeError("pool is gone")

    mw = live(lambda environ, sr: [b"ok"], teardown=teardown)
    assert webtest_app(mw).get("/").body == b"ok"
    assert mw.wait_idle(10)
    assert any("teardown" in r.getMessage() and r.exc_info for r in caplog.records)


def test_outer_span_covers_the_whole_stream(live: Any) -> None:
    """SPEC 6.1: a span opened by an outer middleware ends after the last chunk."""
    events: list[str] = []
    gate = threading.Event()

    class Span:
        def __init__(self, name: str) -> None:
            self.name = name
            self.ended = False

        def end(self) -> None:
            self.ended = True
            events.append("span ended")

    class Closing:
        def __init__(self, body: Any, on_close: Any) -> None:
            self.body = body
            self.on_close = on_close

        def __iter__(self) -> Any:
            return iter(self.body)

        def close(self) -> None:
            try:
                self.body.close()
            finally:
                self.on_close()

    def tracing(inner: Any) -> Any:
        def middleware(environ: Any, start_response: Any) -> Any:
            current = Span(environ["PATH_INFO"])
            token = span.set(current)
            try:
                body = inner(environ, start_response)
            finally:
                span.reset(token)
            return Closing(body, current.end)

        return middleware

    def app(environ: Any, start_response: Any) -> list[bytes]:
        stream = current_response().stream
        stream.write(f"in span {span.get().name}\n")
        wait(gate, "gate")
        assert not span.get().ended
        stream.write("last chunk\n")
        events.append("last chunk written")
        return []

    response = open_stream(tracing(live(app)), "/export")
    body = chunks(response)
    assert next(body) == b"in span /export\n"
    gate.set()
    assert b"".join(body) == b"last chunk\n"
    response.close()
    assert events == ["last chunk written", "span ended"]


def test_disconnect_teardown_sees_disconnect(live: Any) -> None:
    """SPEC 6.4: teardown learns the request ended by a client disconnect."""
    seen = Recorder()
    _setup, teardown, app = _hooked(seen, "disconnect")
    mw = live(app, teardown=teardown, queue_size=1)
    response = open_stream(mw)
    next(chunks(response))
    response.close()
    wait(seen.done, "teardown")
    assert seen["teardown"][0][2] == ClientDisconnected.__name__
