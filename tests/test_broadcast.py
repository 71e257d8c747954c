"""Broadcast: SPEC 9, with each backend: the in-process broker and Redis Streams
(a real redis-server; test_redis_broker.py has what only Redis has: other
processes, outages, the reader)."""

from __future__ import annotations

import itertools
import socket
import threading
import types
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import live_wsgi.watcher
from live_wsgi import SSE, current_response, testing
from live_wsgi.body import HEARTBEAT, OPENING
from live_wsgi.broadcast import (
    RESET_EVENT,
    Broker,
    BrokerUnavailable,
    Event,
    EventId,
    MemoryBroker,
    Reset,
    Subscription,
    broker_from_url,
)
from live_wsgi.watcher import watcher

from .realserver import gunicorn
from .support import WAIT, drain, wait
from .test_watcher import Serving, _watcher_threads, idle_for, wait_until, worker
from .tls import tcp_pair

pytestmark = pytest.mark.timeout(30)



#: Enough publishes to push an event out of a history of 50, or of 10, on
#: every backend: Redis trims ``MAXLEN ~`` in whole nodes of 100 events.
PAST_HISTORY = 250


@pytest.fixture(params=["memory", "redis"])
def make_broker(request: pytest.FixtureRequest) -> Iterator[Callable[..., Broker]]:
    """``make_broker(maxlen=50, queue_size=4)`` on each backend, shut down after."""
    made: list[Broker] = []
    if request.param == "redis":
        from live_wsgi.redis_broker import RedisBroker

        url = request.getfixturevalue("redis_server").url
        prefix = request.getfixturevalue("redis_prefix")

    def make(*, maxlen: int = 50, queue_size: int = 4) -> Broker:
        broker: Broker
        if request.param == "memory":
            broker = MemoryBroker(maxlen=maxlen, queue_size=queue_size)
        else:
            broker = RedisBroker(url, prefix=prefix, maxlen=maxlen, queue_size=queue_size)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.shutdown()


@pytest.fixture
def broker(make_broker: Callable[..., Broker]) -> Broker:
    return make_broker()


def test_ids_are_integer_pairs_never_strings() -> None:
    """SPEC 9.2: ids compare as (ms, seq) integers: ...-9 < ...-10."""
    assert EventId.parse("5-9") < EventId.parse("5-10")  # type: ignore[operator]
    assert str(EventId(1795267788619, 10)) == "1795267788619-10"
    for forged in ("", "5", "-1", "a-b", "5-", "\u0661-\u0662", "5-1-2", None, 7, "9" * 60):
        assert EventId.parse(forged) is None


def test_ids_strictly_increase_per_channel(broker: Broker) -> None:
    """SPEC 9.2: ids come from the broker and strictly increase."""
    ids = [EventId.parse(broker.publish("c", i)) for i in range(500)]
    assert all(a < b for a, b in itertools.pairwise(ids))  # type: ignore[operator]


def test_every_subscriber_gets_each_event_once_in_order(broker: Broker) -> None:
    """SPEC 9.1: a publish reaches every open subscription, once, in order."""
    with broker.subscribe("news") as a, broker.subscribe("news") as b, \
            broker.subscribe("other") as other:
        ids = [broker.publish("news", {"n": n}) for n in range(3)]
        for sub in (a, b):
            assert [(e.id, e.json()) for e in drain(sub, 3)] == \
                [(ids[n], {"n": n}) for n in range(3)]
        assert other.get(0.01) is None


def test_a_subscription_starts_at_the_top(broker: Broker) -> None:
    """SPEC 9.3: without an id, nothing from before the subscription."""
    broker.publish("news", "old")
    with broker.subscribe("news") as sub:
        new = broker.publish("news", "new")
        assert drain(sub, 1) == [Event(new, None, "new")]


def test_resume_replays_without_gap_or_duplicate(broker: Broker) -> None:
    """SPEC 9.3: a Last-Event-ID still in history replays what came after it."""
    ids = [broker.publish("news", n) for n in range(6)]
    with broker.subscribe("news", last_event_id=ids[2]) as sub:
        later = broker.publish("news", 6)
        got = drain(sub, 4)
        assert [e.id for e in got] == [*ids[3:], later]
        assert sub.get(0.01) is None


