"""The bounded body queue between the producer (W) and the server thread (S).

design: one lock, as in CPython's ``queue.py``, but no ``Condition``: the
one reader (the server thread) and each writer blocked on a full queue
sleep on a ``Doorbell``, a raw lock released only when its sleeper is known
to wait. A channel is built per request, and every Condition or Event costs
several objects; a fast producer to a client of big chunks blocks once per
chunk, where a Condition's Python bookkeeping would be paid twice. Any
number of producer threads may ``put`` (an app can write from helper
threads); one consumer, the server thread, ``take``\\s. The end of
the body travels through the queue as a private sentinel (``EOF`` for a
complete body, ``CUT`` for one that must end without its final chunk), so
an empty chunk can never be mistaken for the end. ``abort`` is different:
it empties the queue at once and wakes everybody, because nobody will read
what is queued.

Backpressure counts writes (SPEC 3.2): each ``put`` queues one item, and a
producer runs at most ``maxsize`` writes ahead of the client, whatever
their size, so a stream holds at most ``maxsize`` times its largest write.
A writer blocks only while the queue is full, and what the reader took
but has not all handed to the server yet counts as queued (see below);
``write_timeout`` measures a client that makes *no progress*: the deadline
restarts whenever the reader hands a chunk over.

Speed: the limit is a server writing a plain generator, one socket write per
chunk. ``take`` takes everything queued at once, joined into chunks of up
to ``COALESCE_LIMIT`` bytes, so a producer of small writes costs the server
one socket write per wake-up, not one per write. When that makes several
chunks (big writes), the reader hands them over one per ``take`` without
the lock, and their writes stay counted until the last one is handed over:
then a blocked producer is woken once, and refills the queue while that
last chunk is sent. Waking it at every chunk instead cost a thread switch
per chunk, about a third of the throughput of 64 KiB writes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Final

from .errors import ContentLengthError, LiveError, StreamClosed, WriteTimeout

#: ``take`` joins queued writes into one chunk up to this size. 64 KiB is the
#: size at which one more ``send()`` costs little next to the copy, and what
#: gunicorn and waitress hand to the kernel comfortably in one call.
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
#: End of a body by a shutdown: complete for a stream, cut for a download;
#: the server thread decides when it takes it, once the response committed.
SHUT: Final = _Marker("SHUT")

Item = bytes | _Marker | None


class Doorbell:
    """One thread's wake-up, cheaper than a ``Condition`` (no waiter deque).

    The sleeper calls ``sleep`` with the guarding lock held; a waker calls
    ``ring`` with the same lock held. A raw lock is the bell: held while
    nobody rings, released once by a ring, and only when somebody sleeps.
    """

    __slots__ = ("_bell", "_sleeping")

    def __init__(self) -> None:
        self._bell = threading.Lock()
        self._bell.acquire()
        self._sleeping = False

    def ring(self) -> None:
        # With the guarding lock held.
        if self._sleeping:
            self._sleeping = False
            self._bell.release()

    def sleep(self, lock: threading.Lock, timeout: float | None) -> None:
        """Release ``lock`` and sleep until a ring or ``timeout``; return with
        ``lock`` held again. The caller looks at its state again."""
        bell = self._bell
        rung = False
        self._sleeping = True
        lock.release()
        try:
            rung = bell.acquire(True, -1 if timeout is None else timeout)
        finally:
            lock.acquire()
            if self._sleeping:
                self._sleeping = False  # nobody rang: timed out
            elif not rung:
                # A ring came just after the timeout (or an exception): take
                # it back, so the bell is held for the next sleep.
                bell.acquire()


class Channel:
    """A bounded queue of body writes with end, abort and interrupt.

    :param maxsize: how many writes may wait for the reader; ``None`` for no
        bound.
    """

    # Defaults on the class: a channel is built per request, and most of
    # them never change most of these (set on the instance when they do).
    # The writers' and the reader's Doorbells and the Event are made the
    # first time anybody needs them: a short request needs none.
    # The bells of the writers blocked on a full queue (each rung once, by
    # take, end, discard or abort); made when the first writer must wait.
    _writer_bells: list[Doorbell] | None = None
    # Writes the reader took as a batch of several chunks and has not all
    # handed over yet: they still count against maxsize (see take).
    _held = 0
    # The batch's chunks still to hand over, last first (the reader's own).
    _batch: list[bytes] = []  # never mutated: replaced by a list of its own
    _spare_bell: Doorbell | None = None
    # The reader's wake-up, rung under _lock; made when the reader first sleeps.
    _reader: Doorbell | None = None
    # How many times the reader took: a blocked writer's deadline restarts
    # when this moves (the client made progress).
    _takes = 0
    _writers_waiting = 0
    _ended = False
    _discard = False
    # False once the channel ended, was aborted or discards: put's fast path.
    _open = True
    # After abort(): the exception class and message writers get.
    _abort_error: tuple[type[LiveError], str] | None = None
    _interrupted: threading.Event | None = None
    # Called (once each) when the stream is interrupted: things a producer
    # may sleep on besides Stream.wait (a broker subscription).
    _wakers: list[Callable[[], object]] | None = None
    #: Set by interrupt(): the middleware is shutting down.
    shutting_down = False
    #: The exact body length the response declared, or None.
    limit: int | None = None
    #: Bytes accepted by ``put`` (discarded ones too, and those of writers
    #: still blocked): exact with any number of writer threads, counted
    #: under the lock.
    accepted = 0
    # Bytes actually queued (or discarded): what the client will get.
    _queued = 0

    def __init__(self, maxsize: int | None) -> None:
        self._lock = threading.Lock()
        # A list, not a deque (a tenth of its size: one per open stream); the
        # reader takes everything up to a marker at once, so nothing is
        # removed from its front one by one.
        self._items: list[bytes | _Marker] = []
        self._maxsize = maxsize or 0

    @property
    def interrupted(self) -> threading.Event:
        """Set by abort(), interrupt() and shut(): what ``Stream.wait`` sleeps on."""
        with self._lock:
            if self._interrupted is None:
                self._interrupted = threading.Event()
                if self._abort_error is not None or self.shutting_down:
                    self._interrupted.set()
            return self._interrupted

    def add_waker(self, wake: Callable[[], object]) -> None:
        """Call ``wake()`` when the stream is aborted or interrupted (at once if
        it was already): how a producer parked elsewhere (a broker
        subscription) learns what ``Stream.wait`` would."""
        with self._lock:
            if not (self._abort_error is not None or self.shutting_down):
                if self._wakers is None:
                    self._wakers = []
                self._wakers.append(wake)
                return
        wake()

    def remove_waker(self, wake: Callable[[], object]) -> None:
        with self._lock:
            if self._wakers is not None and wake in self._wakers:
                self._wakers.remove(wake)

    def _run_wakers(self) -> None:
        # Without the lock: a waker takes its own.
        wakers, self._wakers = self._wakers, None
        for wake in wakers or ():
            wake()

    def _wake_reader(self) -> None:
        # With the lock held.
        reader = self._reader
        if reader is not None:
            reader.ring()

    # -- producer side -----------------------------------------------------

    def put(self, data: bytes, timeout: float | None) -> None:
        """Queue ``data`` as one write, blocking while ``maxsize`` writes wait.

        An empty ``data`` queues nothing but is checked like any write.

        :raises StreamClosed: after ``end``.
        :raises ContentLengthError: ``data`` would pass ``limit``; the
            channel is aborted.
        :raises LiveError: after an abort, the abort's error (a
            ``WriteTimeout`` when ``timeout`` ran out with no progress).
        """
        size = len(data)
        try:
            with self._lock:
                if self._open and size:  # the common case first: room, nothing to check
                    accepted = self.accepted + size
                    limit = self.limit
                    if (limit is None or accepted <= limit) and not (
                        self._maxsize and len(self._items) + self._held >= self._maxsize
                    ):
                        self.accepted = accepted
                        self._queued += size
                        self._items.append(data)
                        reader = self._reader
                        if reader is not None and reader._sleeping:
                            reader.ring()
                        return
                if self._abort_error is not None:
                    raise self._make_abort_error()
                if self._ended:
                    raise StreamClosed("write() after the stream was closed")
                accepted = self.accepted + size
                if self.limit is not None and accepted > self.limit:
                    self._abort_locked(StreamClosed, "write() after the stream was aborted")
                    raise ContentLengthError(
                        f"the body is longer than its declared Content-Length {self.limit}: "
                        f"{self.accepted} bytes were written and {size} more offered"
                    )
                # Counted before a wait, so concurrent writers see each other's
                # bytes against the limit; given back if the write fails.
                self.accepted = accepted
                if not size or self._discard:
                    self._queued += size
                    return
                items = self._items
                if self._maxsize and len(items) + self._held >= self._maxsize:
                    try:
                        self._wait_writable(timeout)
                    except BaseException:
                        self.accepted -= size
                        raise
                self._queued += size
                if self._discard:
                    return
                items.append(data)
                reader = self._reader
                if reader is not None and reader._sleeping:
                    reader.ring()
        except LiveError:
            # This write aborted the channel (too long, write_timeout): wake
            # whatever else the producer's threads sleep on.
            if self._wakers and self._abort_error is not None:
                self._run_wakers()
            raise

    def put_whole(self, parts: list[bytes], size: int) -> bool:
        """Queue a whole body and its end (``EOF``) in one step, never blocking.

        ``parts`` are non-empty ``bytes`` of ``size`` bytes in all: the body
        an app returned whole. Returns False, having done nothing, when they
        must go one ``put`` at a time instead: more parts than the queue has
        room for, or a size that does not match ``limit`` (so the error is
        the one a write or ``finish`` raises).

        :raises StreamClosed: after ``end``.
        :raises LiveError: after an abort, the abort's error.
        """
        with self._lock:
            if self._abort_error is not None:
                raise self._make_abort_error()
            if self._ended:
                raise StreamClosed("write() after the stream was closed")
            if self.limit is not None and size != self.limit:
                return False
            items = self._items
            if self._maxsize and len(items) + self._held + len(parts) > self._maxsize:
                return False
            self.accepted += size
            self._queued += size
            if not self._discard:
                items.extend(parts)
            self._end_locked(EOF)
            return True

    def _wait_writable(self, timeout: float | None) -> None:
        # Called with the lock held and the queue full; returns with room,
        # or raises. A writer sleeps on a Doorbell of its own, not on a
        # Condition: with a fast producer and a big-chunk client this wait
        # happens once per chunk, and a Condition costs several times more.
        bells = self._writer_bells
        if bells is None:
            bells = self._writer_bells = []
        # One bell is kept for the next wait: a producer ahead of its client
        # waits once per write, and usually alone.
        bell = self._spare_bell
        if bell is None:
            bell = Doorbell()
        else:
            self._spare_bell = None
        self._writers_waiting += 1
        try:
            takes = self._takes
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                if self._abort_error is not None:
                    raise self._make_abort_error()
                if self._ended:
                    raise StreamClosed("write() after the stream was closed")
                if self._discard or len(self._items) + self._held < self._maxsize:
                    return
                remaining = None
                if deadline is not None:
                    if self._takes != takes:  # the client read: a new deadline
                        takes = self._takes
                        deadline = time.monotonic() + timeout  # type: ignore[operator]
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self._abort_locked(
                            WriteTimeout,
                            f"the client read nothing for {timeout:g} s "
                            "(write_timeout); the stream is aborted",
                        )
                        continue
                bells.append(bell)
                bell.sleep(self._lock, remaining)
                if bell in bells:  # timed out: nobody rang (and took it out)
                    bells.remove(bell)
        finally:
            self._writers_waiting -= 1
            if bell not in bells:  # (an exception may leave it in: not reused then)
                self._spare_bell = bell

    def finish(self) -> int | None:
        """End a body its producer completed: ``EOF``, or ``CUT`` when it is
        shorter than ``limit``. Never blocks.

        Returns how many bytes it fell short (0: complete), or None when it
        had ended or been aborted already. Counts what was *queued*: a writer
        still blocked on a full queue has not delivered its bytes.
        """
        with self._lock:
            short = 0 if self.limit is None else max(0, self.limit - self._queued)
            if not self._end_locked(CUT if short else EOF):
                return None
            return short

    def end(self, marker: _Marker = EOF) -> bool:
        """Queue the end of the body (``EOF`` or ``CUT``). Never blocks.

        Returns False when the body had ended or been aborted already.
        """
        if self._ended:  # never set back: no lock needed to see it
            return False
        with self._lock:
            return self._end_locked(marker)

    def _end_locked(self, marker: _Marker) -> bool:
        if self._ended or self._abort_error is not None:
            return False
        self._ended = True
        self._open = False
        self._items.append(marker)
        self._wake_reader()
        # Writers blocked on a full queue must not wait for room that the
        # end of the body will never make.
        if self._writers_waiting:
            self._notify_writers()
        return True

    def discard(self) -> None:
        """From now on drop every write: the response has no body."""
        with self._lock:
            self._discard = True
            self._open = False
            self._items.clear()
            if self._writers_waiting:
                self._notify_writers()

    def _notify_writers(self) -> None:
        # With the lock held, when _writers_waiting (so _writer_bells exists).
        bells = self._writer_bells
        assert bells is not None
        for bell in bells:
            bell.ring()
        bells.clear()

    # -- either side -------------------------------------------------------

    def abort(self, error: type[LiveError], message: str) -> bool:
        """Drop everything queued; every later ``put`` raises ``error``.

        Returns False when the channel was aborted already.
        """
        with self._lock:
            aborted = self._abort_locked(error, message)
        if self._wakers:
            self._run_wakers()
        return aborted

    def _abort_locked(self, error: type[LiveError], message: str) -> bool:
        if self._abort_error is not None:
            return False
        self._abort_error = (error, message)
        self._open = False
        self._items.clear()
        self._wake_reader()
        if self._writers_waiting:
            self._notify_writers()
        if self._interrupted is not None:
            self._interrupted.set()
        return True

    def interrupt(self) -> None:
        """Wake every ``Stream.wait`` without aborting (graceful shutdown)."""
        with self._lock:
            self._interrupt_locked()
        if self._wakers:
            self._run_wakers()

    def _interrupt_locked(self) -> None:
        self.shutting_down = True
        if self._interrupted is not None:
            self._interrupted.set()

    def shut(self) -> bool:
        """End the body for a shutdown (``SHUT``); also wakes ``Stream.wait``."""
        with self._lock:
            self._interrupt_locked()
            ended = self._end_locked(SHUT)
        if self._wakers:
            self._run_wakers()
        return ended

    @property
    def aborted(self) -> bool:
        return self._abort_error is not None

    @property
    def ended(self) -> bool:
        """True once the end of the body was queued, or the channel aborted."""
        return self._ended or self._abort_error is not None

    def _make_abort_error(self) -> LiveError:
        assert self._abort_error is not None
        cls, message = self._abort_error
        return cls(message)

    # -- consumer side -----------------------------------------------------

    def take_whole(self) -> list[bytes] | None:
        """Everything queued, if that is the whole rest of a complete body
        (it ends with ``EOF``), taken at once: what the server thread returns
        instead of a body to drain. None (nothing taken) otherwise."""
        with self._lock:
            items = self._items
            if not items or items[-1] is not EOF or self._abort_error is not None:
                return None
            items.pop()
            parts: list[bytes] = list(items)  # type: ignore[arg-type]
            items.clear()
            self._takes += 1
            return parts

    def take(self, timeout: float | None) -> Item:
        """The next body bytes, ``EOF``, ``CUT``, or None when ``timeout`` ran out.

        Takes everything queued at once, joined into chunks of up to
        ``COALESCE_LIMIT`` bytes (a larger write comes alone), and returns
        them one per call. While more than one chunk is left to hand over,
        the writes they hold still count against ``maxsize``: they are
        released when the last of them is handed over (so a producer of big
        writes is woken once per batch, not once per chunk, and refills
        while the last one is sent). Each chunk handed over is progress for
        ``write_timeout``. After an abort returns ``CUT``.
        """
        batch = self._batch
        if batch:  # only the reader touches the batch: no lock
            if self._abort_error is not None:
                batch.clear()
                return CUT
            self._takes += 1  # the client made progress
            data = batch.pop()
            if not batch:
                with self._lock:
                    self._held = 0
                    if self._writers_waiting:
                        self._notify_writers()
            return data
        with self._lock:
            items = self._items
            if not items:
                if self._abort_error is not None:
                    return CUT
                if timeout is not None and timeout <= 0:
                    return None
                reader = self._reader
                if reader is None:
                    reader = self._reader = Doorbell()
                reader.sleep(self._lock, timeout)
                if not items:
                    return CUT if self._abort_error is not None else None
            first = items[0]
            if type(first) is not bytes:
                del items[0]
                return first  # EOF or CUT
            if len(items) == 1:
                items.clear()
                data = first
            else:
                data = self._gather(items)
            self._takes += 1
            if self._writers_waiting:
                self._notify_writers()
            return data

    def _gather(self, items: list[bytes | _Marker]) -> bytes:
        # With the lock held: take what is queued (up to a marker) into
        # chunks of up to COALESCE_LIMIT; return the first chunk, keep the
        # others as the batch (reversed, popped from the end).
        chunks: list[bytes] = []
        parts: list[bytes] = []
        size = 0
        count = 0
        for item in items:
            if type(item) is not bytes:
                break
            count += 1
            if parts and size + len(item) > COALESCE_LIMIT:
                chunks.append(parts[0] if len(parts) == 1 else b"".join(parts))
                parts = [item]
                size = len(item)
            else:
                parts.append(item)
                size += len(item)
        del items[:count]
        chunks.append(parts[0] if len(parts) == 1 else b"".join(parts))
        if len(chunks) > 1:
            chunks.reverse()
            data = chunks.pop()
            self._batch = chunks
            self._held = count  # released with the batch's last chunk
            return data
        return chunks[0]
