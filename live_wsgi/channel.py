"""The bounded body queue between the producer (W) and the server thread (S).

design: one lock, as in CPython's ``queue.py``, but no ``Condition`` on
the hot path: the one reader (the server thread) sleeps on a raw lock that a
writer releases only when the reader is known to wait, and writers blocked
on a full queue wait on a ``Condition`` made the first time one must. A
channel is built per request, and every Condition or Event costs several
objects. Any number of producer threads may ``put`` (an app can write from
helper threads); one consumer, the server thread, ``take``\\s. The end of
the body travels through the queue as a private sentinel (``EOF`` for a
complete body, ``CUT`` for one that must end without its final chunk), so
an empty chunk can never be mistaken for the end. ``abort`` is different:
it empties the queue at once and wakes everybody, because nobody will read
what is queued.

Speed: the limit is a server writing a plain generator, one socket write per
chunk. While the reader is busy on the socket, small writes are merged into
the chunk at the tail of the queue (up to ``COALESCE_LIMIT`` bytes), and
``take`` hands over everything queued at once. The client receives the same
bytes, in fewer, larger writes; the queue bound still counts chunks, so
memory stays within ``maxsize * max(chunk size, COALESCE_LIMIT)``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Final

from .errors import LiveError, WriteTimeout

#: Small writes are merged into one queued chunk up to this size. 64 KiB is
#: the size at which one more ``send()`` costs little next to the copy, and
#: what gunicorn and waitress hand to the kernel comfortably in one call.
COALESCE_LIMIT: Final = 64 * 1024


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<live_wsgi {self.name}>"


#: End of a complete body.
EOF: Final = _Marker("EOF")
#: End of a body that must look incomplete to the client (error after commit).
CUT: Final = _Marker("CUT")

Item = bytes | _Marker | None


class Channel:
    """A bounded queue of byte chunks with close, fail and abort.

    :param maxsize: how many chunks may wait; ``None`` for no bound.
    """

    def __init__(self, maxsize: int | None) -> None:
        # Cheap to make: a channel is built per request, and a Condition or
        # an Event costs several objects. Only raw locks here; the writers'
        # Condition and the Event are made the first time anybody needs them.
        self._lock = threading.Lock()
        # The reader's wake-up: held (locked) while nobody signals it. A
        # waker releases it once, under _lock, only when _reader_waiting.
        self._reader_signal = threading.Lock()
        self._reader_signal.acquire()
        # Waited on by writers while the queue is full; notified by take()
        # and by end(), discard() and abort(). Made on first use.
        self._writable: threading.Condition | None = None
        self._chunks: deque[bytes | bytearray | _Marker] = deque()
        self._maxsize = maxsize or 0
        # Hysteresis: a writer blocked on a full queue is woken only once the
        # queue has drained to half. Waking it for every chunk taken costs a
        # thread switch per chunk, which dominates with large chunks.
        self._low_water = self._maxsize // 2
        self._reader_waiting = False
        self._writers_waiting = 0
        self._ended = False
        self._discard = False
        # After abort(): the exception class and message writers get.
        self._abort_error: tuple[type[LiveError], str] | None = None
        self._interrupted: threading.Event | None = None
        #: Set by interrupt(): the middleware is shutting down.
        self.shutting_down = False

    @property
    def interrupted(self) -> threading.Event:
        """Set by abort() and interrupt(): what ``Stream.wait`` sleeps on."""
        with self._lock:
            if self._interrupted is None:
                self._interrupted = threading.Event()
                if self._abort_error is not None or self.shutting_down:
                    self._interrupted.set()
            return self._interrupted

    def _wake_reader(self) -> None:
        # With the lock held.
        if self._reader_waiting:
            self._reader_waiting = False
            self._reader_signal.release()

    # -- producer side -----------------------------------------------------

    def put(self, data: bytes, timeout: float | None) -> None:
        """Queue ``data`` (non-empty ``bytes``), blocking while the queue is full.

        Raises the abort error after an abort, ``StreamClosed``-style errors
        are the caller's business: after ``end`` this raises ``_Ended``.
        On timeout the channel is aborted with ``on_timeout`` and that error
        is raised.
        """
        with self._lock:
            if self._abort_error is not None:
                raise self._make_abort_error()
            if self._ended:
                raise _Ended
            if self._discard:
                return
            chunks = self._chunks
            if chunks:
                tail = chunks[-1]
                if len(tail) + len(data) <= COALESCE_LIMIT:  # type: ignore[arg-type]
                    # The reader has not taken the tail yet: grow it in place
                    # instead of queueing another chunk. Never mutate the
                    # caller's bytes: copy into a bytearray on first merge.
                    if type(tail) is bytearray:
                        tail += data
                    else:
                        merged = bytearray(tail)  # type: ignore[arg-type]
                        merged += data
                        chunks[-1] = merged
                    return
                if self._maxsize and len(chunks) >= self._maxsize:
                    self._wait_writable(timeout)
                    if self._discard:
                        return
            chunks.append(data)
            if self._reader_waiting:
                self._wake_reader()

    def _wait_writable(self, timeout: float | None) -> None:
        # Called with the lock held and the queue full.
        deadline = None if timeout is None else time.monotonic() + timeout
        writable = self._writable
        if writable is None:
            writable = self._writable = threading.Condition(self._lock)
        self._writers_waiting += 1
        try:
            while len(self._chunks) > self._low_water:
                if deadline is None:
                    writable.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self._abort_locked(
                            WriteTimeout,
                            f"the client read nothing for {timeout:g} s "
                            "(write_timeout); the stream is aborted",
                        )
                        break
                    writable.wait(remaining)
                if self._abort_error is not None:
                    break
                if self._ended:
                    raise _Ended
                if self._discard:
                    break
        finally:
            self._writers_waiting -= 1
        if self._abort_error is not None:
            raise self._make_abort_error()

    def end(self, marker: _Marker = EOF) -> bool:
        """Queue the end of the body (``EOF`` or ``CUT``). Never blocks.

        Returns False when the body had ended or been aborted already.
        """
        with self._lock:
            if self._ended or self._abort_error is not None:
                return False
            self._ended = True
            self._chunks.append(marker)
            self._wake_reader()
            # Writers blocked on a full queue must not wait for room that
            # the end of the body will never make.
            if self._writers_waiting:
                self._notify_writers()
            return True

    def discard(self) -> None:
        """From now on drop every write: the response has no body."""
        with self._lock:
            self._discard = True
            self._chunks.clear()
            if self._writers_waiting:
                self._notify_writers()

    def _notify_writers(self) -> None:
        # With the lock held, when _writers_waiting (so _writable exists).
        assert self._writable is not None
        self._writable.notify_all()

    # -- either side -------------------------------------------------------

    def abort(self, error: type[LiveError], message: str) -> bool:
        """Drop everything queued; every later ``put`` raises ``error``.

        Returns False when the channel was aborted already.
        """
        with self._lock:
            return self._abort_locked(error, message)

    def _abort_locked(self, error: type[LiveError], message: str) -> bool:
        if self._abort_error is not None:
            return False
        self._abort_error = (error, message)
        self._chunks.clear()
        self._wake_reader()
        if self._writers_waiting:
            self._notify_writers()
        if self._interrupted is not None:
            self._interrupted.set()
        return True

    def interrupt(self) -> None:
        """Wake every ``Stream.wait`` without aborting (graceful shutdown)."""
        with self._lock:
            self.shutting_down = True
            if self._interrupted is not None:
                self._interrupted.set()

    @property
    def aborted(self) -> bool:
        return self._abort_error is not None

    def _make_abort_error(self) -> LiveError:
        assert self._abort_error is not None
        cls, message = self._abort_error
        return cls(message)

    # -- consumer side -----------------------------------------------------

    def take(self, timeout: float | None) -> Item:
        """The next body bytes, ``EOF``, ``CUT``, or None when ``timeout`` ran out.

        Hands over everything queued up to ``COALESCE_LIMIT`` bytes in one
        ``bytes`` object. After an abort returns ``CUT``.
        """
        with self._lock:
            chunks = self._chunks
            if not chunks:
                if self._abort_error is not None:
                    return CUT
                if timeout is not None and timeout <= 0:
                    return None
                self._wait_readable(timeout)
                if not chunks:
                    return CUT if self._abort_error is not None else None
            first = chunks.popleft()
            if type(first) is bytes:
                data: bytes = first
            elif isinstance(first, _Marker):
                return first
            else:
                data = bytes(first)
            if chunks and len(data) < COALESCE_LIMIT:
                parts = [data]
                size = len(data)
                while chunks:
                    nxt = chunks[0]
                    if isinstance(nxt, _Marker) or size + len(nxt) > COALESCE_LIMIT:
                        break
                    parts.append(chunks.popleft())  # type: ignore[arg-type]
                    size += len(nxt)
                if len(parts) > 1:
                    data = b"".join(parts)
            if self._writers_waiting and len(chunks) <= self._low_water:
                self._notify_writers()
            return data

    def _wait_readable(self, timeout: float | None) -> None:
        """Sleep until a waker signals or ``timeout`` runs out. Called, and
        returns, with the lock held; the caller looks at the queue again."""
        signal = self._reader_signal
        signalled = False
        self._reader_waiting = True
        self._lock.release()
        try:
            signalled = signal.acquire(True, -1 if timeout is None else timeout)
        finally:
            self._lock.acquire()
            if self._reader_waiting:
                self._reader_waiting = False  # nobody signalled: timed out
            elif not signalled:
                # A waker released the signal just after the timeout (or an
                # exception): take it back, so it is held for the next wait.
                signal.acquire()


class _Ended(Exception):
    """Internal: put() after end(); the stream turns it into StreamClosed."""
