"""The five apps under measurement; each is served by its own gunicorn.

Every app answers the same paths with the same bytes:

- ``/chunks/SIZE/COUNT``: COUNT chunks of SIZE bytes (M1, M2, M6).
- ``/short``: a 14-byte body with Content-Length (M3).
- ``/short-direct``: the same; behind the middleware it is *not* live (M3).
- ``/sse``: one server-sent event, then the end (M4).
- ``/held?events=N&interval=S``: N events S seconds apart (M5).
- ``/idle?seconds=S``: one event, then S seconds of silence (M7): a live
  producer waits on its stream (``stream.wait``, woken early when the client
  leaves), a generator sleeps.
- ``/export/ROWS``: a CSV export of ROWS rows formatted as a real export
  formats them, a header and then a row per item or write (M9).

``plain_app`` is the limit: the server thread writes each chunk itself.
``flask_app`` streams with ``stream_with_context``. ``live_app`` is
``plain_app`` itself wrapped in ``LiveMiddleware`` (its generators run on a
pool thread, each item a ``stream.write``). ``naive_app`` is ``plain_app``
wrapped in ``benchmarks.naive``'s straightforward pool-and-queue middleware,
the peer live_wsgi must beat. ``flask_live_app`` uses the Flask extension,
with views that write to the live stream.

``/stats`` (on the apps made of ``plain_app``, never live) answers how many
streams the worker still holds (``open_streams``): M7 and M8 read it to see
how soon a client that left is let go.

``broadcast_app`` (B2, B3, not a column of the table) is ``plain_app`` plus a
broker (``LIVE_WSGI_BROKER``, ``memory://`` by default; with Redis, under the
run's key prefix, see ``benchmarks.publisher``):

- ``/events/CHANNEL``: a fan-out stream of the channel (no pool thread).
- ``/live-events/CHANNEL``: the same events from producer code, a
  ``broker.subscribe`` on a live worker (a pool thread per stream).
- ``/publish/CHANNEL?data=X``: publish X; answers its id.
- ``/publish-load?name=L&channels=C&count=N&rate=R``: publish N events at R
  a second, round robin over channels ``L-0`` .. ``L-<C-1>`` (``L``: ``load``
  by default), each event's data the ``time.monotonic()`` it was published at
  (one clock for every process of the machine); answers N once done.
- ``/pid``: this worker's PID, once its broker is made and its reader runs
  (a benchmark takes its baseline after every worker has answered).
- ``/plain-events/CHANNEL``: the same events from a plain generator that
  subscribes (M8's plain column; ``naive_broadcast_app`` runs it on the naive
  middleware's pool): it learns that its client left only when a write fails.

The three streams resume from ``Last-Event-ID`` or ``?lastEventId=`` and send the
same bytes for the same events.
"""

from __future__ import annotations

import csv
import datetime
import functools
import io
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs

from flask import Flask, Response, request, stream_with_context

from live_wsgi import SSE, LiveMiddleware, current_response, last_event_id
from live_wsgi.body import OPENING
from live_wsgi.broadcast import RESET_EVENT, Broker, FanOutApp, Reset
from live_wsgi.flask import Live, live
from live_wsgi.sse import encode_event

from .naive import NaiveMiddleware
from .publisher import broker_for, publish_load

SHORT = b"Hello, world!\n"
OCTETS = "application/octet-stream"
CSV = "text/csv; charset=utf-8"
#: One pool thread per held stream (M5 and M7 hold 1,000; M8, on gevent, sets
#: ``LIVE_WSGI_BENCH_WORKERS`` for its 10,000).
MAX_WORKERS = int(os.environ.get("LIVE_WSGI_BENCH_WORKERS", "1100"))
#: Paths the middlewares pass straight through: M3's non-live route, and the
#: harness's own question (it must not count itself, nor wait for a pool thread).
DIRECT = frozenset({"/short-direct", "/stats"})


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


def idle_query(environ: Any) -> float:
    return float(parse_qs(environ.get("QUERY_STRING", "")).get("seconds", ["0"])[0])


class OpenBodies:
    """How many bodies of a route have begun and not yet ended (``/stats``)."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    @contextmanager
    def held(self) -> Iterator[None]:
        with self.lock:
            self.count += 1
        try:
            yield
        finally:
            with self.lock:
                self.count -= 1


#: The /idle bodies this worker runs (M7).
IDLE = OpenBodies()


def idle_events(seconds: float) -> Iterator[bytes]:
    """One event, then silence: the server (or the naive pool) thread sleeps, and
    nothing notices a client that leaves before the time is up."""
    with IDLE.held():
        yield b"data: 0\n\n"
        time.sleep(seconds)


def idle_live(seconds: float) -> list[bytes]:
    """One event, then silence: the producer waits on its stream, which wakes it
    as soon as the server learns that the client left."""
    stream = current_response().stream
    with IDLE.held():
        stream.write(b"data: 0\n\n")
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if stream.wait(left):
                break
    return []


def is_live() -> bool:
    try:
        current_response()
    except RuntimeError:
        return False
    return True


#: What the export's rows are made of.
EXPORT_HEADER = ("id", "name", "price", "date")
EPOCH = datetime.date(2024, 1, 1)


def export_rows(count: int) -> Iterator[bytes]:
    """COUNT CSV rows (after a header), each formatted as a real export does
    it: ``csv.writer`` of an int, a name, a float price and an ISO date into a
    buffer, a row an item."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_HEADER)
    yield buffer.getvalue().encode()
    day = datetime.timedelta(days=1)
    for n in range(count):
        buffer.seek(0)
        buffer.truncate()
        writer.writerow((n, f"customer {n % 9973}", n % 100_000 / 100, EPOCH + day * (n % 3650)))
        yield buffer.getvalue().encode()


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
    if path == "/idle":
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        if is_live():
            return idle_live(idle_query(environ))
        return idle_events(idle_query(environ))
    if path.startswith("/export/"):
        start_response("200 OK", [("Content-Type", CSV)])
        return export_rows(int(path[len("/export/"):]))
    if path == "/stats":
        return _text(start_response, str(open_streams()))
    start_response("404 Not Found", [("Content-Length", "0")])
    return []


