"""The disconnect watcher: idle bodies cost no wake-ups, and a client that leaves is
still noticed within the probe interval (SPEC 4.2, 3.6)."""

from __future__ import annotations

import gc
import itertools
import os
import queue
import socket
import threading
import time
import types
import uuid
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import live_wsgi.watcher
from live_wsgi import SSE, current_response, signals
from live_wsgi.body import HEARTBEAT, OPENING, LiveBody
from live_wsgi.channel import Channel
from live_wsgi.testing import open_stream
from live_wsgi.watcher import watcher

from .realserver import Server, gunicorn
from .support import WAIT, Recorder
from .tls import LoopbackTLS, tcp_pair

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(watcher() is None, reason="no epoll here: idle bodies probe instead"),
]

PROBE_INTERVAL = 0.05


@pytest.fixture
def idle_calls(monkeypatch: pytest.MonkeyPatch) -> Counter[int]:
    """How many times each body's wait for its producer ran out (by ``id(body)``)."""
    counts: Counter[int] = Counter()
    lock = threading.Lock()
    original = LiveBody._idle

    def counted(self: LiveBody) -> bytes | None:
        with lock:
            counts[id(self)] += 1
        return original(self)

    monkeypatch.setattr(LiveBody, "_idle", counted)
    return counts


def idle_producer(seen: Recorder, sse: bool = False) -> Callable[..., list[bytes]]:
    """An app that writes once, then only waits: no write can reveal a disconnect."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        response = current_response()
        if sse:
            SSE(response.stream).write("hello")
        else:
            response.headers["Content-Type"] = "text/csv"
            response.stream.write(b"id,value\n")
        woke = response.stream.wait(30)
        seen[environ["QUERY_STRING"]] = (woke, response.stream.connected)
        return []

    return app


class Serving:
    """A GET on ``sock``'s connection, its body iterated on a thread of its own as a
    server thread does: every chunk as it comes, then ``close()``."""

    def __init__(self, mw: Any, sock: socket.socket, key: str = "") -> None:
        self.body = open_stream(mw, f"/?{key}", **{"gunicorn.socket": sock}).response
        self.chunks: queue.Queue[bytes | None] = queue.Queue()
        #: When each chunk was handed over, on the server thread's clock.
        self.times: list[float] = []
        self.thread = threading.Thread(target=self._serve, name="test-server-thread")
        self.thread.start()

    def _serve(self) -> None:
        try:
            for chunk in self.body:
                self.times.append(time.monotonic())
                self.chunks.put(chunk)
        finally:
            self.chunks.put(None)
            self.body.close()  # type: ignore[attr-defined]

    def next_chunk(self) -> bytes | None:
        """The next chunk sent; None once the body ended."""
        try:
            return self.chunks.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError(f"no chunk within {WAIT} s") from None

    def stop(self) -> None:
        """The server gives up on the response (if it has not ended), and its thread ends."""
        self.body.close()  # type: ignore[attr-defined]
        self.thread.join(WAIT)
        assert not self.thread.is_alive()

    def __enter__(self) -> Serving:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"timed out after {WAIT} s waiting for {what}"
        threading.Event().wait(0.01)


def idle_for(seconds: float) -> None:
    """Let time pass while nothing should happen: what is asserted is what did not."""
    threading.Event().wait(seconds)


@pytest.fixture
def disconnects() -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    with signals.client_disconnected.connected_to(lambda sender, **facts: seen.append(facts)):
        yield seen


def test_idle_bodies_do_not_wake_for_probes(
    live: Any, idle_calls: Counter[int], disconnects: list[dict[str, Any]],
) -> None:
    """SPEC 4.2: idle bodies whose clients stay cost no wake-ups (the watcher asks the
    kernel for all of them); when the clients leave, every producer learns at once
    (``stream.wait`` returns True) and ``client_disconnected`` is sent once each."""
    seen = Recorder()
    mw = live(idle_producer(seen), heartbeat=None, probe_interval=PROBE_INTERVAL)
    pairs = [tcp_pair() for _ in range(20)]
    responses = [Serving(mw, server, str(i)) for i, (server, _) in enumerate(pairs)]
    try:
        for response in responses:
            assert response.next_chunk() == b"id,value\n"
        # Each body's first wait runs out after the probe interval: it hands its socket
        # to the watcher then, and waits for nothing but its producer from there on.
        wait_until(lambda: len(idle_calls) == len(responses), "every body to go idle")
        idle_for(10 * PROBE_INTERVAL)
        assert sorted(idle_calls.values()) == [1] * len(responses)  # not 10 each
        for _, client in pairs:
            client.close()
        for response in responses:
            assert response.next_chunk() is None  # the body ended: the client is gone
    finally:
        for response in responses:
            response.stop()
        for server, client in pairs:
            server.close()
            client.close()
    assert mw.wait_idle(WAIT)
    assert seen.facts == {str(i): (True, False) for i in range(len(responses))}
    assert len(disconnects) == len(responses)


@pytest.fixture(params=["tcp", "tls"])
def connection(request: Any) -> Iterator[tuple[socket.socket, socket.socket]]:
    """(server side, client side) of a loopback connection, plain TCP or TLS."""
    pair: tuple[socket.socket, socket.socket]
    pair = tcp_pair() if request.param == "tcp" else LoopbackTLS().connected_pair()
    yield pair
    for sock in pair:
        sock.close()


def test_bytes_sent_ahead_neither_end_the_stream_nor_wake_the_watcher(
    live: Any, idle_calls: Counter[int], connection: tuple[socket.socket, socket.socket],
) -> None:
    """SPEC 4.2: a pipelined request (or, over TLS, any record) the server leaves unread
    is no disconnect, and does not keep the watcher awake; a close behind it is seen."""
    server, client = connection
    seen = Recorder()
    mw = live(idle_producer(seen), heartbeat=None, probe_interval=PROBE_INTERVAL)
    with Serving(mw, server) as response:
        assert response.next_chunk() == b"id,value\n"
        wait_until(lambda: len(idle_calls) == 1, "the body to go idle")
        the_watcher = watcher()
        assert the_watcher is not None
        wakeups = the_watcher.wakeups
        client.sendall(b"GET /next HTTP/1.1\r\n")
        idle_for(10 * PROBE_INTERVAL)
        assert the_watcher.wakeups == wakeups
        assert seen.get("") is None  # the producer still waits
        client.close()
        assert response.next_chunk() is None
    assert mw.wait_idle(WAIT)
    assert seen[""] == (True, False)


def test_heartbeats_are_the_only_wake_ups(live: Any, idle_calls: Counter[int]) -> None:
    """SPEC 4.2: an idle event stream whose client stays gets its heartbeat after each
    ``heartbeat`` seconds of silence, never earlier, and its server thread wakes for
    nothing else once the watcher has its socket."""
    heartbeat = 0.2
    seen = Recorder()
    mw = live(idle_producer(seen, sse=True), heartbeat=heartbeat, probe_interval=PROBE_INTERVAL)
    server, client = tcp_pair()
    try:
        with Serving(mw, server) as response:
            assert response.next_chunk() == OPENING
            assert response.next_chunk() == b"data: hello\n\n"
            for _ in range(3):
                assert response.next_chunk() == HEARTBEAT
            times = response.times[1:5]  # the event, then each heartbeat
            assert all(b - a >= heartbeat * 0.99 for a, b in itertools.pairwise(times)), times
            # One wake at the first probe interval (the socket goes to the watcher),
            # then one per heartbeat, not one per probe interval (12).
            assert list(idle_calls.values()) == [4]
            client.close()
            while (chunk := response.next_chunk()) is not None:
                assert chunk == HEARTBEAT
    finally:
        server.close()
        client.close()
    assert mw.wait_idle(WAIT)
    assert seen[""] == (True, False)


def test_a_socket_closed_while_watched_leaves_the_watcher_working(live: Any) -> None:
    """SPEC 4.2: the server closing a watched socket (its number then given to another
    connection) neither breaks the watcher nor, when the first body closes late,
    unregisters the second: its client's leaving is still seen."""
    seen = Recorder()
    mw = live(idle_producer(seen), heartbeat=None, probe_interval=PROBE_INTERVAL)
    first_server, first_client = tcp_pair()
    first = Serving(mw, first_server, "first")
    second_server = second_client = None
    try:
        assert first.next_chunk() == b"id,value\n"
        the_watcher = watcher()
        assert the_watcher is not None
        wait_until(lambda: first_server.fileno() in the_watcher._watches, "the first watch")
        server, second_client = tcp_pair()
        number = first_server.fileno()
        first_server.close()  # while watched
        # The next connection gets the very same descriptor number.
        assert os.dup2(server.fileno(), number) == number
        server.close()
        second_server = socket.socket(fileno=number)
        second = Serving(mw, second_server, "second")
        with second:
            assert second.next_chunk() == b"id,value\n"
            wait_until(lambda: the_watcher._watches.get(number) is not None
                       and the_watcher._watches[number] is not first.body._watch,  # type: ignore[attr-defined]
                       "the second watch")
            first.stop()  # the server gives up on the first one, late
            assert seen["first"] == (True, False)
            second_client.close()
            assert second.next_chunk() is None  # seen by the watcher all the same
        assert seen["second"] == (True, False)
    finally:
        first.stop()
        first_client.close()
        for sock in (second_server, second_client):
            if sock is not None:
                sock.close()
    assert mw.wait_idle(WAIT)


