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
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

from flask import Flask, Response, request, stream_with_context

from live_wsgi import LiveMiddleware, current_response
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


APPS = {
    "plain": "benchmarks.apps:plain_app",
    "flask": "benchmarks.apps:flask_app",
    "live": "benchmarks.apps:live_app",
    "flask+live": "benchmarks.apps:flask_live_app",
}

