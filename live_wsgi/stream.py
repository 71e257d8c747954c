"""The producer's side of a live response: ``write``, ``close``, ``wait``.

A ``Stream`` is used on the worker thread (or threads the app starts); the
server thread reads the same ``Channel`` from the other end.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from .channel import CUT, Channel
from .errors import ClientDisconnected, StreamClosed

if TYPE_CHECKING:
    from .response import LiveResponse

ErrorCallback = TypeVar("ErrorCallback", bound=Callable[[BaseException], object])


class Stream:
    """Write the body of a live response while it is being sent.

    The first ``write`` (an empty one too) or ``close`` commits the response:
    status and headers go to the client and can no longer change.

    :param error_callbacks: where ``on_error`` adds callbacks; the owner of
        the request (its job) runs them.
    """

    def __init__(
        self,
        response: LiveResponse,
        channel: Channel,
        write_timeout: float | None,
        error_callbacks: list[Callable[[BaseException], object]],
    ) -> None:
        # Weak: the response owns its stream, and a cycle between the two
        # would outlive the request until the cyclic GC found it.
        self._response_ref = weakref.ref(response)
        self._channel = channel
        self._write_timeout = write_timeout
        self._error_callbacks = error_callbacks
        #: When True, writes after the client went away are dropped silently
        #: (``write`` returns 0) instead of raising ``ClientDisconnected``,
        #: so the producer can finish its work.
        self.ignore_disconnect = False
        self._committed = False

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Stream {state} {self.bytes_written} bytes>"

    @property
    def bytes_written(self) -> int:
        """Bytes accepted by ``write`` (discarded writes of a bodiless response
        included); exact with any number of writer threads."""
        return self._channel.accepted

    def _commit(self) -> None:
        response = self._response
        if not response.committed:
            response.commit()
        self._committed = True  # from now on, writes go straight to the channel

    @property
    def _response(self) -> LiveResponse:
        response = self._response_ref()
        if response is None:
            # Only a stream kept beyond its request gets here: it is over.
            raise StreamClosed("the live request is over: its stream is closed")
        return response

    # -- writing -------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview | str) -> int:
        """Send ``data`` to the client; return the number of bytes written.

        ``str`` is encoded as UTF-8; ``bytearray`` and ``memoryview`` are
        copied before they are queued, so the caller may reuse them. Blocks
        while ``queue_size`` writes wait for a slow client. An empty write
        commits the response and sends nothing, but fails as any write would.

        :raises TypeError: for any other type.
        :raises ClientDisconnected: the client went away (``WriteTimeout``:
            it stopped reading); not raised with ``ignore_disconnect``.
        :raises StreamClosed: after ``close()`` or ``abort()``.
        :raises ContentLengthError: the write would pass the declared length.
        """
        if type(data) is bytes:
            chunk = data
        elif isinstance(data, str):
            chunk = data.encode("utf-8")
        elif isinstance(data, (bytes, bytearray, memoryview)):
            chunk = bytes(data)
        else:
            raise TypeError(
                "stream.write() takes bytes, bytearray, memoryview or str, "
                f"not {type(data).__name__}"
            )
        if not self._committed:
            self._commit()
        try:
            self._channel.put(chunk, self._write_timeout)
        except ClientDisconnected:
            if self.ignore_disconnect:
                return 0
            raise
        return len(chunk)

    def writeln(self, line: bytes | str) -> int:
        """Write ``line``, adding a newline unless it ends with one."""
        if isinstance(line, str):
            if not line.endswith("\n"):
                line += "\n"
        elif isinstance(line, (bytes, bytearray)):
            if not line.endswith(b"\n"):
                line = bytes(line) + b"\n"
        else:
            raise TypeError(f"stream.writeln() takes str or bytes, not {type(line).__name__}")
        return self.write(line)

    # -- ending --------------------------------------------------------------

    def close(self) -> None:
        """End the body. Idempotent; never blocks, even on a full queue.

        Commits the response if nothing was written yet.

        :raises ContentLengthError: the response declared a length that the
            body did not reach; the client sees an incomplete body.
        """
        response = self._response_ref()
        if response is not None:  # else the request is over: its body has ended
            response.end_body()

    def abort(self) -> None:
        """Stop now: drop what is queued and cut the connection.

        The client sees an incomplete body. Later writes raise ``StreamClosed``.
        """
        self._channel.abort(StreamClosed, "write() after the stream was aborted")

    def _fail(self) -> None:
        """End the body incomplete (after what is queued): the client can tell."""
        self._channel.end(CUT)

    @property
    def closed(self) -> bool:
        """True after ``close()`` or ``abort()``, or once the client went away."""
        return self._channel.ended

    @property
    def connected(self) -> bool:
        """True until the client goes away or the stream is aborted."""
        return not self._channel.aborted

    @property
    def shutting_down(self) -> bool:
        """True once the middleware shuts down: write a farewell and return."""
        return self._channel.shutting_down

    def wait(self, timeout: float | None) -> bool:
        """Sleep up to ``timeout`` seconds; wake early when the stream ends.

        Returns True early on a client disconnect, an abort, or a graceful
        shutdown of the middleware; False when the time simply ran out.
        Idle producers call this between ticks, so they learn promptly that
        nobody listens any more.
        """
        return self._channel.interrupted.wait(timeout)

    def add_waker(self, wake: Callable[[], object]) -> None:
        """Call ``wake()`` (once, on another thread) when ``wait`` would return
        early: the client left, the stream was aborted, or the middleware shuts
        down. For producers parked on something else than ``wait`` (a queue, a
        broker subscription); called at once if that already happened."""
        self._channel.add_waker(wake)

    def remove_waker(self, wake: Callable[[], object]) -> None:
        """Forget a ``wake`` given to ``add_waker`` (no error if unknown)."""
        self._channel.remove_waker(wake)

    # -- errors --------------------------------------------------------------

    def on_error(self, callback: ErrorCallback) -> ErrorCallback:
        """Call ``callback(exc)`` if the app fails after the commit.

        Also runs when the client disconnects and the producer does not catch
        ``ClientDisconnected``. Usable as a decorator. An exception inside a
        callback is logged and never stops the others or the cleanup.
        """
        if not callable(callback):
            raise TypeError(f"on_error() takes a callable, not {callback!r}")
        self._error_callbacks.append(callback)
        return callback