@pytest.mark.parametrize("cause", ["trimmed", "forged", "unknown"])
def test_lost_history_gets_a_reset_then_the_top(broker: Broker, cause: str) -> None:
    """SPEC 9.3: an id no longer in history (trimmed, forged, never issued) gets a
    Reset, then events from the current top: never a silent gap."""
    first = broker.publish("news", "first")
    for n in range(PAST_HISTORY):  # maxlen 50: the first is trimmed
        top = broker.publish("news", n)
    last = {"trimmed": first, "forged": "not-an-id", "unknown": "1-0"}[cause]
    with broker.subscribe("news", last_event_id=last) as sub:
        assert drain(sub, 1) == [Reset(top)]
        new = broker.publish("news", "after")
        assert [e.id for e in drain(sub, 1)] == [new]


def test_a_slow_subscriber_catches_up_from_history(broker: Broker) -> None:
    """SPEC 9.4: the reader never blocks on a subscriber; a full queue marks it
    lagged and it catches up from history; others are unaffected; the queue
    never holds more than its bound."""
    with broker.subscribe("news") as slow, broker.subscribe("news") as fast:
        ids = []
        for n in range(20):  # queue_size 4: slow falls behind at once
            ids.append(broker.publish("news", n))
            assert fast.get(WAIT).id == ids[-1]  # type: ignore[union-attr]
            assert len(slow._queue) <= 4
        assert [e.id for e in drain(slow, 20)] == ids


def test_a_slow_subscriber_past_the_history_gets_a_reset(
        make_broker: Callable[..., Broker]) -> None:
    """SPEC 9.4: lagged past what the channel keeps: a Reset, never a silent gap."""
    broker = make_broker(maxlen=10, queue_size=2)
    with broker.subscribe("news") as slow:
        ids = [broker.publish("news", n) for n in range(PAST_HISTORY)]
        got = drain(slow, 1)
        while not isinstance(got[-1], Reset):
            assert len(got) <= 2, f"more than its queue before the Reset: {got}"
            got += drain(slow, 1)
        # What it had queued, in order (on Redis the reader itself may fall
        # that far behind and reset it sooner), then the Reset: never a gap.
        assert [e.id for e in got[:-1]] == ids[:len(got) - 1]
        assert got[-1] == Reset(ids[-1])
        if isinstance(broker, MemoryBroker):
            assert len(got) == 3
        assert slow.get(0.01) is None


def test_current_id_closes_the_gap_between_render_and_subscribe(broker: Broker) -> None:
    """SPEC 9.3: the page embeds current_id(); subscribing from it loses nothing."""
    broker.publish("news", "before the page")
    cursor = broker.current_id("news")
    missed = broker.publish("news", "between render and subscribe")
    with broker.subscribe("news", last_event_id=cursor) as sub:
        assert [e.id for e in drain(sub, 1)] == [missed]


def test_publish_checks_its_input(broker: Broker) -> None:
    """SPEC 7.1, 9.1: bad channel names, event types and data are refused clearly."""
    with pytest.raises(ValueError, match="channel"):
        broker.publish("", "x")
    with pytest.raises(ValueError, match="channel"):
        broker.publish("a\nb", "x")
    with pytest.raises(ValueError, match="event"):
        broker.publish("c", "x", event="a\nb")
    with pytest.raises(ValueError, match="NaN"):
        broker.publish("c", float("nan"))
    with pytest.raises(TypeError, match="JSON"):
        broker.publish("c", object())


def test_shutdown_wakes_every_subscription(broker: Broker) -> None:
    """SPEC 9.8: shutdown wakes every subscription; later use is refused."""
    subs = [broker.subscribe("c") for _ in range(5)]
    ended = threading.Barrier(6, timeout=WAIT)
    results: list[object] = []

    def reader(sub: Any) -> None:
        results.append(list(sub))
        ended.wait()

    threads = [threading.Thread(target=reader, args=(sub,)) for sub in subs]
    for thread in threads:
        thread.start()
    broker.shutdown()
    ended.wait()
    for thread in threads:
        thread.join(WAIT)
    assert results == [[]] * 5
    assert broker.subscriptions() == 0
    with pytest.raises(BrokerUnavailable):
        broker.publish("c", "x")


def test_broker_from_url() -> None:
    """SPEC 9.1: the backend is picked by URL; unknown schemes are refused."""
    broker = broker_from_url("memory://", maxlen=3)
    assert isinstance(broker, MemoryBroker) and broker.maxlen == 3
    broker.shutdown()
    with pytest.raises(ValueError, match="memory://"):
        broker_from_url("amqp://x")
    redis = broker_from_url("redis://127.0.0.1:1/0", prefix="p:", maxlen=7)  # lazy: no connect
    assert type(redis).__name__ == "RedisBroker" and redis.maxlen == 7  # type: ignore[attr-defined]
    redis.shutdown()


# -- on a live worker ---------------------------------------------------------------


