"""A finished live request is freed by reference counting, not by the cyclic GC.

The response, its stream, the environ and the job point at each other while
the app runs; the job cuts those links when W is done. With the cyclic
garbage collector off, every object of a request must be gone the moment the
server lets go of the environ and the body. (Cycles cost more than memory: a
busy server pays for them in collections, see ``benchmarks/README.rst``.)
"""

from __future__ import annotations

import gc
import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from typing import Any

import pytest

from live_wsgi import SSE, ResponseAborted, StreamClosed, current_response

pytestmark = pytest.mark.timeout(30)


class ThreadPerJob(Executor):
    """Runs each job on a thread of its own, which ``join()`` waits for: once
    joined, no pool frame can still hold a reference to the job."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        thread = threading.Thread(target=fn, args=args, kwargs=kwargs, name="live_wsgi-job")
        self.threads.append(thread)
        thread.start()
        return Future()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(10)
            assert not thread.is_alive(), "the job's thread did not end"


@pytest.fixture
def no_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def list_body(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def generator_body(environ: Any, start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"o"
    yield b"k"


def stream_writes(environ: Any, start_response: Any) -> list[bytes]:
    response = current_response()
    # A callback that refers to its response: a cycle of the app's making,
    # which the job also cuts once W is done.
    response.stream.on_error(lambda error: response.stream.abort())
    sse = SSE(response.stream)
    sse.write("one")
    sse.write("two", event="tick")
    return []


def fails_after_commit(environ: Any, start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"partial"
    raise RuntimeError("the export broke")


def run_request(mw: Any, method: str = "GET") -> tuple[weakref.ref[Any], bytes]:
    """One request as a server makes it; returns a weak reference to its
    response (taken once the server is done) and the body it received."""
    environ = {"REQUEST_METHOD": method, "PATH_INFO": "/", "wsgi.multithread": True}
    body = mw(environ, lambda status, headers, exc_info=None: None)
    received = []
    try:
        for chunk in body:
            received.append(chunk)
    except ResponseAborted:
        pass  # no socket to cut in process: the body says it ended early
    finally:
        body.close()
    mw.executor.join()
    ref = weakref.ref(environ["live_wsgi.response"])
    return ref, b"".join(received)


@pytest.mark.parametrize(
    "app, method, expected",
    [
        (list_body, "GET", b"ok"),
        (generator_body, "GET", b"ok"),
        (stream_writes, "GET", b":\ndata: one\n\nevent: tick\ndata: two\n\n"),
        (generator_body, "HEAD", b""),
        (fails_after_commit, "GET", b"partial"),
    ],
    ids=["list", "generator", "stream-and-sse", "head", "error-after-commit"],
)
def test_finished_request_is_freed_without_the_cyclic_gc(
    live: Any, no_gc: None, app: Any, method: str, expected: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The log record of an error holds its traceback: keep the test's log
    # capture from holding the request.
    caplog.set_level(logging.CRITICAL, logger="live_wsgi")
    mw = live(app, executor=ThreadPerJob())
    ref, received = run_request(mw, method)
    assert received == expected
    assert ref() is None, "the finished request is still referenced (a reference cycle)"


def test_failing_app_before_commit_is_freed_without_the_cyclic_gc(
    live: Any, no_gc: None
) -> None:
    """The error S re-raises does not keep the request alive once handled."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        raise LookupError("no such report")

    mw = live(app, executor=ThreadPerJob())
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.multithread": True}
    with pytest.raises(LookupError, match="no such report"):
        mw(environ, lambda status, headers, exc_info=None: None)
    mw.executor.join()
    ref = weakref.ref(environ["live_wsgi.response"])
    del environ
    assert ref() is None, "the failed request is still referenced (a reference cycle)"


def test_stream_kept_beyond_its_request_refuses_writes(live: Any) -> None:
    """A thread the app left behind holds only the stream: its writes raise
    StreamClosed, whether or not the response still exists."""
    kept: dict[str, Any] = {}

    def app(environ: Any, start_response: Any) -> list[bytes]:
        kept["stream"] = current_response().stream
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]

    mw = live(app, executor=ThreadPerJob())
    ref, received = run_request(mw)
    assert received == b"done"
    assert ref() is None
    with pytest.raises(StreamClosed):
        kept["stream"].write(b"late")
    kept["stream"].close()  # idempotent, even now


def test_response_that_never_committed_refuses_a_late_commit(live: Any) -> None:
    """A response kept after its app failed before the commit cannot commit
    later: StreamClosed says the request is over."""
    kept: dict[str, Any] = {}

    def app(environ: Any, start_response: Any) -> list[bytes]:
        kept["response"] = current_response()
        raise LookupError("no such report")

    mw = live(app, executor=ThreadPerJob())
    with pytest.raises(LookupError):
        mw({"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.multithread": True},
           lambda status, headers, exc_info=None: None)
    mw.executor.join()
    response = kept["response"]
    assert not response.committed
    with pytest.raises(StreamClosed, match="request is over"):
        response.stream.write(b"late")
    assert response.stream.closed


class NeverRuns(Executor):
    """Takes jobs and never runs them; lets a job go once its Future is cancelled."""

    def __init__(self) -> None:
        self.jobs: dict[Future[Any], Callable[..., Any]] = {}

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self.jobs[future] = fn
        future.add_done_callback(self.jobs.pop)
        return future


def test_request_refused_with_503_is_freed_without_the_cyclic_gc(
    live: Any, no_gc: None
) -> None:
    """SPEC 2.4: a job no worker took within queue_timeout never runs, and its
    request is freed (W, which cuts the links otherwise, never saw it)."""
    executor = NeverRuns()
    mw = live(lambda environ, start_response: [b"never"], executor=executor, queue_timeout=0.05)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.multithread": True}
    statuses = []
    body = mw(environ, lambda status, headers, exc_info=None: statuses.append(status))
    assert statuses == ["503 Service Unavailable"]
    assert b"".join(body).startswith(b"Service Unavailable")
    assert executor.jobs == {}  # cancelled: the executor let the job go
    ref = weakref.ref(environ["live_wsgi.response"])
    del environ, body
    assert ref() is None, "the refused request is still referenced (a reference cycle)"


def test_stream_kept_after_a_504_closes_quietly(live: Any) -> None:
    """SPEC 2.4: after commit_timeout the app's write raises CommitTimeout; the
    stream it kept can still be closed (a no-op) once the request is gone."""
    kept: dict[str, Any] = {}
    answered = threading.Event()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        kept["stream"] = current_response().stream
        answered.wait(10)
        kept["stream"].write(b"too late")  # raises CommitTimeout
        return []

    mw = live(app, executor=ThreadPerJob(), commit_timeout=0.05)
    statuses = []
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.multithread": True}
    body = mw(environ, lambda status, headers, exc_info=None: statuses.append(status))
    assert statuses == ["504 Gateway Timeout"]
    answered.set()
    b"".join(body)
    mw.executor.join()
    del environ, body
    gc.collect()
    kept["stream"].close()  # no error: the request is over
    with pytest.raises(StreamClosed):
        kept["stream"].write(b"later still")
