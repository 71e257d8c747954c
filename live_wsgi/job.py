"""One live request: the app's run on the worker, and the commit latch.

design: the server thread (S) submits ``Job.run`` to the pool and blocks in
``Job.wait_commit``; the worker (W) moves the job through its states under
one lock and notifies S at each step S cares about:

    QUEUED ──W starts──► RUNNING ──commit──► COMMITTED
       │                    ├──error before commit──► FAILED
       └─S: queue_timeout─► CANCELLED (503; the job never runs)
                            └─S: commit_timeout──► TIMED_OUT (504)

W always leaves RUNNING, whatever the app does (``finally``), so S never
waits on a job that has ended.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from . import signals
from .channel import Channel
from .errors import ClientDisconnected, CommitTimeout, StreamClosed
from .response import LiveResponse, _current, normalize_status

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication, WSGIEnvironment

    from .context import Snapshot
    from .middleware import LiveMiddleware, _Options

log = logging.getLogger("live_wsgi")

QUEUED = "queued"
RUNNING = "running"
COMMITTED = "committed"
FAILED = "failed"
CANCELLED = "cancelled"
TIMED_OUT = "timed out"


class Job:
    """One request's run on a pool thread."""

    def __init__(
        self,
        middleware: LiveMiddleware,
        app: WSGIApplication,
        environ: WSGIEnvironment,
        options: _Options,
        snapshot: Snapshot,
    ) -> None:
        self.middleware = middleware
        self.app = app
        self.environ = environ
        self.options = options
        self.snapshot = snapshot
        self.channel = Channel(options.queue_size)
        self.response = LiveResponse(
            environ,
            self.channel,
            self._on_commit,
            write_timeout=options.write_timeout,
            default_content_type=middleware.default_content_type,
        )
        self.response.middleware = middleware
        self.response.heartbeat = options.heartbeat
        environ["live_wsgi.response"] = self.response
        self._lock = threading.Lock()
        # Waited on by S in wait_commit(); notified by W when the job starts,
        # commits or fails before commit.
        self._changed = threading.Condition(self._lock)
        self.state = QUEUED
        #: The exception that ended the app before the commit, for S to raise.
        self.error: BaseException | None = None
        self._started_response = False
        #: Set once W is completely done (app, close, teardown).
        self.done = threading.Event()
        self.started_at = time.monotonic()
        self.thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<Job {self.environ.get('PATH_INFO', '')!r} {self.state}>"

    def facts(self) -> dict[str, Any]:
        """What signals tell about this request."""
        environ = self.environ
        response = self.response
        return {
            "environ": environ,
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "status": response.status if response.committed else None,
        }

    # -- S side ----------------------------------------------------------------

    def wait_commit(self, queue_timeout: float, commit_timeout: float | None) -> str:
        """Block S until the job commits, fails, or a timeout gives up on it."""
        with self._lock:
            if self.state == QUEUED:
                deadline = time.monotonic() + queue_timeout
                while self.state == QUEUED:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self.state = CANCELLED
                        return CANCELLED
                    self._changed.wait(remaining)
            if self.state == RUNNING and commit_timeout is not None:
                deadline = time.monotonic() + commit_timeout
                while self.state == RUNNING:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self.state = TIMED_OUT
                        self.channel.abort(
                            CommitTimeout,
                            f"the app did not commit within {commit_timeout:g} s "
                            "(commit_timeout); the client was answered 504",
                        )
                        return TIMED_OUT
                    self._changed.wait(remaining)
            while self.state == RUNNING:
                self._changed.wait()
            return self.state

    # -- W side ----------------------------------------------------------------

    def run(self) -> None:
        """The pool's entry point."""
        with self._lock:
            if self.state != QUEUED:  # S gave up waiting: never run
                return
            self.state = RUNNING
            self._changed.notify()
        self.thread = threading.current_thread()
        try:
            self.snapshot.run(self._run_in_context)
        finally:
            self._release_if_running(
                RuntimeError("live_wsgi: the job ended without committing")
            )
            self.middleware._job_done(self)
            self.done.set()

    def _run_in_context(self) -> None:
        _current.set(self.response)
        signals.emit(signals.stream_started, self.middleware, **self.facts())
        options = self.options
        error: BaseException | None = None
        try:
            if options.setup is not None:
                options.setup(self.environ)
            error = self._produce()
            if error is None:
                self.response.stream.close()
        except BaseException as exc:
            error = exc
        if error is not None:
            self._handle_error(error)
        if options.teardown is not None:
            try:
                options.teardown(self.environ, error)
            except Exception:
                log.exception("live_wsgi: the teardown hook failed")
        error = None  # no traceback cycles through this frame

    def _produce(self) -> BaseException | None:
        """Run the app and stream what it returns; close its iterable once."""
        error: BaseException | None = None
        iterable: Iterable[bytes] | None = None
        try:
            iterable = self.app(self.environ, self._start_response)
            write = self.response.stream.write
            for item in iterable:
                write(item)
        except BaseException as exc:
            error = exc
        close = getattr(iterable, "close", None)
        if close is not None:
            try:
                close()
            except BaseException as exc:
                if error is None:
                    error = exc
                else:
                    log.exception("live_wsgi: closing the app's iterable failed")
        return error

    def _start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: Any = None,
    ) -> Callable[[bytes], object]:
        """The ``start_response`` the app sees on W (PEP 3333)."""
        response = self.response
        if exc_info is not None:
            try:
                if response.committed:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
            response.headers.clear()
            response.content_length = None
        elif self._started_response:
            raise RuntimeError(
                "start_response() was called a second time without exc_info; "
                "PEP 3333 allows that only to replace the headers after an error"
            )
        elif response.committed:
            # A framework (Flask, Bottle) calls start_response after the view
            # returned, but the view already wrote: status and headers went out
            # at that first write. Only a body may follow now.
            self._started_response = True
            log.debug("live_wsgi: start_response(%r) after the commit ignored", status)
            return response.stream.write
        if not isinstance(headers, list):
            raise TypeError(
                f"start_response() headers must be a list, not {type(headers).__name__}"
            )
        response.status = normalize_status(status)
        add = response.headers.add
        for header in headers:
            if not (isinstance(header, tuple) and len(header) == 2):
                raise TypeError(
                    f"start_response() headers must be (name, value) tuples, not {header!r}"
                )
            add(*header)
        self._started_response = True
        return response.stream.write

    def _on_commit(self, response: LiveResponse) -> None:
        # Called by response.commit() on W, with the response's commit lock held.
        with self._lock:
            if self.state != RUNNING:
                raise CommitTimeout(
                    "the server thread stopped waiting for this response "
                    "(commit_timeout); the client was answered 504"
                )
            if response.bodiless:
                self.channel.discard()
            self.state = COMMITTED
            self._changed.notify()
        signals.emit(signals.stream_committed, self.middleware, **self.facts(),
                     headers=response.wsgi_headers())

    def _release_if_running(self, error: BaseException) -> bool:
        with self._lock:
            if self.state != RUNNING:
                return False
            self.state = FAILED
            self.error = error
            self._changed.notify()
            return True

    def _handle_error(self, error: BaseException) -> None:
        stream = self.response.stream
        if self._release_if_running(error):
            # Before commit: S raises it, and the outer stack handles it as if
            # there were no live_wsgi. Nothing will read the channel.
            stream._fail()
            return
        if self.state == TIMED_OUT:
            log.info("live_wsgi: %s %s stopped after commit_timeout: %s",
                     self.environ.get("REQUEST_METHOD"),
                     self.environ.get("PATH_INFO"), error)
            return
        # After commit: the status is gone. Log once, tell the callbacks,
        # then end the body incomplete.
        expected = isinstance(error, ClientDisconnected) or (
            isinstance(error, StreamClosed) and self.middleware.closing
        )
        if expected:
            log.info("live_wsgi: %s %s: %s", self.environ.get("REQUEST_METHOD"),
                     self.environ.get("PATH_INFO"), error)
        else:
            log.error("live_wsgi: error after the response was committed "
                      "(%s %s); the client gets an incomplete body",
                      self.environ.get("REQUEST_METHOD"),
                      self.environ.get("PATH_INFO"),
                      exc_info=(type(error), error, error.__traceback__))
        stream._run_error_callbacks(error)
        if not expected:
            self.middleware._report_error(self.environ, error)
            signals.emit(signals.stream_error, self.middleware, **self.facts(),
                         error=error, bytes_sent=stream.bytes_written,
                         duration=time.monotonic() - self.started_at)
        stream._fail()
