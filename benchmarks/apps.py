"""The four apps under measurement; each is served by its own gunicorn.

Every app answers the same paths with the same bytes:

- ``/chunks/SIZE/COUNT``: COUNT chunks of SIZE bytes (M1, M2, M6).
- ``/short``: a 14-byte body with Content-Length (M3).
- ``/short-direct``: the same; behind the middleware it is *not* live (M3).
- ``/sse``: one server-sent event, then the end (M4).
- ``/held?events=N&interval=S``: N events S seconds apart (M5).

``plain_app`` is the limit: the server thread writes each chunk itself.
``flask_app`` streams with ``stream_with_context``. ``live_app`` is
``plain_app`` itself wrapped in ``LiveMiddleware`` (its generators run on a
pool thread, each item a ``stream.write``). ``flask_live_app`` uses the Flask
extension, with views that write to the live stream.

``broadcast_app`` (B2, B3, not a column of the table) is ``plain_app`` plus a
broker (``LIVE_WSGI_BROKER``, ``memory://`` by default):

- ``/events/CHANNEL``: a fan-out stream of the channel (no pool thread).
- ``/live-events/CHANNEL``: the same events from producer code, a
  ``broker.subscribe`` on a live worker (a pool thread per stream).
- ``/publish/CHANNEL?data=X``: publish X; answers its id.
- ``/publish-load?channels=C&count=N&rate=R``: publish N events at R a second,
  round robin over channels ``load-0`` .. ``load-C-1``, each event's data the
  ``time.monotonic()`` it was published at (one clock for every process of
  the machine); answers N once done.

Both streams resume from ``Last-Event-ID`` or ``?lastEventId=`` and send the
same bytes for the same events.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

from flask import Flask, Response, request, stream_with_context

from live_wsgi import SSE, LiveMiddleware, current_response, last_event_id
from live_wsgi.broadcast import RESET_EVENT, Broker, FanOutApp, Reset, broker_from_url
from live_wsgi.flask import Live, live

SHORT = b"Hello, world!\n"
OCTETS = "application/octet-stream"
#: One pool thread per held stream (M5 holds 1,000).
MAX_WORKERS = 1100


def chunks(size: int, count: int, fresh: bool = False) -> Iterator[bytes]:
    """COUNT chunks of SIZE bytes: the same object each time, or (``fresh``,
    as a real export makes them) a new one each time."""
    chunk = b"x" * size
    if fresh:
        for _ in range(count):
            yield b"x" * size
    else:
        for _ in range(count):
            yield chunk


def is_fresh(environ: Any) -> bool:
    return "fresh" in environ.get("QUERY_STRING", "")


def events(count: int, interval: float) -> Iterator[bytes]:
    for n in range(count):
        if n:
            time.sleep(interval)
        yield f"data: {n}\n\n".encode()


def held_query(environ: Any) -> tuple[int, float]:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    return int(query.get("events", ["1"])[0]), float(query.get("interval", ["1"])[0])


# -- plain WSGI ------------------------------------------------------------------


def plain_app(environ: Any, start_response: Any) -> Any:
    path = environ["PATH_INFO"]
    if path.startswith("/short"):
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(SHORT)))])
        return [SHORT]
    if path.startswith("/chunks/"):
        _, _, size, count = path.split("/")
        start_response("200 OK", [("Content-Type", OCTETS)])
        return chunks(int(size), int(count), is_fresh(environ))
    if path == "/sse":
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        return events(1, 0)
    if path == "/held":
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        return events(*held_query(environ))
    start_response("404 Not Found", [("Content-Length", "0")])
    return []


def _not_direct(environ: Any) -> bool:
    return environ["PATH_INFO"] != "/short-direct"


live_app = LiveMiddleware(plain_app, when=_not_direct, max_workers=MAX_WORKERS)


# -- Flask -----------------------------------------------------------------------

flask_app = Flask("bench_flask")


@flask_app.get("/chunks/<int:size>/<int:count>")
def flask_chunks(size: int, count: int) -> Response:
    return Response(stream_with_context(chunks(size, count, is_fresh(request.environ))),
                    mimetype=OCTETS)


@flask_app.get("/short")
@flask_app.get("/short-direct")
def flask_short() -> Response:
    return Response(SHORT, mimetype="text/plain")


@flask_app.get("/sse")
def flask_sse() -> Response:
    return Response(stream_with_context(events(1, 0)), mimetype="text/event-stream")


@flask_app.get("/held")
def flask_held() -> Response:
    return Response(stream_with_context(events(*held_query(request.environ))),
                    mimetype="text/event-stream")


# -- Flask with the live_wsgi extension ------------------------------------------

flask_live_app = Flask("bench_flask_live")
Live(flask_live_app, max_workers=MAX_WORKERS)


@flask_live_app.get("/chunks/<int:size>/<int:count>")
@live
def live_chunks(size: int, count: int) -> None:
    response = current_response()
    response.headers["Content-Type"] = OCTETS
    write = response.stream.write
    for chunk in chunks(size, count, is_fresh(response.environ)):
        write(chunk)


@flask_live_app.get("/short")
@live
def live_short() -> Response:
    return Response(SHORT, mimetype="text/plain")


@flask_live_app.get("/short-direct")
def live_short_direct() -> Response:
    return Response(SHORT, mimetype="text/plain")


@flask_live_app.get("/sse")
@live
def live_sse() -> None:
    response = current_response()
    response.headers["Content-Type"] = "text/event-stream"
    response.stream.write(b"data: 0\n\n")


@flask_live_app.get("/held")
@live
def live_held() -> None:
    count, interval = held_query(request.environ)
    response = current_response()
    response.headers["Content-Type"] = "text/event-stream"
    stream = response.stream
    for n in range(count):
        if n and stream.wait(interval):
            break
        stream.write(f"data: {n}\n\n".encode())


# -- broadcast: fan-out and producer streams (B2, B3) --------------------------


@functools.cache
def bench_broker() -> Broker:
    """The worker's broker, made on first use (not in processes that only import this)."""
    return broker_from_url(os.environ.get("LIVE_WSGI_BROKER", "memory://"))