def test_without_a_watcher_thread_the_body_probes(
    live: Any, monkeypatch: pytest.MonkeyPatch, idle_calls: Counter[int],
) -> None:
    """SPEC 4.2: when the watcher cannot start its thread (the process is out of
    threads), an idle body probes its client itself and still sees it leave."""
    the_watcher = watcher()
    assert the_watcher is not None

    class Unstartable(threading.Thread):
        def start(self) -> None:
            raise RuntimeError("can't start new thread")

    # The watcher's own view of the threading module only: the pool still starts threads.
    monkeypatch.setattr(live_wsgi.watcher, "threading",
                        types.SimpleNamespace(Thread=Unstartable, Lock=threading.Lock))
    seen = Recorder()
    mw = live(idle_producer(seen), heartbeat=None, probe_interval=PROBE_INTERVAL)
    server, client = tcp_pair()
    try:
        with Serving(mw, server) as response:
            assert response.next_chunk() == b"id,value\n"
            wait_until(lambda: sum(idle_calls.values()) >= 3, "the body to probe")
            assert not the_watcher._watches
            client.close()
            assert response.next_chunk() is None
    finally:
        server.close()
        client.close()
    assert mw.wait_idle(WAIT)
    assert seen[""] == (True, False)


def test_the_watcher_keeps_no_request_alive() -> None:
    """SPEC 4.2: watching a socket holds its channel weakly: a request that is over is
    freed, watched or not."""
    the_watcher = watcher()
    assert the_watcher is not None
    server, client = socket.socketpair()
    channel = Channel(None)
    watch = the_watcher.watch(server, channel)
    try:
        ref = weakref.ref(channel)
        del channel
        gc.collect()
        assert ref() is None
        client.close()  # the watcher sees it, finds nobody to tell, and goes on
    finally:
        watch.cancel()
        server.close()
        client.close()


