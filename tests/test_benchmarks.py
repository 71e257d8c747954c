"""The benchmark harness measures what it claims (no timing asserted here).

Every app in the table must send the client the same body bytes, or a ratio
would compare different work; and the client must read the raw-socket
server (its ceiling) correctly.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from werkzeug.test import Client

from benchmarks import apps, broadcast, client, handoff, idle_streams, publisher, scale
from benchmarks.naive import NaiveMiddleware
from benchmarks.publisher import PREFIX_ENV
from benchmarks.rawserver import frame
from benchmarks.server import rawserver
from live_wsgi.body import OPENING
from live_wsgi.testing import open_stream

from . import redisserver
from .redisserver import RedisServer
from .support import WAIT

pytestmark = pytest.mark.timeout(60)

PATHS = ["/chunks/64/50", "/chunks/65536/3?fresh=1", "/short", "/short-direct", "/sse",
         "/held?events=2&interval=0.01", "/idle?seconds=0", "/export/50"]


@pytest.fixture
def bench_apps() -> Iterator[dict[str, Any]]:
    made = {
        "plain": apps.plain_app,
        "flask": apps.flask_app,
        "live": apps.live_app,
        "naive": apps.naive_app,
        "flask+live": apps.flask_live_app,
    }
    assert list(made) == list(apps.APPS)
    yield made
    # The module-level middlewares own pools: end them so no thread outlives us.
    apps.live_app.shutdown(timeout=5)
    apps.naive_app.shutdown()
    apps.flask_live_app.extensions["live_wsgi"].shutdown()


def test_every_app_sends_the_same_body(bench_apps: dict[str, Any]) -> None:
    """SPEC 1.2: the five apps of the table (the naive peer among them) answer every
    benchmark path with the same bytes (a live event stream's opening comment aside:
    2 bytes, one chunk), the CSV export included."""
    for path in PATHS:
        bodies = {}
        for name, app in bench_apps.items():
            response = Client(app).get(path, environ_overrides={"wsgi.multithread": True})
            assert response.status_code == 200, (name, path)
            body = response.get_data()
            if "live" in name and response.mimetype == "text/event-stream":
                assert body.startswith(OPENING), (name, path)
                body = body[len(OPENING):]
            bodies[name] = body
            response.close()
        assert len(set(bodies.values())) == 1, (path, {k: len(v) for k, v in bodies.items()})
        if path.startswith("/export/"):
            lines = bodies["plain"].decode().splitlines()
            assert lines[0] == "id,name,price,date"
            assert lines[1] == "0,customer 0,0.0,2024-01-01"
            assert len(lines) == 51
        if path == "/idle?seconds=0":
            assert bodies["plain"] == b"data: 0\n\n"
    assert bodies["plain"] != b""


def test_middlewares_pass_the_direct_routes_straight_through() -> None:
    """SPEC 1.3: M3's non-live route and the harness's /stats go straight through live and
    naive alike: the plain app's own list comes back, and no pool thread counts them."""
    for path in sorted(apps.DIRECT):
        for app in (apps.live_app, apps.naive_app):
            environ = Client(apps.plain_app).get(path).request.environ
            seen: list[str] = []
            body = app(environ, lambda status, *rest, seen=seen: seen.append(status))
            assert isinstance(body, list), (app, path)
            assert seen == ["200 OK"]
    assert Client(apps.naive_app).get("/stats").get_data() == b"0"


def test_naive_peer_raises_early_errors_and_stops_when_closed() -> None:
    """SPEC 4.1, 5.1: the naive peer is the plain reference the issue describes: an error
    before the first item is raised on the server thread, and a body the server closes
    (the client left) stops the producer at its next put."""
    ended = threading.Event()
    produced: list[int] = []

    def app(environ: Any, start_response: Any) -> Iterator[bytes]:
        if environ["PATH_INFO"] == "/fail":
            start_response("200 OK", [])
            raise LookupError("before the first item")
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            for n in range(10_000):
                produced.append(n)
                yield b"x"
        finally:
            ended.set()

    naive = NaiveMiddleware(app, max_workers=2)
    try:
        with pytest.raises(LookupError, match="before the first item"):
            Client(naive).get("/fail")
        body = naive(Client(app).get("/").request.environ, lambda *args: None)
        assert next(iter(body)) == b"x"
        body.close()
        assert ended.wait(WAIT), "the producer did not stop"
        assert len(produced) < 10_000
        naive.shutdown()  # joins the producer, which counts itself out last
        assert naive.active == 0
    finally:
        naive.shutdown()


