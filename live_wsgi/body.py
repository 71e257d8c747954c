"""The body iterables the server thread hands to the server.

``LiveBody`` drains the job's channel: each ``next()`` returns what the
producer queued since the last one (merged into one write), ends at the
``EOF`` sentinel, and on ``CUT`` ends the response *incomplete*: it shuts
the client socket down where the server exposes it, or raises
``ResponseAborted`` so the server drops the connection without the final
chunk.

``close()`` before the end is an abort: the client went away (or the server
gave up on it), so the producer's next write raises ``ClientDisconnected``.

A ``text/event-stream`` body opens with an SSE comment line, so the server
sends the head at the commit, not with the first event.

While the producer is silent, a client that left must still be noticed
within about ``probe_interval`` (SPEC 4.2). The first time a body's wait for
the producer runs out (after ``probe_interval``, or the heartbeat if that
comes first) it hands the client's socket to the process's watcher
(``live_wsgi.watcher``), which aborts the channel the moment the client
hangs up; from then on the server thread wakes only to send a heartbeat
comment after ``heartbeat`` seconds of silence (``text/event-stream``), or
not at all. Where there is no watcher (waitress gives only a disconnect
check; no ``epoll``) the server thread probes every ``probe_interval``
instead. Nothing of this is made for a body that never waits: most end first.
"""

from __future__ import annotations

import contextlib
import socket
import time
from typing import TYPE_CHECKING

from . import signals
from .channel import COALESCE_LIMIT, EOF, SHUT
from .errors import ClientDisconnected, ResponseAborted
from .probe import client_socket, disconnect_probe, raw_client_socket
from .watcher import watcher

if TYPE_CHECKING:
    from collections.abc import Callable

    from .job import Job
    from .watcher import Watch

#: What a heartbeat sends: an SSE comment line, ignored by every client.
HEARTBEAT = b": heartbeat\n"

#: The first chunk of every live ``text/event-stream`` body: an empty SSE
#: comment line. Servers send the status line and headers only with the
#: first body bytes (PEP 3333 asks them to wait), so without it an app that
#: commits and then waits for its first event keeps the head from the
#: browser, and ``EventSource.onopen`` from firing, until that event.
OPENING = b":\n"

