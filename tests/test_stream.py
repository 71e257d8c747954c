"""The stream and its channel: SPEC 3.1-3.6."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import pytest

from live_wsgi import (
    ClientDisconnected,
    ContentLengthError,
    ResponseAborted,
    StreamClosed,
    WriteTimeout,
    current_response,
)
from live_wsgi.channel import COALESCE_LIMIT, CUT, EOF, Channel

from .support import WAIT, Recorder, chunks, open_stream, wait, webtest_app

pytestmark = pytest.mark.timeout(30)

BIG = b"x" * COALESCE_LIMIT  # never merged with a neighbour


def test_write_accepts_bytes_like_and_str(live: Any) -> None:
    """SPEC 3.1: bytes, bytearray, memoryview (copied) and str (UTF-8); returns the size."""
    sizes = []

    def app(environ: Any, start_response: Any) -> list[bytes]:
        stream = current_response().stream
        buffer = bytearray(b"abc")
        view = memoryview(bytearray(b"def"))
        sizes.append(stream.write(b"123"))
        sizes.append(stream.write(buffer))
        buffer[:] = b"XXX"  # copied before queueing: the client never sees this
        sizes.append(stream.write(view))
        view[:] = b"YYY"
        sizes.append(stream.write("caf\u00e9"))
        return []

    body = webtest_app(live(app), lint=True).get("/").body
    assert body == b"123abcdefcaf\xc3\xa9"
    assert sizes == [3, 3, 3, 5]


@pytest.mark.parametrize("bad", [42, None, ["a"], 3.5, object()])
def test_write_refuses_other_types(live: Any, bad: Any) -> None:
    """SPEC 3.1: anything else raises TypeError naming the type."""
    seen = Recorder()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        try:
            current_response().stream.write(bad)
        except TypeError as exc:
            seen["error"] = str(exc)
        return [b"ok"]

    webtest_app(live(app)).get("/")
    assert type(bad).__name__ in seen["error"]


def test_writeln_adds_newline_only_when_missing(live: Any) -> None:
    """SPEC 3.1: writeln(s) adds a newline only when missing."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        stream = current_response().stream
        assert stream.writeln("a") == 2
        stream.writeln("b\n")
        stream.writeln(b"c")
        stream.writeln(b"d\n")
        return []

    assert webtest_app(live(app), lint=True).get("/").body == b"a\nb\nc\nd\n"


def test_queue_is_bounded_and_write_times_out() -> None:
    """SPEC 3.2: a full queue blocks writes; past write_timeout WriteTimeout aborts."""
    channel = Channel(3)
    for _ in range(3):
        channel.put(BIG, timeout=0.05)
    assert len(channel._items) == 3
    with pytest.raises(WriteTimeout) as info:
        channel.put(BIG, timeout=0.05)
    assert isinstance(info.value, ClientDisconnected)
    assert isinstance(info.value, TimeoutError)
    assert channel.aborted and len(channel._items) == 0
    assert channel.take(0) is CUT


def test_backpressure_with_slow_reader(live: Any) -> None:
    """SPEC 3.2: a fast producer never holds more than queue_size chunks."""
    high_water = []
    mw = None

    def app(environ: Any, start_response: Any) -> list[bytes]:
        stream = current_response().stream
        channel = environ["live_wsgi.response"].stream._channel
        for _ in range(200):
            stream.write(BIG)
            high_water.append(len(channel._items))
        return []

    mw = live(app, queue_size=4)
    response = open_stream(mw)
    received = 0
    for chunk in chunks(response):  # reads one chunk at a time
        received += len(chunk)
    response.close()
    assert received == 200 * len(BIG)
    assert max(high_water) <= 4


def test_unbounded_queue_never_blocks() -> None:
    """SPEC 3.2: queue_size None means unbounded."""
    channel = Channel(None)
    for _ in range(100):
        channel.put(BIG, timeout=0)
    assert len(channel._items) == 100