@functools.cache
def fan_out() -> FanOutApp:
    return bench_broker().sse_app()  # the channel comes from the environ


def _query(environ: Any, name: str, default: str) -> str:
    return parse_qs(environ.get("QUERY_STRING", "")).get(name, [default])[0]


def _text(start_response: Any, body: str) -> list[bytes]:
    data = body.encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(data)))])
    return [data]


def publish_load(channels: int, count: int, rate: float) -> int:
    """Publish ``count`` monotonic stamps at ``rate`` a second over ``channels`` channels."""
    broker = bench_broker()
    started = time.monotonic()
    for n in range(count):
        pause = started + n / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        broker.publish(f"load-{n % channels}", f"{time.monotonic():.6f}")
    return count


def producer(environ: Any, start_response: Any) -> list[bytes]:
    """Producer code: subscribe on the live worker, write each event."""
    channel = environ["PATH_INFO"][len("/live-events/"):]
    stream = current_response().stream
    sse = SSE(stream)
    with bench_broker().subscribe(channel, last_event_id=last_event_id(environ)) as events:
        stream.write(b"")  # commits: the head leaves once the subscription exists
        for item in events:
            if isinstance(item, Reset):
                sse.write({"id": item.id}, event=RESET_EVENT, id=item.id)
            else:
                sse.write(item.data, event=item.event, id=item.id)
    return []


def broadcast_router(environ: Any, start_response: Any) -> Any:
    path = environ["PATH_INFO"]
    if path.startswith("/events/"):
        environ["live_wsgi.channel"] = path[len("/events/"):]
        return fan_out()(environ, start_response)
    if path.startswith("/live-events/"):
        return producer(environ, start_response)
    if path.startswith("/publish/"):
        channel = path[len("/publish/"):]
        return _text(start_response, bench_broker().publish(channel, _query(environ, "data", "")))
    if path == "/publish-load":
        count = publish_load(int(_query(environ, "channels", "1")),
                             int(_query(environ, "count", "1")),
                             float(_query(environ, "rate", "100")))
        return _text(start_response, str(count))
    return plain_app(environ, start_response)


broadcast_app = LiveMiddleware(
    broadcast_router, max_workers=MAX_WORKERS,
    when=lambda environ: environ["PATH_INFO"].startswith("/live-events/"))

BROADCAST_APP = "benchmarks.apps:broadcast_app"

APPS = {
    "plain": "benchmarks.apps:plain_app",
    "flask": "benchmarks.apps:flask_app",
    "live": "benchmarks.apps:live_app",
    "flask+live": "benchmarks.apps:flask_live_app",
}

