"""One live request: the app's run on the worker, and the commit latch.

design: the server thread (S) submits the job's ``ticket`` to the pool and
blocks in ``Job.wait_commit`` on the commit latch, a raw lock released
exactly once: when the job leaves RUNNING for COMMITTED or FAILED, or when
it is cancelled before it ran. Nothing else wakes S: each wake-up is a
thread switch, and on a busy server every switch also costs a GIL hand-off.
When the app returns its whole (small) body as a list, W wakes S after the
body has ended rather than at its first byte, so S runs once, finds
everything queued, and sends it in one go.

    QUEUED ──W starts──► RUNNING ──commit──► COMMITTED
       │                    ├──error before commit──► FAILED
       │                    └──S: commit_timeout──► TIMED_OUT (504)
       └──S: queue_timeout, S interrupted, shutdown──► CANCELLED (503; never runs)

Every exit is a ``finally`` (SPEC 5.4): whatever the app, a hook, a callback
or a signal receiver raises, ``Exception`` or ``BaseException``, W ends the
body (EOF or CUT), runs teardown once, releases S and leaves the books. An
exception that reaches S while it waits makes S ``abandon`` the job, so W's
next write raises and its ``stream.wait`` wakes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from types import GeneratorType
from typing import TYPE_CHECKING, Any

from . import signals
from .channel import CUT, Channel
from .errors import (
    ClientDisconnected,
    CommitTimeout,
    HeadersAlreadySent,
    StreamClosed,
)
from .probe import disconnect_probe
from .response import LiveResponse, _current, no_body_status, normalize_status

if TYPE_CHECKING:
    from contextvars import Context

    from _typeshed.wsgi import WSGIApplication, WSGIEnvironment

    from .context import Snapshot
    from .options import ErrorReporter, Options

log = logging.getLogger("live_wsgi")

QUEUED = "queued"
RUNNING = "running"
COMMITTED = "committed"
FAILED = "failed"
CANCELLED = "cancelled"
TIMED_OUT = "timed out"


class Ticket:
    """What the pool queues for a job: emptied when the job is cancelled, so
    a refused request is freed at once, not when a pool thread gets to it."""

    __slots__ = ("job",)

    def __init__(self, job: Job) -> None:
        self.job: Job | None = job

    def __call__(self) -> None:
        job, self.job = self.job, None
        if job is not None:
            job.run()


class Job:
    """One request's run on a pool thread.

    :param sender: the signals' sender (the middleware).
    :param on_done: called once when the job leaves for good (ran, or was
        cancelled): the middleware's books.
    :param reporter: ``on_error(environ, exc)`` for errors after the commit.
    """

    # Defaults on the class: a job is built per request, and these change
    # for few of them (set on the instance when they do).
    _latch_open = False
    # True while W writes a small body it already holds whole (a list): S is
    # woken once that body has ended, not at its first byte, so the request
    # costs one wake-up of S instead of two (see _produce).
    _defer_wake = False
    state = QUEUED
    #: When W started the app (for commit_timeout).
    running_since = 0.0
    #: The exception that ended the app before the commit, for S to raise.
    error: BaseException | None = None
    _started_response = False
    _abandoned = False
    #: The server's file wrapper the app returned, handed back to the server
    #: by S (SPEC 2.3: sendfile stays).
    passthrough: Iterable[bytes] | None = None

    def __init__(
        self,
        app: WSGIApplication,
        environ: WSGIEnvironment,
        options: Options,
        snapshot: Snapshot | Context,
        sender: Any,
        default_content_type: str,
        on_done: Callable[[Job], object],
        reporter: ErrorReporter | None = None,
    ) -> None:
        # (Positional parameters: a class call with keywords builds a dict,
        # and this runs for every live request.)
        self.started_at = time.monotonic()
        self.sender = sender
        self.app = app
        self.environ = environ
        self.options = options
        self.snapshot = snapshot
        self.channel = channel = Channel(options.queue_size)
        # The stream's on_error callbacks: this job runs them (only W does).
        self.error_callbacks: list[Callable[[BaseException], object]] = []
        self.response = environ["live_wsgi.response"] = LiveResponse(
            environ, channel, self._on_commit, options.write_timeout,
            default_content_type, self.error_callbacks, options.heartbeat, sender,
        )  # fmt: skip
        self._on_done = on_done
        self._reporter = reporter
        self.ticket = Ticket(self)
        self._lock = threading.Lock()
        # The commit latch: held until W leaves RUNNING (commit or failure)
        # or the job is cancelled, then released once. S waits on it.
        self._latch = latch = threading.Lock()
        latch.acquire()

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

    def _open_latch(self) -> None:
        # With the lock held.
        if not self._latch_open:
            self._latch_open = True
            self._latch.release()

    # -- S side ----------------------------------------------------------------

    def wait_commit(
        self,
        queue_timeout: float,
        commit_timeout: float | None,
        probe_interval: float | None = None,
    ) -> str:
        """Block S until the job commits, fails, or a timeout gives up on it.

        While it waits, S probes the client every ``probe_interval``: a
        client that leaves before the first byte is noticed too (SPEC 4.2),
        a queued job is cancelled, a running one aborted, so a producer
        parked in ``stream.wait`` wakes and stops.
        """
        latch = self._latch
        # The common case first, with nothing between the submit and the
        # wait: the job starts and commits well within the first timeout.
        first = queue_timeout
        if commit_timeout is not None and commit_timeout < first:
            first = commit_timeout
        if probe_interval is not None and probe_interval < first:
            first = probe_interval
        if latch.acquire(True, first):
            return self.state
        queue_deadline = self.started_at + queue_timeout
        probe: Callable[[], bool] | None = None
        if probe_interval is not None:
            probe = disconnect_probe(self.environ)
        while True:
            if probe is not None and probe():
                probe = None
                self._client_left()
            with self._lock:
                state = self.state
                if state == QUEUED:
                    deadline: float | None = queue_deadline
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
                        self._cancel_locked()
                        return CANCELLED
                    self.state = TIMED_OUT
                    self.channel.abort(
                        CommitTimeout,
                        f"the app did not commit within {commit_timeout:g} s "
                        "(commit_timeout); the client was answered 504",
                    )
                    return TIMED_OUT
            wait = remaining
            if state == QUEUED and commit_timeout is not None:
                # W does not wake S when it starts: look again at least
                # every commit_timeout, so a job that started and hangs
                # is answered 504 on time.
                wait = commit_timeout if wait is None else min(wait, commit_timeout)
            if probe is not None:
                assert probe_interval is not None
                wait = probe_interval if wait is None else min(wait, probe_interval)
            if latch.acquire(True, -1 if wait is None else wait):
                # Released: W left RUNNING for good, or the job was cancelled.
                return self.state

    def _client_left(self) -> None:
        """S's probe found the client gone before the commit."""
        with self._lock:
            if self.state == QUEUED:
                self._cancel_locked()
                return
        if self.channel.abort(
            ClientDisconnected, "the client disconnected before the response started"
        ) and signals.client_disconnected.receivers:
            signals.emit(signals.client_disconnected, self.sender, **self.facts(),
                         bytes_sent=0, duration=time.monotonic() - self.started_at)

    def cancel(self) -> bool:
        """Never run this job if it has not started (S answers 503). True if so."""
        with self._lock:
            if self.state != QUEUED:
                return False
            self._cancel_locked()
            return True

    def _cancel_locked(self) -> None:
        self.state = CANCELLED
        # The pool may hold the ticket until a thread is free: empty it now,
        # so the refused request (environ, captured context) is freed at once.
        self.ticket.job = None
        self._open_latch()
        self.response.detach()
        self._on_done(self)

    def abandon(self) -> None:
        """S stops waiting for good (an exception reached it): cancel the job,
        or abort its stream so W's next write raises and ``stream.wait`` wakes."""
        with self._lock:
            self._abandoned = True
            self.error = None  # nobody will raise it: no traceback kept
        if not self.cancel():
            self.channel.abort(
                ClientDisconnected, "the server stopped waiting for this response"
            )

    def interrupt(self) -> None:
        """Shutdown begins: cancel a job that has not started, wake ``stream.wait``."""
        if not self.cancel():
            self.channel.interrupt()

    def end_for_shutdown(self) -> None:
        """Shutdown's grace is over: end the body. The server thread ends it
        cleanly unless it is a download, which it cuts (SPEC 8.3, 5.2): it
        decides once the response committed, so a download that had not
        started yet is judged by the headers it then sends."""
        self.channel.shut()

    # -- W side ----------------------------------------------------------------

    def run(self) -> None:
        """The pool's entry point (through the ticket)."""
        with self._lock:
            if self.state != QUEUED:  # cancelled: never run
                return
            self.state = RUNNING
            self.running_since = time.monotonic()
        try:
            self.snapshot.run(self._run_in_context)
        finally:
            # W's last duties, whatever happened above: S released, the body
            # ended, the links cut, the books left. (Each is a cheap no-op
            # when the run already did it.)
            try:
                if self.state == RUNNING:  # only W leaves RUNNING but for a timeout
                    self._release_if_running(
                        RuntimeError("live_wsgi: the job ended without committing")
                    )
                self.channel.end(CUT)  # a no-op unless the body was left open
                if not self._latch_open:
                    self._wake_server()
            finally:
                self.error_callbacks.clear()  # only W runs them, and W is done
                self.response.detach()
                self._on_done(self)

    def _wake_server(self) -> None:
        """Let S go on with the committed response (once; idempotent)."""
        with self._lock:
            if self.state == COMMITTED:
                self._open_latch()

    def _run_in_context(self) -> None:
        _current.set(self.response)
        error: BaseException | None = None
        try:
            try:
                if signals.stream_started.receivers:
                    signals.emit(signals.stream_started, self.sender, **self.facts())
                setup = self.options.setup
                if setup is not None:
                    setup(self.environ)
                error = self._produce()
            except BaseException as exc:
                error = exc
            if error is not None:
                self._handle_error(error)
        finally:
            # The body has ended (a no-op unless _handle_error itself broke):
            # do not make S wait for teardown.
            self.channel.end(CUT)
            if not self._latch_open:
                self._wake_server()
            teardown = self.options.teardown
            if teardown is not None:
                _call_logged("the teardown hook", teardown, self.environ, error)
            error = None  # no traceback cycles through this frame

    def _produce(self) -> BaseException | None:
        """Run the app, stream what it returns, close its iterable once, end
        the body; return what was raised."""
        error: BaseException | None = None
        iterable: Iterable[bytes] | None = None
        body: Iterable[bytes] | None = None
        try:
            iterable = body = self.app(self.environ, self._start_response)
            response = self.response
            if not response.committed:
                body = self._whole(iterable)
            if body is not None:
                put = self.channel.put
                timeout = self.options.write_timeout
                for item in body:
                    if type(item) is bytes and response._stream is None:
                        # Straight to the channel, as stream.write would put it
                        # (no Stream is made for an app that never asks for one).
                        if not response.committed:
                            response.commit()
                        put(item, timeout)
                    else:
                        response.stream.write(item)
        except BaseException as exc:
            error = exc
        if self.passthrough is None:  # else the server closes it
            close = getattr(iterable, "close", None)
            if close is not None:
                try:
                    close()
                except BaseException as exc:
                    if error is None:
                        error = exc
                    else:
                        log.exception("live_wsgi: closing the app's iterable failed")
        if error is None and body is not None:
            try:
                self.response.end_body()
            except BaseException as exc:
                error = exc
        try:
            return error
        finally:
            # The error's traceback holds this frame: no cycle through it.
            error = None

    def _whole(self, iterable: Iterable[bytes]) -> Iterable[bytes] | None:
        """Before any write, the app returned ``iterable``: is it the whole
        response? A list (or tuple), a ``wsgi.file_wrapper``, an iterable of a
        declared length: then it leaves exactly as the app made it (SPEC 2.3).
        Returns what W still iterates; None when the body is done (queued
        whole, or the server takes it over)."""
        response = self.response
        kind = type(iterable)
        if kind is list or kind is tuple:
            response.whole = True
            return self._whole_body(iterable)  # type: ignore[arg-type]
        if kind is GeneratorType:  # the common streamed case: none of the below
            pass
        elif isinstance(iterable, (list, tuple)):
            response.whole = True
            return iterable
        elif isinstance(wrapper := self.environ.get("wsgi.file_wrapper"), type) and \
                isinstance(iterable, wrapper):
            # The server's own file wrapper (sendfile): hand it back to S, who
            # returns it to the server; the server iterates and closes it.
            response.whole = True
            self.passthrough = iterable
            response.commit()
            self.channel.end()
            return None
        if response.declared_length() is not None or (
            self.environ.get("REQUEST_METHOD") == "HEAD" or no_body_status(response._code)
        ):
            response.whole = True  # a declared length, or no body at all
        return iterable

    def _whole_body(self, body: list[Any] | tuple[Any, ...]) -> Iterable[bytes] | None:
        """The app returned its whole body as a list, before any write: commit
        and queue it with its end in one step, waking S once (not at the
        commit and again for the bytes). Returns what is left to write one by
        one (all of it) when it cannot go in one step."""
        parts = []
        size = 0
        for item in body:
            if type(item) is not bytes:
                return body  # let write() convert or refuse it
            if item:
                parts.append(item)
                size += len(item)
        self._defer_wake = True
        try:
            self.response.commit()
            done = self.channel.put_whole(parts, size)
        finally:
            self._defer_wake = False
            self._wake_server()
        return None if done else body

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
            # The code decides: "201 CREATED" (Werkzeug) repeats "201 Created".
            if normalize_status(status)[:3] != response.status[:3]:
                raise HeadersAlreadySent(
                    f"start_response({status!r}) after the response was committed "
                    f"as {response.status!r}: the status went out with the first "
                    "write (an error after streaming began?); the body is cut"
                )
            log.debug("live_wsgi: start_response(%r) after the commit: only the "
                      "body follows, headers %r are not sent", status, headers)
            return self._write
        if not isinstance(headers, list):
            raise TypeError(
                f"start_response() headers must be a list, not {type(headers).__name__}"
            )
        response.status = status  # checked by the setter
        response._add_headers(headers)
        self._started_response = True
        return self._write

    def _write(self, data: bytes) -> int:
        """The ``write`` callable ``start_response`` returns (PEP 3333)."""
        return self.response.stream.write(data)

    def _on_commit(self, response: LiveResponse) -> None:
        # Called by response.commit() on W, with the response's commit lock held.
        with self._lock:
            if self.state == TIMED_OUT:
                raise CommitTimeout(
                    "the server thread stopped waiting for this response "
                    "(commit_timeout); the client was answered 504"
                )
            if self.state != RUNNING:
                raise StreamClosed(
                    f"this response can no longer be committed (the request {self.state})"
                )
            if response.bodiless:
                self.channel.discard()
            self.state = COMMITTED
            if not self._defer_wake:
                self._open_latch()
        if signals.stream_committed.receivers:
            signals.emit(signals.stream_committed, self.sender, **self.facts(),
                         headers=response.wsgi_headers())

    def _release_if_running(self, error: BaseException) -> bool:
        with self._lock:
            if self.state != RUNNING:
                return False
            self.state = FAILED
            if not self._abandoned:
                self.error = error
            self._open_latch()
            return True

    def _handle_error(self, error: BaseException) -> None:
        """The app (or its close, setup, or stream.close) raised ``error``."""
        if self._release_if_running(error):
            # Before commit: S raises it, and the outer stack handles it as if
            # there were no live_wsgi. Nothing will read the channel.
            self.channel.end(CUT)
            return
        try:
            self._report(error)
        finally:
            self.channel.end(CUT)

    def _report(self, error: BaseException) -> None:
        """After the commit the status is gone: log once, tell the callbacks,
        report, signal (SPEC 5.2). Expected ends are logged quietly (5.3)."""
        environ = self.environ
        method, path = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO")
        if isinstance(error, CommitTimeout) and self.state == TIMED_OUT:
            log.info("live_wsgi: %s %s stopped after commit_timeout: %s", method, path, error)
            return
        expected = isinstance(error, ClientDisconnected) or (
            isinstance(error, StreamClosed) and self.channel.shutting_down
        )
        if expected:
            log.info("live_wsgi: %s %s: %s", method, path, error)
        else:
            log.error("live_wsgi: error after the response was committed "
                      "(%s %s); the client gets an incomplete body", method, path,
                      exc_info=(type(error), error, error.__traceback__))
        for callback in self.error_callbacks:
            _call_logged(f"the on_error callback {callback!r}", callback, error)
        if expected:
            return
        if self._reporter is not None:
            _call_logged("the on_error reporter", self._reporter, environ, error)
        if signals.stream_error.receivers:
            signals.emit(signals.stream_error, self.sender, **self.facts(), error=error,
                         bytes_sent=self.channel.accepted,
                         duration=time.monotonic() - self.started_at)


def _call_logged(what: str, fn: Callable[..., object], *args: Any) -> None:
    """Call ``fn``; log whatever it raises, ``BaseException`` too, and go on:
    cleanup must never be skipped because a hook failed."""
    try:
        fn(*args)
    except BaseException:
        log.exception("live_wsgi: %s failed", what)
