"""One live request's life (``live_wsgi.job``): every exit path ends the body,
runs teardown once, releases the server thread and leaves the books.

SPEC 4.2, 4.3, 5.2, 5.4, 6.4.
"""

from __future__ import annotations

import gc
import logging
import signal
import socket
import threading
import weakref
from typing import Any

import pytest

from live_wsgi import ClientDisconnected, ResponseAborted, current_response, signals, testing

from .support import WAIT, chunks, open_stream, wait, webtest_app

pytestmark = pytest.mark.timeout(30)


class Interrupt(BaseException):
    """Stands for KeyboardInterrupt / gevent.Timeout / GreenletExit."""


@pytest.mark.parametrize("source", ["callback", "reporter", "receiver"])
def test_base_exception_in_error_hooks_never_stops_cleanup(
    live: Any, caplog: Any, source: str
) -> None:
    """SPEC 5.2, 5.4, 6.4: a BaseException from an on_error callback, the on_error
    reporter or a stream_error receiver is logged; the body is still cut, teardown
    runs once and the server thread is released."""
    teardowns: list[object] = []

    def app(environ: Any, start_response: Any) -> list[bytes]:
        stream = current_response().stream
        if source == "callback":
            stream.on_error(lambda exc: (_ for _ in ()).throw(Interrupt("in callback")))
        stream.write(b"partial")
        raise RuntimeError("producer broke")

    def reporter(environ: Any, exc: BaseException) -> None:
        raise Interrupt("in reporter")

    def receiver(sender: Any, **facts: Any) -> None:
        raise Interrupt("in receiver")

    mw = live(app, teardown=lambda environ, error: teardowns.append(error),
              on_error=reporter if source == "reporter" else None)
    caplog.set_level(logging.INFO, logger="live_wsgi")
    with signals.stream_error.connected_to(receiver) if source == "receiver" else _nothing():
        response = open_stream(mw, "/")
        assert response.next_chunk(WAIT) == b"partial"
        with pytest.raises(ResponseAborted):
            response.next_chunk(WAIT)  # cut, never a hang
        response.close()
        assert mw.wait_idle(WAIT)
    assert [str(error) for error in teardowns] == ["producer broke"]
    assert any(r.exc_info and r.exc_info[0] is Interrupt for r in caplog.records)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_exception_escaping_the_commit_wait_aborts_the_job(live: Any) -> None:
    """SPEC 4.3, 5.4: an exception that reaches S while it waits for the commit
    (an outer gevent.Timeout, KeyboardInterrupt) aborts the job before it
    propagates: W's stream.wait wakes and its next write raises."""
    parked = threading.Event()
    seen: dict[str, object] = {}

    def app(environ: Any, start_response: Any) -> list[bytes]:
        stream = current_response().stream
        parked.set()
        seen["woken"] = stream.wait(WAIT)
        try:
            stream.write(b"too late")
        except ClientDisconnected as exc:
            seen["write"] = exc
        return []

    def interrupt(signum: int, frame: Any) -> None:
        raise Interrupt("outer timeout")

    mw = live(app)
    previous = signal.signal(signal.SIGUSR1, interrupt)
    main = threading.get_ident()

    def fire() -> None:
        if parked.wait(WAIT):
            signal.pthread_kill(main, signal.SIGUSR1)

    firer = threading.Thread(target=fire)
    firer.start()
    try:
        with pytest.raises(Interrupt):
            open_stream(mw, "/")  # S: waits for a commit that never comes
    finally:
        signal.signal(signal.SIGUSR1, previous)
        firer.join(WAIT)
    assert mw.wait_idle(WAIT)
    assert seen["woken"] is True
    assert isinstance(seen["write"], ClientDisconnected)


class Payload:
    """Something a request holds, to see when it is freed."""


def test_a_refused_request_is_freed_at_once(live: Any) -> None:
    """SPEC 2.4: a request answered 503 (queue_timeout) never runs, and nothing of
    it (environ, captured context) waits in the pool's queue for a thread."""
    release = threading.Event()
    started = threading.Event()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/busy":
            started.set()
            wait(release, "release")
        return [b"ok"]

    mw = live(app, max_workers=1, queue_timeout=0.05)
    busy = threading.Thread(target=lambda: webtest_app(mw).get("/busy"))
    busy.start()
    try:
        wait(started, "the busy request")
        payload = Payload()
        ref = weakref.ref(payload)
        webtest_app(mw).get("/refused", extra_environ={"test.payload": payload}, status=503)
        del payload
        gc.collect()  # only to rule out a cycle: the pool's queue must not hold it
        assert ref() is None, "the refused request is still held (by the pool's queue?)"
    finally:
        release.set()
        busy.join(WAIT)


def test_error_after_commit_timeout_is_logged_and_reported(live: Any, caplog: Any) -> None:
    """SPEC 5.2: after a commit_timeout (504) only the CommitTimeout itself is quiet;
    any other exception from the app is logged as an error with its traceback and
    reported."""
    timed_out = threading.Event()
    reported: list[BaseException] = []

    def app(environ: Any, start_response: Any) -> list[bytes]:
        wait(timed_out, "the 504")
        raise KeyError("missing row")

    mw = live(app, commit_timeout=0.1, on_error=lambda environ, exc: reported.append(exc))
    caplog.set_level(logging.INFO, logger="live_wsgi")
    webtest_app(mw).get("/", status=504)
    timed_out.set()
    assert mw.wait_idle(WAIT)
    assert [type(exc) for exc in reported] == [KeyError]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert [r.exc_info[0] for r in errors] == [KeyError]


def test_client_leaving_before_the_commit_wakes_the_producer(live: Any) -> None:
    """SPEC 4.2: S probes the client while it waits for the commit: a producer
    parked before its first write (waiting on a pub/sub) learns the client left."""
    parked = threading.Event()
    seen: dict[str, object] = {}
    server_side, client_side = socket.socketpair()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        parked.set()
        seen["woken"] = current_response().stream.wait(WAIT)
        seen["connected"] = current_response().stream.connected
        return []

    mw = live(app, probe_interval=0.05)
    result: list[Any] = []
    server = threading.Thread(target=lambda: result.append(testing.open_stream(
        mw, "/", SERVER_PROTOCOL="HTTP/1.1", **{"werkzeug.socket": server_side})))
    server.start()
    try:
        wait(parked, "the producer to park")
        client_side.close()  # the client leaves before any byte
        server.join(WAIT)
        assert not server.is_alive()
        assert seen == {"woken": True, "connected": False}
    finally:
        for response in result:
            response.close()
        server_side.close()
    assert mw.wait_idle(WAIT)


def test_every_exit_leaves_the_books(live: Any) -> None:
    """SPEC 5.4: whatever the app raises, the job leaves the middleware's books
    and the pool thread is free again (a BaseException after the commit too)."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        current_response().stream.write(b"x")
        raise Interrupt("after the commit")

    mw = live(app, max_workers=1)
    for _ in range(3):
        body = chunks(open_stream(mw, "/"))
        assert next(body) == b"x"
        with pytest.raises(ResponseAborted):
            next(body)
    assert mw.wait_idle(WAIT)
    assert mw.active_streams == 0