def test_small_writes_merge_when_taken_bytes_unchanged() -> None:
    """SPEC 3.2: S takes what is queued as one chunk, the bytes unchanged."""
    channel = Channel(None)
    for i in range(1000):
        channel.put(b"%04d" % i, timeout=0)
    taken = channel.take(0)
    assert taken == b"".join(b"%04d" % i for i in range(1000))
    assert channel.take(0) is None


def test_backpressure_counts_writes_not_bytes() -> None:
    """SPEC 3.2: a producer of small events runs at most queue_size writes ahead
    of the client, whatever their size (no growing a queued chunk to 64 KiB)."""
    channel = Channel(10)
    event = b"data: " + b"x" * 192 + b"\n\n"
    for _ in range(10):
        channel.put(event, timeout=0)
    with pytest.raises(WriteTimeout):
        channel.put(event, timeout=0.05)  # the 11th write has no room


def test_a_write_blocks_only_while_the_queue_is_full() -> None:
    """SPEC 3.2: a write blocks only while the queue is full, where the writes S
    took and has not all handed to the server yet still count: S takes the four
    queued writes at once and hands them over one by one; the blocked writer gets
    its room when the last of them is handed over (the producer refills while it
    is sent), not one wake-up per chunk, and never a write more than queue_size
    ahead of the server."""
    channel = Channel(4)
    for _ in range(4):
        channel.put(BIG, timeout=0)
    written = threading.Event()
    failed: list[BaseException] = []

    def writer() -> None:
        try:
            channel.put(b"next", timeout=WAIT)
        except BaseException as exc:
            failed.append(exc)
        written.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(3):
            assert channel.take(WAIT) == BIG
            # Released only with the batch's last chunk: nothing rang the writer.
            assert not written.is_set()
            assert len(channel._items) + channel._held == 4
        assert channel.take(WAIT) == BIG  # the last of the batch: room for one
        wait(written, "the blocked writer to get its room")
        assert channel.take(WAIT) == b"next"
    finally:
        channel.abort(StreamClosed, "test over")
        thread.join(WAIT)
    assert failed == []


def test_a_client_reading_a_batch_slowly_is_never_cut() -> None:
    """SPEC 3.2: every chunk S hands over from a batch is progress: a writer with a
    1 s write_timeout, blocked behind three queued writes that S hands over 0.6 s
    apart (1.2 s in all), gets its room and is not cut."""
    channel = Channel(3)
    for _ in range(3):
        channel.put(BIG, timeout=0)
    outcome: list[object] = []
    finished = threading.Event()

    def writer() -> None:
        try:
            channel.put(BIG, timeout=1.0)
            outcome.append("written")
        except BaseException as exc:
            outcome.append(exc)
        finished.set()

    thread = threading.Thread(target=writer)
    thread.start()
    slow_client = threading.Event()  # never set: a paced wait, not a hope
    try:
        assert channel.take(0) == BIG
        for _ in range(2):
            slow_client.wait(0.6)
            assert channel.take(0) == BIG
        wait(finished, "the writer")
        assert channel.take(0) == BIG
    finally:
        channel.abort(StreamClosed, "test over")
        thread.join(WAIT)
    assert outcome == ["written"]


def test_a_batch_is_dropped_by_an_abort() -> None:
    """SPEC 4.1: after an abort nothing more is handed over, not even the rest of a
    batch S had taken."""
    channel = Channel(4)
    for _ in range(3):
        channel.put(BIG, timeout=0)
    assert channel.take(0) == BIG
    channel.abort(ClientDisconnected, "gone")
    assert channel.take(0) is CUT