def _not_direct(environ: Any) -> bool:
    return environ["PATH_INFO"] not in DIRECT


live_app = LiveMiddleware(plain_app, when=_not_direct, max_workers=MAX_WORKERS)
naive_app = NaiveMiddleware(plain_app, MAX_WORKERS, when=_not_direct)


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


@flask_app.get("/idle")
def flask_idle() -> Response:
    return Response(stream_with_context(idle_events(idle_query(request.environ))),
                    mimetype="text/event-stream")


@flask_app.get("/export/<int:rows>")
def flask_export(rows: int) -> Response:
    return Response(stream_with_context(export_rows(rows)), content_type=CSV)


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


@flask_live_app.get("/idle")
@live
def live_idle() -> None:
    current_response().headers["Content-Type"] = "text/event-stream"
    idle_live(idle_query(request.environ))


@flask_live_app.get("/export/<int:rows>")
@live
def live_export(rows: int) -> None:
    response = current_response()
    response.headers["Content-Type"] = CSV
    write = response.stream.write
    for row in export_rows(rows):
        write(row)


# -- broadcast: fan-out and producer streams (B2, B3) --------------------------


@functools.cache
def bench_broker() -> Broker:
    """The worker's broker, made on first use (not in processes that only import this)."""
    return broker_for(os.environ.get("LIVE_WSGI_BROKER", "memory://"))


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


@functools.cache
def warmed() -> int:
    """Make what every worker makes once whatever it serves (the broker, the
    fan-out app, the broker's reader thread and connection) before a
    benchmark reads its baseline; answers the worker's PID."""
    bench_broker().subscribe("warm-up").close()
    fan_out()
    return os.getpid()


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


def plain_events(channel: str, environ: Any) -> Iterator[bytes]:
    """A plain generator's fan-out: subscribe, then each event as the fan-out
    stream encodes it. It learns that its client left only when a write fails."""
    with bench_broker().subscribe(channel, last_event_id=last_event_id(environ),
                                  stream=None) as events:
        yield OPENING  # the head leaves once the subscription exists
        for item in events:
            if isinstance(item, Reset):
                yield encode_event({"id": item.id}, event=RESET_EVENT, id=item.id)
            else:
                yield encode_event(item.data, event=item.event, id=item.id)


def broadcast_router(environ: Any, start_response: Any) -> Any:
    path = environ["PATH_INFO"]
    if path.startswith("/events/"):
        environ["live_wsgi.channel"] = path[len("/events/"):]
        return fan_out()(environ, start_response)
    if path.startswith("/live-events/"):
        return producer(environ, start_response)
    if path.startswith("/plain-events/"):
        start_response("200 OK", [("Content-Type", "text/event-stream"),
                                  ("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")])
        return plain_events(path[len("/plain-events/"):], environ)
    if path.startswith("/publish/"):
        channel = path[len("/publish/"):]
        return _text(start_response, bench_broker().publish(channel, _query(environ, "data", "")))
    if path == "/publish-load":
        count = publish_load(bench_broker(), _query(environ, "name", "load"),
                             int(_query(environ, "channels", "1")),
                             int(_query(environ, "count", "1")),
                             float(_query(environ, "rate", "100")))
        return _text(start_response, str(count))
    if path == "/pid":
        return _text(start_response, str(warmed()))
    return plain_app(environ, start_response)


broadcast_app = LiveMiddleware(
    broadcast_router, max_workers=MAX_WORKERS,
    when=lambda environ: environ["PATH_INFO"].startswith("/live-events/"))
naive_broadcast_app = NaiveMiddleware(
    broadcast_router, MAX_WORKERS,
    when=lambda environ: environ["PATH_INFO"].startswith("/plain-events/"))


def open_streams() -> int:
    """The streams this worker still holds: /idle bodies not yet ended, live and
    naive requests not yet done, broker subscriptions (``/stats``)."""
    counts = [IDLE.count, live_app.active_streams + broadcast_app.active_streams,
              naive_app.active + naive_broadcast_app.active]
    if bench_broker.cache_info().currsize:  # never made here just to be asked
        counts.append(bench_broker().subscriptions())
    return max(counts)


BROADCAST_APP = "benchmarks.apps:broadcast_app"
NAIVE_BROADCAST_APP = "benchmarks.apps:naive_broadcast_app"

#: The columns of the table, in order: the limit first, the naive peer beside live.
APPS = {
    "plain": "benchmarks.apps:plain_app",
    "flask": "benchmarks.apps:flask_app",
    "live": "benchmarks.apps:live_app",
    "naive": "benchmarks.apps:naive_app",
    "flask+live": "benchmarks.apps:flask_live_app",
}