def test_the_watcher_thread_runs_only_while_something_is_watched() -> None:
    """SPEC 4.2: the watcher's thread starts with the first watch and leaves with the
    last one; the next watch starts it again."""
    the_watcher = watcher()
    assert the_watcher is not None
    for _ in range(2):
        server, client = socket.socketpair()
        channel = Channel(None)
        watch = the_watcher.watch(server, channel)
        assert _watcher_threads()
        client.close()
        wait_until(lambda w=watch: w.hung_up, "the watcher to see the client leave")
        assert channel.aborted
        watch.cancel()
        for thread in _watcher_threads():
            thread.join(WAIT)
        assert not _watcher_threads()
        server.close()


def _watcher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "live_wsgi-watcher" and t.is_alive()]


# -- real servers ---------------------------------------------------------------------

APP = "tests.apps.idle_app:app"
STREAMS = 20


def _idle_streams_wake_only_for_heartbeats(server: Server) -> None:
    keys = [uuid.uuid4().hex for _ in range(STREAMS)]
    responses = [server.get(f"/idle?key={key}") for key in keys]
    try:
        for response in responses:
            response.read_until(b"data: hello\n\n")
        for response in responses:  # each body gave its socket to the watcher before it
            assert response.next_chunk() == HEARTBEAT
        before = server.get_json("/stats")
        for response in responses:
            assert response.next_chunk() == HEARTBEAT
        after = server.get_json("/stats")
        # Probing, each stream's server thread (or greenlet) would wake ten times per
        # heartbeat (every 0.05 s for 0.5 s). Now once, to send it.
        idle = after["idle"] - before["idle"]  # type: ignore[operator]
        assert idle == STREAMS, f"{idle} wake-ups for {STREAMS} heartbeats"
        for response in responses:
            response.close()
        for key in keys:
            assert server.get_json(f"/result?key={key}") == {"woke": True, "connected": False}
    finally:
        for response in responses:
            response.close()