class LiveBody:
    """The iterable returned to the server for a live response with a body.

    :param heartbeat: seconds of silence before a heartbeat comment is sent
        (only for ``text/event-stream``); None for never.
    :param probe_interval: seconds between disconnect probes while idle;
        None for never.
    """

    __slots__ = ("_closed", "_finished", "_heartbeat", "_job", "_last", "_opening",
                 "_outcome", "_probe", "_probe_interval", "_silent", "_take", "_tick",
                 "_waited", "_watch", "bytes_sent")  # fmt: skip

    def __init__(
        self,
        job: Job,
        heartbeat: float | None = None,
        probe_interval: float | None = None,
    ) -> None:
        self._job = job
        self._take = job.channel.take
        response = job.response
        event_stream = response.event_stream
        if not event_stream:
            heartbeat = None
        # At the start of the body, so at a line boundary; never in a body of
        # a length the app declared, nor one the app returned whole.
        self._opening = event_stream and response.content_length is None and not response.whole
        self._heartbeat = heartbeat
        self._probe_interval = probe_interval
        # How long a take() waits for the producer. At first until the first
        # look at the client (made only then: most bodies never wait that
        # long) or the first heartbeat; then see _idle().
        if probe_interval and not (heartbeat and heartbeat < probe_interval):
            self._tick: float | None = probe_interval
        else:
            self._tick = heartbeat or None
        self._waited = False
        self._probe: Callable[[], bool] | None = None
        self._watch: Watch | None = None
        self._silent = 0.0
        self._last = b"\n"
        self._finished = False
        self._closed = False
        self._outcome = "complete"
        #: Body bytes handed to the server so far (heartbeats included).
        self.bytes_sent = 0

    def __iter__(self) -> LiveBody:
        return self

    def __next__(self) -> bytes:
        if self._finished:
            raise StopIteration  # and again for every later call, never a block
        if self._opening:
            self._opening = False
            self.bytes_sent += len(OPENING)
            return OPENING
        take = self._take
        while True:
            item = take(self._tick)
            if type(item) is bytes:
                self.bytes_sent += len(item)
                self._silent = 0.0
                self._last = item
                return item
            if item is None:
                beat = self._idle()
                if beat is None:
                    continue
                self.bytes_sent += len(beat)
                return beat
            self._finished = True
            if item is EOF or (item is SHUT and not self._job.response.is_download):
                raise StopIteration
            if self._outcome == "complete":
                if self._watch is not None and self._watch.hung_up:
                    # The watcher saw the client leave and aborted: tell it
                    # here, on the server thread, as a probe would have.
                    self._outcome = "disconnected"
                    self._emit_disconnected()
                else:
                    self._outcome = "cut"
            self._cut()

    def _idle(self) -> bytes | None:
        """A wait for the producer ran out: look at the client, maybe send a heartbeat."""
        assert self._tick is not None
        self._silent += self._tick
        if not self._waited:
            self._waited = True
            self._watch_client()
        if self._probe is not None and self._probe():
            self._outcome = "disconnected"
            self._job.channel.abort(ClientDisconnected, "the client disconnected")
            self._emit_disconnected()
            return None  # the next take() sees the abort and ends the body
        heartbeat = self._heartbeat
        beat = None
        if heartbeat is not None and self._silent >= heartbeat and self._last.endswith(b"\n"):
            # Only between lines: a comment inside a half-written line would
            # corrupt the event the producer is writing.
            self._silent = 0.0
            beat = HEARTBEAT
        if self._probe is None:
            # Nothing to ask on the server thread: wake only when a heartbeat
            # is due (another period if it could not be sent mid-line).
            if heartbeat is None:
                self._tick = None
            elif self._silent < heartbeat:
                self._tick = heartbeat - self._silent
            else:
                self._tick = heartbeat
        return beat

    def _watch_client(self) -> None:
        """The body waits for the first time: have the watcher tell when the
        client leaves, or else probe it every ``probe_interval`` from here."""
        if not self._probe_interval:
            return
        environ = self._job.environ
        raw = raw_client_socket(environ)
        if raw is not None:
            watching = watcher()
            if watching is not None:
                try:
                    self._watch = watching.watch(raw, self._job.channel)
                    return
                except OSError:
                    pass  # closed under us: the probe says so
        self._probe = disconnect_probe(environ)

    def _emit_disconnected(self) -> None:
        job = self._job
        if not signals.client_disconnected.receivers:
            return
        signals.emit(signals.client_disconnected, job.sender, **job.facts(),
                     bytes_sent=self.bytes_sent,
                     duration=time.monotonic() - job.started_at)

    def _cut(self) -> None:
        sock = client_socket(self._job.environ)
        if sock is not None:
            with contextlib.suppress(OSError):  # the client may be gone already
                sock.shutdown(socket.SHUT_RDWR)
            raise StopIteration
        if self._outcome == "disconnected":
            # The probe (waitress's own check) saw the client gone: nothing can
            # reach it, so there is nothing to cut. Raising would only make the
            # server log an expected event as an error with a traceback
            # (SPEC 5.3); waitress logs the end of the request at INFO.
            raise StopIteration
        raise ResponseAborted(
            "live_wsgi ended this response incomplete (the app failed or "
            "aborted after the commit; the cause is on the 'live_wsgi' logger)"
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        job = self._job
        watch = self._watch
        try:
            if not self._finished:
                self._outcome = "disconnected"
                aborted = job.channel.abort(ClientDisconnected, "the client disconnected")
                # Or the watcher aborted, and the server, failing to write
                # to the gone client, closes without another next().
                if aborted or (watch is not None and watch.hung_up):
                    self._emit_disconnected()
            if signals.stream_closed.receivers:
                signals.emit(signals.stream_closed, job.sender, **job.facts(),
                             bytes_sent=self.bytes_sent, outcome=self._outcome,
                             duration=time.monotonic() - job.started_at)
        finally:
            if watch is not None:
                # Before the server closes the socket (it calls close() first).
                self._watch = None
                watch.cancel()


class NoBody:
    """The (empty) iterable for HEAD and 1xx/204/304 responses.

    The producer's writes are discarded; once the server closes this, the
    response is over and the producer's next write raises
    ``ClientDisconnected``, so an endless producer stops.
    """

    __slots__ = ("_closed", "_job")

    def __init__(self, job: Job) -> None:
        self._job = job
        self._closed = False

    def __iter__(self) -> NoBody:
        return self

    def __next__(self) -> bytes:
        raise StopIteration

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        job = self._job
        job.channel.abort(
            ClientDisconnected,
            "the response has no body (HEAD, 1xx, 204 or 304) and was sent",
        )
        if signals.stream_closed.receivers:
            signals.emit(signals.stream_closed, job.sender, **job.facts(),
                         bytes_sent=0, outcome="complete",
                         duration=time.monotonic() - job.started_at)


class WholeBody(list[bytes]):
    """A body that was complete when the server thread got it: a list of its
    bytes, as a plain app returns. Nothing is left to drain, probe or
    cut, so ``close()`` has nothing to do (it is there for code that calls
    it on any body)."""

    __slots__ = ()

    def close(self) -> None:
        pass


def whole_body(parts: list[bytes]) -> WholeBody:
    """A complete body as the list the server writes: one part if small."""
    if len(parts) > 1:
        size = 0
        for part in parts:
            size += len(part)
        if size <= COALESCE_LIMIT:
            return WholeBody((b"".join(parts),))
    return WholeBody(parts)