def test_a_producer_subscription_wakes_on_disconnect(live: Any, broker: Broker) -> None:
    """SPEC 3.6, 9.1: subscribe() on a live worker ends when the client leaves."""
    subscribed = threading.Event()
    seen: dict[str, object] = {}

    def app(environ: Any, start_response: Any) -> list[bytes]:
        sse = SSE(current_response().stream)
        sse.comment("hello")
        items = seen["items"] = []
        with broker.subscribe("news") as events:
            subscribed.set()
            for item in events:
                items.append(item.data)  # type: ignore[union-attr]
                sse.write(item.data)  # type: ignore[union-attr]
        return []

    mw = live(app)
    response = testing.open_stream(mw, "/")
    assert response.next_chunk(WAIT)
    wait(subscribed, "the subscription")
    broker.publish("news", "one")
    assert [e.data for e in response.read_events(1, WAIT)] == ["one"]
    response.close()  # the client leaves: the subscription must end
    assert mw.wait_idle(WAIT)
    assert seen["items"] == ["one"]
    assert broker.subscriptions() == 0


def test_a_producer_subscription_ends_at_shutdown(live: Any, broker: Broker) -> None:
    """SPEC 8.3, 9.8: the middleware's shutdown ends subscriptions on its workers."""
    subscribed = threading.Event()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        sse = SSE(current_response().stream)
        sse.comment("subscribed")  # commits: the client has its head
        with broker.subscribe("news") as events:
            subscribed.set()
            for item in events:
                sse.write(item.data)  # type: ignore[union-attr]
        sse.write("bye", event="farewell")
        return []

    mw = live(app)
    response = testing.open_stream(mw, "/")
    wait(subscribed, "the subscription")
    assert mw.shutdown(grace=WAIT)
    assert [(e.event, e.data) for e in response.read_events(1, WAIT)] == [("farewell", "bye")]
    response.close()


# -- the fan-out response -------------------------------------------------------------


def test_fan_out_streams_a_channel_on_the_server_thread(broker: Broker) -> None:
    """SPEC 9.7: a fan-out response holds no pool thread: the server thread drains
    the subscription itself; events carry their ids."""
    app = broker.sse_app("news", heartbeat=None)
    with testing.open_stream(app, "/", headers={"Accept": "text/event-stream"}) as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        assert response.next_chunk(WAIT) == b":\n"  # the head goes out at once
        # No thread but the test client's own reader (and the broker's) runs it.
        assert {t.name for t in threading.enumerate()} - {
            threading.main_thread().name, "live_wsgi-test-reader",
            "live_wsgi-broker-reader"} == set()
        first = broker.publish("news", {"n": 1}, event="tick")
        (event,) = response.read_events(1, WAIT)
        assert (event.event, event.id, event.json()) == ("tick", first, {"n": 1})
    assert broker.subscriptions() == 0


def test_fan_out_resumes_and_resets(broker: Broker) -> None:
    """SPEC 9.3: Last-Event-ID replays; a lost id gets an SSE stream-reset event."""
    ids = [broker.publish("news", n) for n in range(3)]
    app = broker.sse_app("news", heartbeat=None)
    with testing.open_stream(app, "/", headers={"Last-Event-ID": ids[0]}) as response:
        assert [e.id for e in response.read_events(2, WAIT)] == ids[1:]
    with testing.open_stream(app, "/", headers={"Last-Event-ID": "1-0"}) as response:
        (reset,) = response.read_events(1, WAIT)
        assert (reset.event, reset.id) == (RESET_EVENT, ids[-1])


def test_fan_out_heartbeats_while_idle(broker: Broker) -> None:
    """SPEC 4.2: an idle fan-out stream sends heartbeat comments."""
    app = broker.sse_app("news", heartbeat=0.05)
    with testing.open_stream(app, "/") as response:
        assert response.next_chunk(WAIT) == b":\n"
        assert response.next_chunk(WAIT) == b": heartbeat\n"


def test_the_gunicorn_sigterm_hook_shuts_brokers_down() -> None:
    """SPEC 8.3, 9.8: shutdown_all (gunicorn's SIGTERM) ends subscriptions and
    readers too, so fan-out streams never hold a worker past its grace."""
    from live_wsgi.gunicorn import shutdown_all

    broker = MemoryBroker()
    sub = broker.subscribe("news")
    shutdown_all(0)
    assert sub.closed and broker.subscriptions() == 0
    with pytest.raises(BrokerUnavailable):
        broker.publish("news", "late")


# -- the fan-out response, idle: the watcher, not a probe per stream ------------------

PROBE_INTERVAL = 0.05