def test_write_timeout_restarts_whenever_the_client_reads() -> None:
    """SPEC 3.2: write_timeout measures a client that makes no progress. A writer
    waits 1.8 s for room in all (longer than its 1 s write_timeout) while the
    client reads every 0.6 s and another writer refills the queue each time:
    the client makes progress, so the writer is never cut."""
    channel = Channel(1)
    channel.put(BIG, timeout=0)
    outcome: list[object] = []
    finished = threading.Event()

    def writer() -> None:
        try:
            channel.put(BIG, timeout=1.0)
            outcome.append("written")
        except BaseException as exc:
            outcome.append(exc)
        finished.set()

    thread = threading.Thread(target=writer)
    thread.start()
    slow_client = threading.Event()  # never set: a paced wait, not a hope
    taken = []
    try:
        for _ in range(2):
            slow_client.wait(0.6)
            taken.append(channel.take(0))
            if not finished.is_set():
                channel.put(BIG, timeout=WAIT)  # the other writer takes the room
        slow_client.wait(0.6)
        taken.append(channel.take(0))
        wait(finished, "the writer")
    finally:
        channel.abort(StreamClosed, "test over")
        thread.join(WAIT)
    assert outcome == ["written"]


def test_reader_timeouts_racing_writers_lose_and_hang_nothing() -> None:
    """SPEC 3.2: the reader's wake-up survives timeouts that race the writers.

    The reader waits with timeouts so short that many expire while a writer
    is signalling it; every byte still arrives, in order, and the reader
    never sleeps through a chunk that was queued.
    """
    channel = Channel(4)
    count = 3000
    sent = [b"%05d" % n + BIG[:n % 3 * 30000] for n in range(count)]

    def produce() -> None:
        for n, data in enumerate(sent):
            channel.put(data, timeout=10)
            if n % 7 == 0:
                threading.Event().wait(0.00001)  # let the reader run dry
        channel.end()

    writer = threading.Thread(target=produce)
    writer.start()
    received = []
    timeouts = 0
    while True:
        item = channel.take(0.00005)
        if item is None:
            timeouts += 1
            assert timeouts < 1_000_000, "the reader never saw the end"
            continue
        if item is EOF:
            break
        received.append(item)
    writer.join(10)
    assert not writer.is_alive()
    assert b"".join(received) == b"".join(sent)
    # No stale wake-up is left behind: the signal is held, and a fresh wait
    # runs to its timeout.
    assert channel._reader._bell.locked()
    assert channel.take(0.01) is None
    assert channel._reader._bell.locked()


def test_close_is_idempotent_and_write_after_close_raises(live: Any) -> None:
    """SPEC 3.3: close() twice is fine; a later write raises StreamClosed."""
    seen = Recorder()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        stream = current_response().stream
        stream.write(b"body")
        stream.close()
        stream.close()
        assert stream.closed
        try:
            stream.write(b"more")
        except StreamClosed as exc:
            seen["error"] = exc
        return []

    assert webtest_app(live(app), lint=True).get("/").body == b"body"
    assert isinstance(seen["error"], StreamClosed)


def test_close_never_deadlocks_on_full_queue_with_vanished_client(live: Any) -> None:
    """SPEC 3.3: close() on a full queue whose client left returns at once."""
    seen = Recorder()
    full = threading.Event()
    left = threading.Event()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        stream = current_response().stream
        stream.write(BIG)
        stream.write(BIG)  # queue_size=2: after the reader took one, it is full
        full.set()
        wait(left, "client left")
        stream.close()  # must not block on the full queue
        seen["closed"] = True
        return []

    mw = live(app, queue_size=2, write_timeout=None)
    response = open_stream(mw)
    wait(full, "full queue")
    response.close()  # the client vanished without reading
    left.set()
    assert mw.wait_idle(10)
    assert seen["closed"] is True


def test_close_on_full_queue_with_present_client() -> None:
    """SPEC 3.3: close() never waits for room; the end queues behind the data."""
    channel = Channel(1)
    channel.put(BIG, timeout=0)
    assert channel.end() is True
    assert channel.end() is False
    assert channel.take(0) == BIG
    assert channel.take(0) is EOF


