"""One live request: the app's run on the worker, and the commit latch.

design: the server thread (S) submits ``Job.run`` to the pool and blocks in
``Job.wait_commit`` on the commit latch, a raw lock W releases exactly once,
when the job leaves RUNNING for COMMITTED or FAILED. Nothing else wakes S:
each wake-up is a thread switch, and on a busy server every switch also
costs a GIL hand-off. When the app returns its whole (small) body as a list,
W wakes S after the body has ended rather than at its first byte, so S runs
once, finds everything queued, and sends it in one go.

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
from .channel import COALESCE_LIMIT, Channel
from .errors import ClientDisconnected, CommitTimeout, HeadersAlreadySent, StreamClosed
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
        # The commit latch: held until W leaves RUNNING (commit or failure),
        # then released once. S waits on it; W never wakes S for anything
        # else, so a request costs two thread hand-offs, not more.
        self._latch = threading.Lock()
        self._latch.acquire()
        self._latch_open = False
        # True while W writes a small body it already holds whole (a list):
        # S is woken once that body has ended, not at its first byte, so
        # the request costs one wake-up of S instead of two (see _produce).
        self._defer_wake = False
        self.state = QUEUED
        #: When W started the app (for commit_timeout).
        self.running_since = 0.0
        #: The exception that ended the app before the commit, for S to raise.
        self.error: BaseException | None = None
        self._started_response = False
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
        latch = self._latch
        queue_deadline = time.monotonic() + queue_timeout
        # The common case first, with nothing between the submit and the
        # wait: the job starts and commits well within the first timeout.
        first = queue_timeout if commit_timeout is None else min(queue_timeout, commit_timeout)
        if latch.acquire(True, first):
            return self.state
        while True:
            with self._lock:
                state = self.state
                if state == QUEUED:
                    deadline = queue_deadline
                elif state == RUNNING:
                    if commit_timeout is None:
                        deadline = None
                    else:
                        deadline = self.running_since + commit_timeout
                else:
                    return state
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    if state == QUEUED:
                        self.state = CANCELLED
                        return CANCELLED
                    self.state = TIMED_OUT
                    self.channel.abort(
                        CommitTimeout,
                        f"the app did not commit within {commit_timeout:g} s "
                        "(commit_timeout); the client was answered 504",
                    )
                    return TIMED_OUT
            if remaining is None:
                latch.acquire()
            else:
                if state == QUEUED and commit_timeout is not None:
                    # W does not wake S when it starts: look again at least
                    # every commit_timeout, so a job that started and hangs
                    # is answered 504 on time.
                    remaining = min(remaining, commit_timeout)
                if not latch.acquire(True, remaining):
                    continue
            # Released: W left RUNNING for good (COMMITTED or FAILED).
            return self.state

    # -- W side ----------------------------------------------------------------

    def run(self) -> None:
        """The pool's entry point."""
        with self._lock:
            if self.state != QUEUED:  # S gave up waiting: never run
                return
            self.state = RUNNING
            self.running_since = time.monotonic()
        self.thread = threading.current_thread()
        try:
            self.snapshot.run(self._run_in_context)
        finally:
            self._release_if_running(
                RuntimeError("live_wsgi: the job ended without committing")
            )
            self._unlink()
            self.middleware._job_done(self)
            self._wake_server()

    def _unlink(self) -> None:
        """Cut the request's reference cycles: W is done with them.

        While the app runs, the response, its stream, the environ and this
        job point at each other. Nothing needs those links once W is done,
        so they go: reference counting then frees the whole request the
        moment the server lets go of it, instead of leaving it to the cyclic
        garbage collector, which costs a busy server more the longer it
        waits (``benchmarks/README.rst``).
        """
        response = self.response
        # A commit can no longer succeed (W left RUNNING); a thread the app
        # left behind gets a clear error instead of a reference to this job.
        response._on_commit = _request_over
        # Only W runs them, and W is done; they may refer to the response.
        response.stream._error_callbacks.clear()
        # environ["live_wsgi.response"] stays for the outer stack; the
        # response keeps the same environ, minus that link back.
        environ = dict(self.environ)
        environ.pop("live_wsgi.response", None)
        response.environ = environ

    def _wake_server(self) -> None:
        """Let S go on with the committed response (once; idempotent)."""
        with self._lock:
            if self.state == COMMITTED and not self._latch_open:
                self._latch_open = True
                self._latch.release()

    def _run_in_context(self) -> None:
        _current.set(self.response)
        if signals.stream_started.receivers:
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
            self._wake_server()  # the body has ended: do not make S wait for teardown
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
            if type(iterable) is list:
                self._whole_body(iterable)
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
        try:
            return error
        finally:
            # The error's traceback holds this frame: no cycle through it.
            error = None

    def _whole_body(self, body: list[Any]) -> None:
        """The app returned its whole body as a list, before any write."""
        response = self.response
        if response.committed:
            return
        size = _byte_size(body)
        if size is None:
            return
        if response.content_length is None and response.declared_length() == size:
            # SPEC 2.3: the app asked for a length and the body is known to
            # have it: keep it (the same bytes as without live_wsgi).
            response.content_length = size
        if len(body) <= 16 and size <= COALESCE_LIMIT:
            # One queued chunk holds it whole, so no write can block: wake S
            # once the body has ended, not at its first byte (one wake-up of
            # S instead of two).
            self._defer_wake = True

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
            # returned, but the view already wrote: status and headers went
            # out at that first write. The same status may follow (only a body
            # comes after it); another one is the framework sending an error
            # page for a failure after the commit, which must not be appended
            # to the streamed body as if all were well (SPEC 2.2, 5.2).
            self._started_response = True
            if normalize_status(status) != response.status:
                raise HeadersAlreadySent(
                    f"start_response({status!r}) after the response was committed "
                    f"as {response.status!r}: the status went out with the first "
                    "write (an error after streaming began?); the body is cut"
                )
            log.debug("live_wsgi: start_response(%r) after the commit: only the "
                      "body follows, headers %r are not sent", status, headers)
            return response.stream.write
        if not isinstance(headers, list):
            raise TypeError(
                f"start_response() headers must be a list, not {type(headers).__name__}"
            )
        response.status = status  # checked by the setter
        response._add_headers(headers)
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
            if not self._defer_wake:
                self._latch_open = True
                self._latch.release()
        if signals.stream_committed.receivers:
            signals.emit(signals.stream_committed, self.middleware, **self.facts(),
                         headers=response.wsgi_headers())

    def _release_if_running(self, error: BaseException) -> bool:
        with self._lock:
            if self.state != RUNNING:
                return False
            self.state = FAILED
            self.error = error
            self._latch_open = True
            self._latch.release()
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


def _request_over(response: LiveResponse) -> None:
    raise StreamClosed(
        "the live request is over (its app has returned): this response can "
        "no longer be committed"
    )


def _byte_size(body: list[Any]) -> int | None:
    """The total size of a list of bytes; None if anything else is in it."""
    size = 0
    for item in body:
        if type(item) is not bytes:
            return None
        size += len(item)
    return size