needs_watcher = pytest.mark.skipif(watcher() is None,
                                   reason="no epoll here: idle fan-out bodies probe instead")


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> Counter[int]:
    """How many times each subscription's wait for an event ran out (by ``id(sub)``):
    each is a wake-up of the server thread that drains it."""
    counts: Counter[int] = Counter()
    lock = threading.Lock()
    original = Subscription.get

    def counted(self: Subscription, timeout: float | None) -> Event | Reset | None:
        item = original(self, timeout)
        if item is None and not self.closed:
            with lock:
                counts[id(self)] += 1
        return item

    monkeypatch.setattr(Subscription, "get", counted)
    return counts


def serve_fan_out(app: Any, sock: socket.socket, key: str = "") -> Serving:
    """The fan-out response on ``sock``'s connection, drained by a server thread."""
    serving = Serving(app, sock, key)
    assert serving.next_chunk() == OPENING
    return serving


@needs_watcher
def test_idle_fan_out_streams_do_not_wake_for_probes(broker: Broker, waits: Counter[int]) -> None:
    """SPEC 4.2, 9.7: idle fan-out streams whose clients stay cost no wake-ups (the
    watcher asks the kernel for all of them), still get every event, and when their
    clients leave every subscription is released at once."""
    app = broker.sse_app("news", heartbeat=None, probe_interval=PROBE_INTERVAL)
    pairs = [tcp_pair() for _ in range(20)]
    responses = [serve_fan_out(app, server) for server, _ in pairs]
    try:
        # Each body's first wait runs out after the probe interval: it hands its
        # socket to the watcher then, and waits for nothing but events from there on.
        wait_until(lambda: len(waits) == len(responses), "every body to go idle")
        idle_for(10 * PROBE_INTERVAL)
        assert sorted(waits.values()) == [1] * len(responses)  # not 10 each
        sent = broker.publish("news", "to all")
        for response in responses:
            assert response.next_chunk() == f"id: {sent}\ndata: to all\n\n".encode()
        for _, client in pairs:
            client.close()
        for response in responses:
            assert response.next_chunk() is None  # the body ended: the client is gone
        assert broker.subscriptions() == 0
        assert sorted(waits.values()) == [1] * len(responses)  # no probe saw it
    finally:
        for response in responses:
            response.stop()
        for server, client in pairs:
            server.close()
            client.close()
    assert broker.subscriptions() == 0


@needs_watcher
def test_idle_fan_out_heartbeats_are_the_only_wake_ups(broker: Broker,
                                                       waits: Counter[int]) -> None:
    """SPEC 4.2: an idle fan-out stream whose client stays gets its heartbeat after
    each ``heartbeat`` seconds of silence (an event restarts the count), never
    earlier, and its server thread wakes for nothing else once the watcher has its
    socket."""
    heartbeat = 0.2
    app = broker.sse_app("news", heartbeat=heartbeat, probe_interval=PROBE_INTERVAL)
    server, client = tcp_pair()
    try:
        with serve_fan_out(app, server) as response:
            assert response.next_chunk() == HEARTBEAT
            sent = broker.publish("news", "between")
            assert response.next_chunk() == f"id: {sent}\ndata: between\n\n".encode()
            for _ in range(2):
                assert response.next_chunk() == HEARTBEAT
            times = response.times  # the opening, a heartbeat, the event, two heartbeats
            assert times[1] - times[0] >= heartbeat * 0.99, times
            assert all(b - a >= heartbeat * 0.99 for a, b in itertools.pairwise(times[2:])), \
                times
            # One wake at the first probe interval (the socket goes to the watcher),
            # then one per heartbeat (a wait cut short by the event is no wake-up),
            # not one per probe interval (about 12).
            assert list(waits.values()) == [1 + 3]
            client.close()
            while (chunk := response.next_chunk()) is not None:
                assert chunk == HEARTBEAT
            assert broker.subscriptions() == 0
    finally:
        server.close()
        client.close()


@needs_watcher
def test_a_fan_out_body_leaves_the_watcher_before_its_socket_closes(broker: Broker) -> None:
    """SPEC 4.2: the server closing an idle fan-out body (it gave up on the response)
    takes its socket out of the watcher's set before it closes the socket, and the
    watcher thread, with nothing left to watch, leaves."""
    the_watcher = watcher()
    assert the_watcher is not None
    app = broker.sse_app("news", heartbeat=None, probe_interval=PROBE_INTERVAL)
    server, client = tcp_pair()
    try:
        response = serve_fan_out(app, server)
        number = server.fileno()
        wait_until(lambda: number in the_watcher._watches, "the watch")
        response.stop()  # the server calls close() first, then closes the socket
        assert number not in the_watcher._watches
        assert broker.subscriptions() == 0
        for thread in _watcher_threads():
            thread.join(WAIT)
        assert not _watcher_threads()
    finally:
        server.close()
        client.close()