def test_app_returning_without_close_ends_the_body(live: Any) -> None:
    """SPEC 3.4: a finished app never leaves the body open."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        current_response().stream.write(b"no explicit close")
        return []

    mw = live(app)
    response = open_stream(mw)
    assert b"".join(chunks(response)) == b"no explicit close"  # iteration ends
    response.close()
    assert mw.wait_idle(10)


def test_end_is_a_sentinel_distinct_from_empty_chunks(live: Any) -> None:
    """SPEC 3.5: empty writes never end the body; the end is a private sentinel."""
    channel = Channel(4)
    channel.end()
    item = channel.take(0)
    assert item is EOF and item != b"" and not isinstance(item, bytes)

    def app(environ: Any, start_response: Any) -> list[bytes]:
        stream = current_response().stream
        stream.write(b"")
        stream.write(b"a")
        stream.write(b"")
        stream.write(b"b")
        return [b"", b"c"]

    response = open_stream(live(app))
    received = list(chunks(response))
    response.close()
    assert b"".join(received) == b"abc"
    assert b"" not in received  # an empty chunk could end a chunked body early


def test_wait_returns_early_on_disconnect(live: Any) -> None:
    """SPEC 3.6: stream.wait() wakes (True) on disconnect; False when time runs out."""
    seen = Recorder()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        stream = current_response().stream
        seen["timed out"] = stream.wait(0.01)
        stream.write(b"waiting")
        seen["woken"] = stream.wait(60)
        seen["connected"] = stream.connected
        return []

    mw = live(app)
    response = open_stream(mw)
    next(chunks(response))
    response.close()
    assert mw.wait_idle(10)
    assert seen["timed out"] is False
    assert seen["woken"] is True
    assert seen["connected"] is False


def test_declared_length_mismatch_is_an_error(live: Any) -> None:
    """SPEC 3.4: a body shorter or longer than its declared length is cut, never complete."""
    seen = Recorder()

    def short(environ: Any, start_response: Any) -> list[bytes]:
        current_response().content_length = 10
        current_response().stream.write(b"12345")
        return []

    def long(environ: Any, start_response: Any) -> list[bytes]:
        current_response().content_length = 3
        current_response().stream.write(b"123")
        try:
            current_response().stream.write(b"4")
        except ContentLengthError as exc:
            seen["error"] = exc
            raise
        return []

    from live_wsgi import ResponseAborted

    for app in (short, long):
        response = open_stream(live(app))
        assert response.headers["Content-Length"] in ("10", "3")
        with pytest.raises(ResponseAborted):
            b"".join(chunks(response))
        response.close()
    assert isinstance(seen["error"], ContentLengthError)


def test_empty_write_fails_like_any_write(live: Any) -> None:
    """SPEC 3.3, 4.1: an empty write after close() raises StreamClosed; after a
    disconnect ClientDisconnected, or returns 0 with ignore_disconnect."""
    seen = Recorder()
    gone = threading.Event()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        stream = current_response().stream
        if environ["PATH_INFO"] == "/closed":
            stream.close()
            try:
                stream.write(b"")
            except StreamClosed as exc:
                seen["closed"] = exc
            return []
        stream.write(b"x")
        wait(gone, "the client to leave")
        try:
            stream.write(b"")
        except ClientDisconnected as exc:
            seen["gone"] = exc
        stream.ignore_disconnect = True
        seen["ignored"] = stream.write(b"")
        return []

    mw = live(app)
    assert webtest_app(mw).get("/closed").body == b""
    response = open_stream(mw, "/gone")
    assert next(chunks(response)) == b"x"
    response.close()
    gone.set()
    assert mw.wait_idle(WAIT)
    assert isinstance(seen["closed"], StreamClosed)
    assert isinstance(seen["gone"], ClientDisconnected)
    assert seen["ignored"] == 0


def test_writers_on_many_threads_keep_the_count_exact(live: Any) -> None:
    """SPEC 3.1, 3.2: several producer threads writing one stream: bytes_written
    and the Content-Length check stay exact (one lock)."""
    import sys

    threads_n, writes, size = 8, 500, 7
    seen = Recorder()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        response = current_response()
        response.content_length = threads_n * writes * size
        stream = response.stream

        def produce() -> None:
            for _ in range(writes):
                stream.write(b"x" * size)

        helpers = [threading.Thread(target=produce) for _ in range(threads_n)]
        for helper in helpers:
            helper.start()
        for helper in helpers:
            helper.join(WAIT)
        seen["written"] = stream.bytes_written
        return []  # closes: a short count would fail the length check here

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show
    try:
        mw = live(app, queue_size=None)
        response = open_stream(mw)
        body = b"".join(chunks(response))
        response.close()
    finally:
        sys.setswitchinterval(interval)
    assert mw.wait_idle(WAIT)
    assert seen["written"] == threads_n * writes * size
    assert body == b"x" * (threads_n * writes * size)  # complete, not cut


def test_writers_on_many_threads_never_pass_the_declared_length(live: Any) -> None:
    """SPEC 3.1: the Content-Length check and the count are one step under one
    lock: writers blocked on a full queue can never together pass the length."""
    limit = 20 * len(BIG)
    seen = Recorder()
    errors: list[BaseException] = []

    def app(environ: Any, start_response: Any) -> list[bytes]:
        response = current_response()
        response.content_length = limit
        stream = response.stream

        def produce() -> None:
            try:
                for _ in range(20):
                    stream.write(BIG)  # never merged: every write may block
            except (ContentLengthError, StreamClosed) as exc:
                errors.append(exc)

        helpers = [threading.Thread(target=produce) for _ in range(8)]
        for helper in helpers:
            helper.start()
        for helper in helpers:
            helper.join(WAIT)
        seen["written"] = stream.bytes_written
        return []

    mw = live(app, queue_size=2)  # writers block, many at once
    response = open_stream(mw)
    received = []
    with contextlib.suppress(ResponseAborted):
        received.extend(chunks(response))
    response.close()
    assert mw.wait_idle(WAIT)
    assert seen["written"] <= limit
    assert len(b"".join(received)) <= limit
    assert any(isinstance(exc, ContentLengthError) for exc in errors)


def test_close_with_a_writer_still_blocked_is_short_not_complete(live: Any) -> None:
    """SPEC 3.3, 5.2: bytes a writer has not delivered yet (blocked on a full queue)
    do not count toward the declared length: close() cuts the body."""
    seen = Recorder()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        response = current_response()
        response.content_length = 2 * len(BIG)
        stream = response.stream
        stream.write(BIG)  # fills the queue (queue_size=1; nobody reads yet)
        helper = threading.Thread(target=lambda: _quietly(stream.write, BIG))
        helper.start()
        channel = stream._channel
        deadline = time.monotonic() + WAIT
        while not channel._writers_waiting and time.monotonic() < deadline:
            threading.Event().wait(0.001)  # the helper is blocked: its bytes are not queued
        try:
            stream.close()
        except ContentLengthError as exc:
            seen["error"] = exc
        closed.set()
        helper.join(WAIT)
        return []

    closed = threading.Event()
    mw = live(app, queue_size=1)
    response = open_stream(mw)
    wait(closed, "close()")  # the client reads nothing until then
    received = []
    with pytest.raises(ResponseAborted):
        received.extend(chunks(response))
    response.close()
    assert mw.wait_idle(WAIT)
    assert isinstance(seen["error"], ContentLengthError)
    assert b"".join(received) == BIG


def _quietly(fn: Any, *args: Any) -> None:
    with contextlib.suppress(StreamClosed, ClientDisconnected):
        fn(*args)


def test_wakers_run_on_every_kind_of_abort() -> None:
    """SPEC 3.6: add_waker callbacks run when the stream is aborted by a client
    that left, by shutdown, and by a write that timed out (write_timeout)."""
    woken: list[str] = []
    for cause in ("abort", "interrupt", "write timeout"):
        channel = Channel(1)
        channel.add_waker(lambda cause=cause: woken.append(cause))
        if cause == "abort":
            channel.abort(ClientDisconnected, "gone")
        elif cause == "interrupt":
            channel.interrupt()
        else:
            channel.put(b"x", timeout=0)
            with pytest.raises(WriteTimeout):
                channel.put(b"y", timeout=0.01)
    assert woken == ["abort", "interrupt", "write timeout"]
    late: list[bool] = []
    channel.add_waker(lambda: late.append(True))  # already aborted: at once
    assert late == [True]
