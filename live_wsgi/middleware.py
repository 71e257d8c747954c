"""``LiveMiddleware``: run a WSGI app on a worker thread and stream its body live.

Use it when a response is *produced over time*: server-sent events, live
logs, exports of millions of rows, progress feeds. The app writes while the
server thread sends, so the first bytes leave at once and memory stays flat.

Do not use it for ordinary short responses: each live request costs a
thread hand-off and holds a pool thread *and* a server thread while it
streams. Pass ``when=`` to make only the streaming routes live; the others
go straight through with no hop.

design: the server thread (S) captures the execution state, submits a
``Job`` to a ``concurrent.futures`` pool and waits on the job's commit
latch. When the app commits (first write, close, return or error) S calls
the server's ``start_response`` and returns a ``LiveBody`` that drains the
job's bounded ``Channel``. Only S ever talks to the server (SPEC 1.1).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING, Any

from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

from . import signals
from .body import OPENING, LiveBody, NoBody, whole_body
from .context import ExcludedKeys, capture
from .errors import ClientDisconnected
from .job import CANCELLED, COMMITTED, FAILED, Job
from .options import (
    ROUTE_OPTIONS,
    ErrorReporter,
    Options,
    SetupHook,
    TeardownHook,
    hook,
    make_options,
    seconds,
)
from .pool import LivePool

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["ROUTE_OPTIONS", "LiveMiddleware", "instances"]

log = logging.getLogger("live_wsgi")

#: Every middleware alive, so tests (and debugging) can find open streams.
instances: weakref.WeakSet[LiveMiddleware] = weakref.WeakSet()


class LiveMiddleware:
    """Run ``app`` on a worker pool and stream its response as it is written.

    :param app: any WSGI application, unchanged.
    :param when: ``when(environ)`` decides per request: falsy passes the
        request straight through (no hop), True runs it live, a mapping runs
        it live with some options overridden (``ROUTE_OPTIONS``).
    :param executor: a ``concurrent.futures.Executor`` to run on. By default
        the middleware owns a ``LivePool`` of ``max_workers`` threads
        (``live_wsgi.pool``: an Executor lighter than ``ThreadPoolExecutor``).
    :param max_workers: how many live responses may be produced at once
        (default 64). Each holds a server thread too: size the server's
        threads to match.
    :param queue_size: chunks that may wait for a slow client before writes
        block (default 10; ``None``: unbounded).
    :param queue_timeout: seconds a request waits for a free pool thread
        before it is answered ``503`` with ``Retry-After`` (default 5).
    :param commit_timeout: seconds the server thread waits for the app to
        commit once it runs, then answers ``504`` (default ``None``: as long
        as the app computes).
    :param write_timeout: seconds a write may stay blocked on a client that
        reads nothing before the stream is aborted (default 30).
    :param on_error: ``on_error(environ, exc)`` reports errors raised after
        the commit (to an error tracker, say). Errors before the commit are
        raised on the server thread as usual instead.
    :param excluded_keys: context variables (names or objects) and shared
        locals (names) that must not follow requests into the worker.
    :param setup: ``setup(environ)``, run on the worker before the app.
    :param teardown: ``teardown(environ, error)``, run on the worker once the
        app has finished and the body has ended, whatever happened.
    :param heartbeat: seconds of silence after which a ``text/event-stream``
        response gets a heartbeat comment (default 15; ``None``: never).
        Heartbeats keep proxies from closing idle streams and reveal clients
        that left. ``response.heartbeat`` overrides it per response.
    :param probe_interval: seconds between checks, while a body is idle,
        whether the client is still there, where the server exposes its
        socket or a disconnect check (default 1; ``None``: never). Nothing
        is written: this also works for downloads.
    :param retry_after: the ``Retry-After`` seconds of a 503 (default 5).
    :param default_content_type: sent when the app sets no Content-Type.

    ::

        app = LiveMiddleware(app, when=lambda environ: environ["PATH_INFO"]
                             .startswith("/stream/"))
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        when: Callable[[WSGIEnvironment], object] | None = None,
        executor: Executor | None = None,
        max_workers: int | None = None,
        queue_size: int | None = 10,
        queue_timeout: float = 5.0,
        commit_timeout: float | None = None,
        write_timeout: float | None = 30.0,
        on_error: ErrorReporter | None = None,
        excluded_keys: ExcludedKeys = (),
        setup: SetupHook | None = None,
        teardown: TeardownHook | None = None,
        heartbeat: float | None = 15.0,
        probe_interval: float | None = 1.0,
        retry_after: int = 5,
        default_content_type: str = "text/plain; charset=utf-8",
    ) -> None:
        if not callable(app):
            raise TypeError(f"LiveMiddleware needs a WSGI application (a callable), not {app!r}")
        self.app = app
        self.when = hook("when", when)
        self.on_error = hook("on_error", on_error)
        if executor is not None:
            if max_workers is not None:
                raise ValueError(
                    "pass either executor= or max_workers=, not both: "
                    "max_workers sizes the pool LiveMiddleware creates itself"
                )
            if not isinstance(executor, Executor):
                raise TypeError(
                    f"executor must be a concurrent.futures.Executor, not {executor!r}"
                )
            self._owns_executor = False
        else:
            if max_workers is None:
                max_workers = 64
            if (isinstance(max_workers, bool) or not isinstance(max_workers, int)
                    or max_workers < 1):
                raise ValueError(f"max_workers must be an int >= 1, not {max_workers!r}")
            executor = LivePool(max_workers, thread_name_prefix="live_wsgi")
            self._owns_executor = True
            # The pool's threads must not outlive their middleware (they do
            # not refer to it, so it can be collected while they wait).
            weakref.finalize(self, executor.shutdown, False)
        self.executor = executor
        # Our own pool runs a job without a Future.
        self._start = executor.start if isinstance(executor, LivePool) else None
        if isinstance(retry_after, bool) or not isinstance(retry_after, int) or retry_after < 0:
            raise ValueError(f"retry_after must be an int >= 0 (seconds), not {retry_after!r}")
        self.retry_after = retry_after
        if not isinstance(default_content_type, str) or not default_content_type:
            raise ValueError(
                f"default_content_type must be a MIME type str, not {default_content_type!r}"
            )
        self.default_content_type = default_content_type
        self.probe_interval = seconds("probe_interval", probe_interval, optional=True)
        self.options = self._make_options(
            None,
            heartbeat=heartbeat,
            queue_size=queue_size,
            queue_timeout=queue_timeout,
            commit_timeout=commit_timeout,
            write_timeout=write_timeout,
            excluded_keys=excluded_keys,
            setup=setup,
            teardown=teardown,
        )
        self._jobs: set[Job] = set()
        self._jobs_lock = threading.Lock()
        # Waited on by wait_idle() and shutdown(); notified by _job_done()
        # when the last job ends.
        self._idle = threading.Condition(self._jobs_lock)
        self._idle_waiters = 0  # notify only when somebody waits (a notify costs)
        self._closing = False
        self._warned_single_thread = False
        instances.add(self)

    # -- options -------------------------------------------------------------

    def _make_options(self, base: Options | None, **values: Any) -> Options:
        return make_options(base, **values)

    def options_for(self, environ: WSGIEnvironment) -> Options | None:
        """The options of this request, or None when it is not live.

        Override to route differently than with ``when``.
        """
        if self.when is None:
            return self.options
        decision = self.when(environ)
        if not decision:
            return None
        if decision is True:
            return self.options
        if isinstance(decision, Mapping):
            return self._make_options(self.options, **decision)
        raise TypeError(
            f"when() must return a bool or a mapping of live options, not {decision!r}"
        )

    # -- the request -----------------------------------------------------------

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        options = self.options_for(environ)
        if options is None:
            return self.app(environ, start_response)
        if not environ.get("wsgi.multithread", True) and not self._warned_single_thread:
            self._warned_single_thread = True
            log.warning(
                "live_wsgi: the server is not multithreaded (wsgi.multithread is "
                "false, e.g. gunicorn's sync worker): it serves one request at a "
                "time and may kill long streams at its timeout. Use gunicorn "
                "-k gthread (or gevent), waitress, or another threaded server."
            )
        if self._closing:  # the cheap check first; the atomic one below
            return self._unavailable(environ, start_response)
        job = Job(
            self.app, environ, options, capture(options.exclusions),
            self, self.default_content_type, self._job_done, self.on_error,
        )
        with self._jobs_lock:  # atomic against shutdown(): seen by it, or refused
            closing = self._closing
            if not closing:
                self._jobs.add(job)
        if closing:
            job.cancel()  # never registered: its books entry is a no-op
            return self._unavailable(environ, start_response)
        future: Future[None] | None = None
        try:
            if self._start is not None:
                self._start(job.ticket)
            else:
                future = self.executor.submit(job.ticket)
        except RuntimeError:  # the executor was shut down (or cannot start a thread)
            job.cancel()
            return self._unavailable(environ, start_response)
        except BaseException:
            job.cancel()
            raise
        try:
            state = job.wait_commit(
                options.queue_timeout, options.commit_timeout, self.probe_interval
            )
        except BaseException:
            # An outer timeout (gevent.Timeout), KeyboardInterrupt...: nobody
            # will read this response. The job must not run on unread.
            job.abandon()
            raise
        if state == COMMITTED:
            response = job.response
            try:
                start_response(response.status, response.wsgi_headers())
                if job.passthrough is not None:
                    return job.passthrough  # the server's own file wrapper
                if not signals.stream_closed.receivers:
                    whole = job.channel.take_whole()
                    if whole is not None:
                        # The producer is done and its body all queued: hand
                        # it over as it is, with nothing left to drain,
                        # probe or close (a short request's common case).
                        if response.event_stream and not response.whole and \
                                response.content_length is None:
                            whole.insert(0, OPENING)  # as LiveBody would open it
                        return whole_body(whole)
                if response.bodiless:
                    return NoBody(job)
                return LiveBody(job, response.heartbeat, self.probe_interval)
            except BaseException:
                # Nobody will read this body: the producer must not wait on it.
                job.channel.abort(ClientDisconnected, "the server refused the response")
                raise
        if state == FAILED:
            error = job.error
            job.error = None
            assert error is not None
            if isinstance(error, ClientDisconnected) and job.channel.aborted:
                # The client left before the commit and the app stopped for
                # it: an expected end (SPEC 5.3), not the server's 500.
                log.info("live_wsgi: %s %s: %s", environ.get("REQUEST_METHOD"),
                         environ.get("PATH_INFO"), error)
                del error
                start_response("503 Service Unavailable", [("Content-Length", "0")])
                return []
            try:
                raise error
            finally:
                del error
        if state == CANCELLED:
            if future is not None:
                future.cancel()
            return self._unavailable(environ, start_response)
        return self._gateway_timeout(start_response)

    def _unavailable(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        """No worker free (or shutting down): 503, or a clean end for EventSource."""
        accept = parse_accept_header(environ.get("HTTP_ACCEPT"), MIMEAccept)
        retry = self.retry_after
        event_source = any(value == "text/event-stream" and q > 0 for value, q in accept)
        if signals.stream_refused.receivers:
            signals.emit(signals.stream_refused, self, environ=environ,
                         method=environ.get("REQUEST_METHOD"), path=environ.get("PATH_INFO"),
                         answer="retry" if event_source else "503",
                         reason="shutdown" if self._closing else "busy")
        if event_source:
            # An EventSource gives up for good after any non-200 answer: tell
            # it when to come back instead, and end the stream cleanly.
            start_response("200 OK", [
                ("Content-Type", "text/event-stream"),
                ("Cache-Control", "no-cache"),
                ("X-Accel-Buffering", "no"),
            ])  # fmt: skip
            return [f"retry: {retry * 1000}\n\n".encode()]
        body = b"Service Unavailable: every live stream worker is busy; retry later.\n"
        start_response("503 Service Unavailable", [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Retry-After", str(retry)),
            ("Cache-Control", "no-store"),
        ])  # fmt: skip
        return [body]

    def _gateway_timeout(self, start_response: StartResponse) -> Iterable[bytes]:
        body = b"Gateway Timeout: the live response did not start in time.\n"
        start_response("504 Gateway Timeout", [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ])  # fmt: skip
        return [body]

    # -- bookkeeping ----------------------------------------------------------

    def _job_done(self, job: Job) -> None:
        with self._jobs_lock:
            self._jobs.discard(job)
            if self._idle_waiters and not self._jobs:
                self._idle.notify_all()

    @property
    def closing(self) -> bool:
        """True once ``shutdown`` started."""
        return self._closing

    @property
    def active_streams(self) -> int:
        """How many live requests are queued or running right now."""
        return len(self._jobs)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no live request is queued or running; True if so."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._jobs_lock:
            while self._jobs:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle_waiters += 1
                try:
                    self._idle.wait(remaining)
                finally:
                    self._idle_waiters -= 1
            return True

    def shutdown(self, grace: float = 0.0, *, timeout: float = 5.0) -> bool:
        """Stop streaming: for graceful server shutdown, and for tests.

        New live requests get 503, and so do those still waiting for a pool
        thread. Every ``stream.wait`` returns at once so producers can write
        a farewell; after ``grace`` seconds every stream still open is ended
        and its producer's next write raises ``StreamClosed``: cleanly (a
        complete body) for streams such as SSE, but *cut* for a download (a
        declared length, an attachment), which must never look complete when
        it is not. Then the pool is released, waiting up to ``timeout`` more
        seconds for producers to notice. Returns True when every producer
        finished.
        """
        with self._jobs_lock:
            self._closing = True
            jobs = list(self._jobs)
        for job in jobs:
            job.interrupt()
        if grace > 0:
            self.wait_idle(grace)
        with self._jobs_lock:
            jobs = list(self._jobs)
        for job in jobs:
            job.end_for_shutdown()
        finished = self.wait_idle(timeout)
        if self._owns_executor:
            self.executor.shutdown(wait=finished, cancel_futures=True)
        return finished
