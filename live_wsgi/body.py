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

While the producer is silent the server thread still wakes every ``tick``:
for ``text/event-stream`` it sends a heartbeat comment after ``heartbeat``
seconds of silence, and where the server exposes the client socket (or
waitress's disconnect check) it probes it without writing, so a client that
left is noticed within about ``probe_interval`` even when nothing is sent.
"""

from __future__ import annotations

import contextlib
import socket
import time
from typing import TYPE_CHECKING

from . import signals
from .channel import COALESCE_LIMIT, EOF, SHUT
from .errors import ClientDisconnected, ResponseAborted
from .probe import client_socket, disconnect_probe

if TYPE_CHECKING:
    from .job import Job

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
                 "_outcome", "_probe", "_silent", "_take", "_tick", "bytes_sent")  # fmt: skip

    def __init__(
        self,
        job: Job,
        heartbeat: float | None = None,
        probe_interval: float | None = None,
    ) -> None:
        self._job = job
        self._take = job.channel.take
        response = job.response
        event_stream = response.header("Content-Type").lower().startswith("text/event-stream")
        if not event_stream:
            heartbeat = None
        # At the start of the body, so at a line boundary; never in a body of
        # a length the app declared, nor one the app returned whole.
        self._opening = event_stream and response.content_length is None and not response.whole
        self._heartbeat = heartbeat
        self._probe = disconnect_probe(job.environ) if probe_interval else None
        ticks = [t for t in (heartbeat, probe_interval if self._probe else None) if t]
        self._tick = min(ticks) if ticks else None
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
                self._outcome = "cut"
            self._cut()

    def _idle(self) -> bytes | None:
        """Every ``tick`` of silence: probe the client, maybe send a heartbeat."""
        assert self._tick is not None
        self._silent += self._tick
        if self._probe is not None and self._probe():
            self._outcome = "disconnected"
            self._job.channel.abort(ClientDisconnected, "the client disconnected")
            self._emit_disconnected()
            return None  # the next take() sees the abort and ends the body
        heartbeat = self._heartbeat
        if heartbeat is not None and self._silent >= heartbeat and self._last.endswith(b"\n"):
            # Only between lines: a comment inside a half-written line would
            # corrupt the event the producer is writing.
            self._silent = 0.0
            return HEARTBEAT
        return None

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
        if not self._finished:
            self._outcome = "disconnected"
            if job.channel.abort(ClientDisconnected, "the client disconnected"):
                self._emit_disconnected()
        if signals.stream_closed.receivers:
            signals.emit(signals.stream_closed, job.sender, **job.facts(),
                         bytes_sent=self.bytes_sent, outcome=self._outcome,
                         duration=time.monotonic() - job.started_at)


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
