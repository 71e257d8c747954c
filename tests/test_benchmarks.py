"""The benchmark harness measures what it claims (no timing asserted here).

Every app in the table must send the client the same body bytes, or a ratio
would compare different work; and the client must read the raw-socket
server (its ceiling) correctly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from werkzeug.test import Client

from benchmarks import apps, broadcast, client, handoff
from benchmarks.rawserver import frame
from benchmarks.server import rawserver
from live_wsgi.body import OPENING
from live_wsgi.testing import open_stream

from .support import WAIT

pytestmark = pytest.mark.timeout(60)

PATHS = ["/chunks/64/50", "/chunks/65536/3?fresh=1", "/short", "/short-direct", "/sse",
         "/held?events=2&interval=0.01"]


@pytest.fixture
def bench_apps() -> Iterator[dict[str, Any]]:
    made = {
        "plain": apps.plain_app,
        "flask": apps.flask_app,
        "live": apps.live_app,
        "flask+live": apps.flask_live_app,
    }
    assert list(made) == list(apps.APPS)
    yield made
    # The module-level middlewares own pools: end them so no thread outlives us.
    apps.live_app.shutdown(timeout=5)
    apps.flask_live_app.extensions["live_wsgi"].shutdown()


def test_every_app_sends_the_same_body(bench_apps: dict[str, Any]) -> None:
    """The four apps of the table answer every benchmark path with the same bytes (a live
    event stream's opening comment aside: 2 bytes, one chunk)."""
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
    assert bodies["plain"] == b"data: 0\n\ndata: 1\n\n"


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
    apps.bench_broker().shutdown()
    apps.bench_broker.cache_clear()
    apps.fan_out.cache_clear()


def test_fan_out_and_producer_streams_send_the_same_bytes(broadcast_app: Any) -> None:
    """SPEC 9.1, 9.7: B2/B3 compare like with like: the fan-out stream and the producer
    code send the same bytes for the same events, the same data lines as the plain
    app's /held (what M5 and B2 count), and the plain paths answer as the plain app."""
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
                                  b3_subscribers=2, b3_count=10, b3_rate=1000)
    with broadcast.gunicorn(apps.BROADCAST_APP, "--threads", "16") as (_, port):
        for route in ("/events/", "/live-events/"):
            latencies, complete = broadcast.delivery_latency(port, route, settings)
            assert complete, route
            assert len(latencies) == 10 * 2  # every event, once per subscriber
            assert all(latency >= 0 for latency in latencies)


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