def test_stats_counts_an_idle_stream_until_it_is_let_go(live: Any) -> None:
    """SPEC 3.6, 4.2: M7's /stats counts an idle body while it is open; a live one is let
    go when its client leaves (stream.wait returns early), a plain one only at its end."""
    stats = Client(apps.plain_app)
    assert stats.get("/stats").get_data() == b"0"
    plain = apps.idle_events(0)
    assert next(plain) == b"data: 0\n\n"
    assert stats.get("/stats").get_data() == b"1"
    plain.close()
    assert stats.get("/stats").get_data() == b"0"
    mw = live(apps.plain_app)
    stream = open_stream(mw, "/idle?seconds=60")
    assert stream.read_chunks(2, WAIT) == [OPENING, b"data: 0\n\n"]
    assert stats.get("/stats").get_data() == b"1"
    stream.close()
    assert mw.wait_idle(WAIT)
    assert stats.get("/stats").get_data() == b"0"


def test_idle_and_scale_harnesses_on_real_servers() -> None:
    """SPEC 4.2, 8.1: M7 reads the worker's CPU over its window and sees live let hung-up
    clients go; M8 opens streams on a gevent worker, delivers one publish to each, and
    finds none held after the hang-up (tiny loads, nothing timed)."""
    idle = idle_streams.idle_cost(["live"], streams=idle_streams.CLOSED + 2, seconds=0.1)
    assert idle["live"].cpu_percent >= 0
    assert idle["live"].freed, "live did not let the hung-up streams go"
    result = scale.scale(["live"], streams=20, log=lambda message: None)["live"]
    assert result.all_delivered
    assert result.p50 >= 0 and result.p99 >= result.p50
    assert result.left == 0
    assert not math.isnan(result.rss_kept_per_stream)


def test_client_reads_the_raw_server_to_the_end() -> None:
    """The ceiling server frames bodies like gunicorn; the client counts them whole."""
    with rawserver() as (_, port):
        seconds, received = client.download(port, "/chunks/1024/1000")
        body = frame(b"x" * 1024) * 1000 + b"0\r\n\r\n"
        assert seconds > 0
        assert received > len(body)  # the body plus the status line and headers
        assert received - len(body) < 200
        firsts = client.ttfb_round(port, "/sse", 8)
        assert len(firsts) == 8
        assert all(first > 0 for first in firsts)


def test_handoff_counts_the_objects_a_request_leaves_in_cycles(live: Any) -> None:
    """benchmarks.handoff sees a cycle an app makes, and none in a live request."""

    def cyclic(environ: Any, start_response: Any) -> list[bytes]:
        node: dict[str, Any] = {}
        node["self"] = node  # one dict that refers to itself
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    assert handoff.cycles_per_request(cyclic, "/", None) == 1.0
    mw = live(apps.plain_app)
    assert handoff.cycles_per_request(mw, "/short", mw) == 0.0
    assert handoff.cycles_per_request(mw, "/sse", mw) == 0.0


# -- the broadcast benchmarks (B1-B3) ----------------------------------------------


@pytest.fixture
def broadcast_app() -> Iterator[Any]:
    apps.bench_broker.cache_clear()
    apps.fan_out.cache_clear()
    yield apps.broadcast_app
    apps.broadcast_app.shutdown(timeout=5)
    apps.naive_broadcast_app.shutdown()
    apps.bench_broker().shutdown()
    apps.bench_broker.cache_clear()
    apps.fan_out.cache_clear()