def test_without_a_watcher_the_fan_out_body_probes(broker: Broker) -> None:
    """SPEC 4.2: where the server gives only a disconnect check (waitress), the idle
    fan-out body asks it every probe interval, and ends when it says the client
    left; the subscription is released."""
    left = threading.Event()
    asked = threading.Semaphore(0)

    def client_disconnected() -> bool:
        asked.release()
        return left.is_set()

    app = broker.sse_app("news", heartbeat=None, probe_interval=PROBE_INTERVAL)
    with testing.open_stream(app, "/", **{
            "waitress.client_disconnected": client_disconnected}) as response:
        assert response.next_chunk(WAIT) == OPENING
        reader = threading.Thread(target=response.next_chunk, args=(WAIT,))
        reader.start()
        for _ in range(3):  # probing, again and again
            assert asked.acquire(timeout=WAIT)
        left.set()
        reader.join(WAIT)
        assert not reader.is_alive()
        assert response.next_chunk(WAIT) is None
        assert broker.subscriptions() == 0


@needs_watcher
def test_without_a_watcher_thread_the_fan_out_body_probes(
    broker: Broker, monkeypatch: pytest.MonkeyPatch, waits: Counter[int],
) -> None:
    """SPEC 4.2: when the watcher cannot start its thread (the process is out of
    threads), an idle fan-out body probes its client itself and still sees it leave."""
    the_watcher = watcher()
    assert the_watcher is not None

    class Unstartable(threading.Thread):
        def start(self) -> None:
            raise RuntimeError("can't start new thread")

    monkeypatch.setattr(live_wsgi.watcher, "threading",
                        types.SimpleNamespace(Thread=Unstartable, Lock=threading.Lock))
    app = broker.sse_app("news", heartbeat=None, probe_interval=PROBE_INTERVAL)
    server, client = tcp_pair()
    try:
        with serve_fan_out(app, server) as response:
            wait_until(lambda: sum(waits.values()) >= 3, "the body to probe")
            assert not the_watcher._watches
            client.close()
            assert response.next_chunk() is None
            assert broker.subscriptions() == 0
    finally:
        server.close()
        client.close()


# -- on real servers ------------------------------------------------------------------

IDLE_APP = "tests.apps.fanout_idle_app:app"
STREAMS = 20


@needs_watcher
@pytest.mark.parametrize("kind", ["gthread", "gevent"])
def test_idle_fan_out_streams_on_a_real_server(kind: str) -> None:
    """SPEC 4.2, 8.1, 9.7: on gunicorn gthread and gevent, idle fan-out streams wake
    their worker only for heartbeats, still get each event, and clients that leave
    (with heartbeats or without) release their subscriptions."""
    with gunicorn(IDLE_APP, *worker(kind)) as server:
        responses = [server.get("/events/idle") for _ in range(STREAMS)]
        try:
            for response in responses:
                assert response.next_chunk() == OPENING
            for response in responses:  # each body gave its socket to the watcher before it
                assert response.next_chunk() == HEARTBEAT
            before = server.get_json("/stats")
            for response in responses:
                assert response.next_chunk() == HEARTBEAT
            after = server.get_json("/stats")
            # Probing, each stream's server thread (or greenlet) would wake ten times
            # per heartbeat (every 0.05 s for 0.5 s). Now once, to send it.
            idle = after["idle"] - before["idle"]  # type: ignore[operator]
            assert idle == STREAMS, f"{idle} wake-ups for {STREAMS} heartbeats"
            sent = server.get_json("/publish/idle")
            for response in responses:
                assert response.read_until(b"data: news\n\n").endswith(
                    f"id: {sent}\ndata: news\n\n".encode())
            for response in responses:
                response.close()
            wait_until(lambda: server.get_json("/stats")["subscriptions"] == 0,
                       "every subscription to be released")
        finally:
            for response in responses:
                response.close()
        # No heartbeat: a write that fails cannot tell the client left, only the
        # watcher (or a probe) can.
        before = server.get_json("/stats")
        quiet = server.get("/quiet/idle")
        try:
            assert quiet.next_chunk() == OPENING
            wait_until(lambda: server.get_json("/stats")["idle"] != before["idle"],
                       "the quiet body to hand its socket to the watcher")
        finally:
            quiet.close()
        wait_until(lambda: server.get_json("/stats")["subscriptions"] == 0,
                   "the quiet stream's subscription to be released")
