"""Broadcast: SPEC 9, with each backend: the in-process broker and Redis Streams
(a real redis-server; test_redis_broker.py has what only Redis has: other
processes, outages, the reader)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from live_wsgi import SSE, current_response, testing
from live_wsgi.broadcast import (
    RESET_EVENT,
    Broker,
    BrokerUnavailable,
    Event,
    EventId,
    MemoryBroker,
    Reset,
    broker_from_url,
)

from .support import WAIT, drain, wait

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