def test_fan_out_and_producer_streams_send_the_same_bytes(broadcast_app: Any) -> None:
    """SPEC 9.1, 9.7: B2/B3/M8 compare like with like: the fan-out stream, the producer
    code and M8's plain generator (alone and in the naive peer) send the same bytes for
    the same events, the same data lines as the plain app's /held (what M5 and B2 count),
    and the plain paths answer as the plain app."""
    for path in PATHS:
        if path.startswith("/held"):
            continue
        ours = Client(broadcast_app).get(path, environ_overrides={"wsgi.multithread": True})
        theirs = Client(apps.plain_app).get(path)
        assert ours.get_data() == theirs.get_data(), path
        ours.close()
        theirs.close()
    web = Client(broadcast_app)
    start = web.get("/publish/held?data=start").get_data(as_text=True)
    streams = [open_stream(broadcast_app, f"{route}held?lastEventId={start}")
               for route in ("/events/", "/live-events/")]
    try:
        for n in range(2):
            web.get(f"/publish/held?data={n}")
        for stream in streams:
            assert [e.data for e in stream.read_events(2, WAIT)] == ["0", "1"]
        fan_out, producer = (b"".join(stream.received) for stream in streams)
        assert fan_out == producer
        assert plain_events(apps.plain_events("held", {"QUERY_STRING": f"lastEventId={start}"}),
                            3) == fan_out
        naive = apps.naive_broadcast_app(
            Client(broadcast_app).get(f"/plain-events/held?lastEventId={start}").request.environ,
            lambda status, headers, exc_info=None: None)
        assert plain_events(naive, 3) == fan_out
        web.get("/publish/held?data=2")  # the naive producer, told it is closed, stops here
        assert fan_out.startswith(OPENING)
        plain = Client(apps.plain_app).get("/held?events=2&interval=0").get_data()
        data_lines = [line for line in fan_out.splitlines() if line.startswith(b"data: ")]
        assert data_lines == [line for line in plain.splitlines() if line.startswith(b"data: ")]
    finally:
        for stream in streams:
            stream.close()
    assert broadcast.publish_rate("memory://", 0.01) > 0


def test_broadcast_harness_counts_every_delivery() -> None:
    """SPEC 9.1: B2's held fan-out streams and B3's latency client see every event of a
    small load on a real gunicorn, each stamp read as one delivery (nothing timed)."""
    held = broadcast.held_fan_out(streams=3, events=2, interval=0.05)
    assert held.all_delivered
    assert held.threads_per_stream > 0
    settings = broadcast.Settings(b1_seconds=0, b2_streams=0, b2_events=0, b3_channels=2,
                                  b3_subscribers=2, b3_seconds=0.01, b3_rate=1000)
    assert settings.b3_count == 10
    with broadcast.gunicorn(apps.BROADCAST_APP, "--threads", "16") as (_, port):
        load = broadcast.load_in_worker(port, settings)
        for route, name in (("/events/", "fan"), ("/live-events/", "producer")):
            latencies, complete = broadcast.delivery_latency(port, route, name, settings, load)
            assert complete, route
            assert len(latencies) == 10 * 2  # every event, once per subscriber
            assert all(latency >= 0 for latency in latencies)


