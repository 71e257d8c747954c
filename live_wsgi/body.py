"""The body iterables the server thread hands to the server.

``LiveBody`` drains the job's channel: each ``next()`` returns what the
producer queued since the last one (merged into one write), ends at the
``EOF`` sentinel, and on ``CUT`` ends the response *incomplete*: it shuts
the client socket down where the server exposes it, or raises
``ResponseAborted`` so the server drops the connection without the final
chunk.

``close()`` before the end is an abort: the client went away (or the server
gave up on it), so the producer's next write raises ``ClientDisconnected``.
"""

from __future__ import annotations

import contextlib
import socket
from typing import TYPE_CHECKING

from .channel import EOF
from .errors import ClientDisconnected, ResponseAborted

if TYPE_CHECKING:
    from .job import Job

#: environ keys under which servers expose the client socket.
SOCKET_KEYS = ("gunicorn.socket", "werkzeug.socket")


def client_socket(environ: dict[str, object]) -> socket.socket | None:
    """The client's socket if the server exposes it for this HTTP/1 request."""
    if not str(environ.get("SERVER_PROTOCOL", "")).startswith("HTTP/1"):
        return None  # HTTP/2: the socket carries other requests too
    for key in SOCKET_KEYS:
        sock = environ.get(key)
        if sock is not None and hasattr(sock, "shutdown"):
            return sock  # type: ignore[return-value]
    return None


class LiveBody:
    """The iterable returned to the server for a live response with a body."""

    __slots__ = ("_closed", "_finished", "_job", "_take", "_tick", "bytes_sent")

    def __init__(self, job: Job, tick: float | None = None) -> None:
        self._job = job
        self._take = job.channel.take
        self._tick = tick
        self._finished = False
        self._closed = False
        #: Body bytes handed to the server so far.
        self.bytes_sent = 0

    def __iter__(self) -> LiveBody:
        return self

    def __next__(self) -> bytes:
        take = self._take
        while True:
            item = take(self._tick)
            if type(item) is bytes:
                self.bytes_sent += len(item)
                return item
            if item is None:
                self._idle()
                continue
            self._finished = True
            if item is EOF:
                raise StopIteration
            self._cut()

    def _idle(self) -> None:
        """Called every ``tick`` seconds while the producer writes nothing."""

    def _cut(self) -> None:
        sock = client_socket(self._job.environ)
        if sock is not None:
            with contextlib.suppress(OSError):  # the client may be gone already
                sock.shutdown(socket.SHUT_RDWR)
            raise StopIteration
        raise ResponseAborted(
            "live_wsgi ended this response incomplete (the app failed or "
            "aborted after the commit; the cause is on the 'live_wsgi' logger)"
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._finished:
            self._job.channel.abort(ClientDisconnected, "the client disconnected")


class NoBody:
    """The (empty) iterable for HEAD and 1xx/204/304 responses.

    The producer's writes are discarded; once the server closes this, the
    response is over and the producer's next write raises
    ``ClientDisconnected``, so an endless producer stops.
    """

    __slots__ = ("_job",)

    def __init__(self, job: Job) -> None:
        self._job = job

    def __iter__(self) -> NoBody:
        return self

    def __next__(self) -> bytes:
        raise StopIteration

    def close(self) -> None:
        self._job.channel.abort(
            ClientDisconnected,
            "the response has no body (HEAD, 1xx, 204 or 304) and was sent",
        )