def worker(kind: str) -> list[str]:
    """gunicorn's arguments for a worker of ``kind`` with room for every stream."""
    if kind == "gevent":
        return ["--worker-class", "gevent"]
    return ["--worker-class", "gthread", "--threads", str(STREAMS + 16)]


@pytest.mark.parametrize("kind", ["gthread", "gevent"])
def test_idle_streams_on_a_real_server(kind: str) -> None:
    """SPEC 4.2, 8.1: on gunicorn gthread and gevent, idle event streams wake their
    worker only for heartbeats, and clients that leave free their producers."""
    with gunicorn(APP, *worker(kind)) as server:
        _idle_streams_wake_only_for_heartbeats(server)


@pytest.mark.parametrize("kind", ["gthread", "gevent"])
def test_a_forked_worker_has_a_working_watcher(kind: str) -> None:
    """SPEC 4.2: under ``gunicorn --preload`` the worker is forked from a master whose
    watcher already ran; the worker gets one of its own, and clients that leave idle
    streams are noticed there."""
    env = {"IDLE_APP_WATCH_IN_MASTER": "1"}
    if kind == "gevent":  # the master's watcher is a greenlet then, and outlives the fork
        env["IDLE_APP_GEVENT_PRELOAD"] = "1"
    with gunicorn(APP, "--preload", *worker(kind), env=env) as server:
        key = uuid.uuid4().hex
        before = server.get_json("/stats")["idle"]
        # No heartbeat: a write that fails cannot tell the client left, only the watcher.
        response = server.get(f"/idle?key={key}&quiet=1")
        response.read_until(b"data: hello\n\n")
        wait_until(lambda: server.get_json("/stats")["idle"] != before,
                   "the body to hand its socket to the watcher")
        response.close()
        assert server.get_json(f"/result?key={key}") == {"woke": True, "connected": False}


def test_a_client_gone_before_its_body_is_watched_is_still_seen() -> None:
    """SPEC 4.2: a client that left before its body went idle is seen the moment the
    body is watched. (Registering it reports the hang-up at once, on the watcher's
    thread; that must find the body's entry already there, or the one-shot report is
    lost and the stream held forever.) Ten such sockets, each registration yielding,
    while one watch keeps the watcher's thread waiting in epoll."""
    the_watcher = watcher()
    assert the_watcher is not None
    keep_server, keep_client = socket.socketpair()
    keeper = the_watcher.watch(keep_server, Channel(None))
    real = the_watcher._epoll

    class Slow:
        """The real set; registering yields, as a loaded server thread may."""

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def register(self, fd: int, events: int) -> None:
            real.register(fd, events)
            time.sleep(0.005)  # the watcher's thread gets the report meanwhile

    the_watcher._epoll = Slow()  # type: ignore[assignment]
    pairs = [socket.socketpair() for _ in range(10)]
    channels = [Channel(None) for _ in pairs]
    watches = []
    try:
        for (server, client), channel in zip(pairs, channels, strict=True):
            client.close()  # gone first
            watches.append(the_watcher.watch(server, channel))
        wait_until(lambda: all(channel.aborted for channel in channels),
                   "every gone client to be seen")
    finally:
        the_watcher._epoll = real
        for watch in [*watches, keeper]:
            watch.cancel()
        for server, client in [*pairs, (keep_server, keep_client)]:
            server.close()
            client.close()