def test_broadcast_harness_on_redis_spans_processes(
    redis_server: RedisServer, redis_prefix: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SPEC 9.1, 9.5: with Redis, B2's streams are held by two worker processes (RSS and
    threads summed over both) and every event reaches them; B3's publisher is a process
    of its own, and each stream of a two-worker server gets each of its events once."""
    monkeypatch.setenv("LIVE_WSGI_BROKER", redis_server.url)
    monkeypatch.setenv(PREFIX_ENV, redis_prefix)
    backend = broadcast.Backend("redis", redis_server.url)
    assert (backend.shared, backend.workers) == (True, 2)
    held = broadcast.held_fan_out(streams=6, events=2, interval=0.05, workers=2)
    assert held.all_delivered
    assert held.threads_per_stream > 0
    settings = broadcast.Settings(b1_seconds=0, b2_streams=0, b2_events=0, b3_channels=3,
                                  b3_subscribers=2, b3_seconds=0.02, b3_rate=1000)
    with broadcast.gunicorn(apps.BROADCAST_APP,
                            *broadcast.fan_out_server_args(6, workers=2)) as (_, port):
        assert len(broadcast.workers_ready(port, 2)) == 2
        load = broadcast.load_in_process(settings)
        for route, name in (("/events/", "fan"), ("/live-events/", "producer")):
            latencies, complete = broadcast.delivery_latency(port, route, name, settings, load)
            assert complete, route
            assert len(latencies) == 20 * 2
    assert broadcast.publish_rate(redis_server.url, 0.01) > 0


def test_publisher_stamps_each_event_round_robin(
    redis_server: RedisServer, redis_prefix: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SPEC 9.1: B3's load publishes each channel's share of the events, in turn, each
    one's data the monotonic clock at its publish; with Redis, under the run's prefix and
    with a TTL, so a Redis of your own keeps no benchmark channel for long."""
    broker = publisher.broker_for("memory://")
    subs = [broker.subscribe(f"load-{n}") for n in range(3)]
    try:
        before = time.monotonic()
        assert publisher.publish_load(broker, "load", 3, 7, 1e6) == 7
        after = time.monotonic()
        got = [[float(event.data) for event in sub_events(sub, count)]
               for sub, count in zip(subs, (3, 2, 2), strict=True)]
        stamps = [got[n % 3][n // 3] for n in range(7)]  # in publish order
        assert stamps == sorted(stamps)
        assert before <= stamps[0] and stamps[-1] <= after
    finally:
        for sub in subs:
            sub.close()
        broker.shutdown()
    monkeypatch.setenv(PREFIX_ENV, redis_prefix)
    redis_broker = publisher.broker_for(redis_server.url)
    try:
        assert (redis_broker.prefix, redis_broker.ttl) == (  # type: ignore[attr-defined]
            redis_prefix, publisher.REDIS_TTL)
    finally:
        redis_broker.shutdown()


def plain_events(body: Any, count: int) -> bytes:
    """The first ``count`` items of a plain body, which is then closed (the client left)."""
    items = iter(body)
    try:
        return b"".join(next(items) for _ in range(count))
    finally:
        body.close()


def sub_events(sub: Any, count: int) -> list[Any]:
    events = []
    for _ in range(count):
        item = sub.get(WAIT)
        assert item is not None, f"only {events} arrived"
        events.append(item)
    return events


@pytest.mark.usefixtures("redis_server")  # skips without redis-server; fails under CI=true
def test_own_redis_server_is_started_and_stopped_by_the_run() -> None:
    """SPEC 9.1: ``--broker redis-server`` runs the broadcast set on a Redis the run
    starts on a free loopback port and stops by its PID; a URL's credentials never
    reach a table; memory:// is one process, one worker."""
    specs = ["memory://", broadcast.OWN_REDIS, "redis://user:secret@10.0.0.1:6380/2"]
    with broadcast.backends(specs) as chosen:
        memory, own, given = chosen
        assert (memory.label, memory.shared, memory.workers) == ("memory://", False, 1)
        port = urlsplit(own.url).port
        assert port is not None and port != 6379
        assert redisserver.ping(port)
        assert own.workers == 2
        assert "secret" not in given.label and "10.0.0.1:6380/2" in given.label
    assert not redisserver.ping(port)


def test_broker_comparison_is_against_the_first_broker() -> None:
    """SPEC 9.1: with several brokers, each figure is shown against the first broker's
    figure of the same name from the same run."""
    results = {
        "memory://": [broadcast.Figure("B1 publishes/s, one thread", 40_000.0)],
        "redis": [broadcast.Figure("B1 publishes/s, one thread", 4_000.0),
                  broadcast.Figure("only here", 1.0)],
    }
    lines = list(broadcast.compare(results))
    assert lines[0].startswith("redis against memory://")
    (row,) = [line for line in lines if line.startswith("B1")]
    assert row.endswith("| 0.10x")
    assert not any(line.startswith("only here") for line in lines)


def test_pid_route_answers_once_the_worker_is_warm(broadcast_app: Any) -> None:
    """SPEC 9.5: /pid names the worker after making its broker and starting its reader
    (a baseline read after it does not count them against the streams)."""
    web = Client(broadcast_app)
    assert web.get("/pid").get_data(as_text=True) == str(os.getpid())
    assert apps.bench_broker().subscriptions() == 0


def test_b2_server_accepts_the_publisher_beside_the_held_streams(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SPEC 9.7: B2 holds N fan-out streams and publishes through the same worker, so
    its gthread worker must accept N + 1 connections (gthread accepts none past
    --worker-connections, 1,000 by default: M5's 1,000 streams left none)."""
    from gunicorn.config import Config

    asked: list[tuple[str, ...]] = []

    class Recorded(Exception):
        pass

    def recording(app: str, *args: str) -> Any:
        asked.append(args)
        raise Recorded

    monkeypatch.setattr(broadcast, "gunicorn", recording)
    monkeypatch.setattr(broadcast, "raise_fd_limit", lambda streams: None)
    for streams in (1000, 5000):
        with pytest.raises(Recorded):
            broadcast.held_fan_out(streams, events=1)
        args = asked[-1]
        flag = "--worker-connections"
        allowed = int(args[args.index(flag) + 1]) if flag in args else Config().worker_connections
        assert allowed > streams, (streams, args)
