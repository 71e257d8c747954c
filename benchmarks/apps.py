"""The apps under measurement, served together by one gunicorn.

``/plain/SIZE/COUNT`` is the limit: a plain generator yielding COUNT chunks
of SIZE bytes, written by the server thread itself. ``/live/SIZE/COUNT`` is
the same body produced on a worker through ``LiveMiddleware`` with
``stream.write``; ``/live-iter/SIZE/COUNT`` returns the same generator
through the middleware.
"""

from __future__ import annotations

from typing import Any

from live_wsgi import LiveMiddleware, current_response

HEADERS = [("Content-Type", "application/octet-stream")]


def _parse(path: str) -> tuple[str, int, int]:
    _, kind, size, count = path.split("/")
    return kind, int(size), int(count)


def generator(size: int, count: int) -> Any:
    chunk = b"x" * size
    for _ in range(count):
        yield chunk


def inner(environ: Any, start_response: Any) -> Any:
    kind, size, count = _parse(environ["PATH_INFO"])
    if kind == "live":
        write = current_response().stream.write
        current_response().headers["Content-Type"] = "application/octet-stream"
        chunk = b"x" * size
        for _ in range(count):
            write(chunk)
        return []
    start_response("200 OK", HEADERS)
    return generator(size, count)


live = LiveMiddleware(inner, when=lambda environ: environ['PATH_INFO'].startswith('/live'))


def app(environ: Any, start_response: Any) -> Any:
    if environ["PATH_INFO"].startswith("/plain"):
        return inner(environ, start_response)
    return live(environ, start_response)


def held(environ: Any, start_response: Any) -> list[bytes]:
    """``/held?events=N&interval=S``: N SSE events S seconds apart; N=0 idles."""
    from urllib.parse import parse_qs

    from live_wsgi import SSE

    query = parse_qs(environ.get("QUERY_STRING", ""))
    events = int(query.get("events", ["0"])[0])
    interval = float(query.get("interval", ["1"])[0])
    stream = current_response().stream
    sse = SSE(stream)
    sse.write("0")
    if events == 0:
        while not stream.wait(3600):
            pass
        return []
    for n in range(1, events):
        if stream.wait(interval):
            break
        sse.write(str(n))
    return []


def held_control(environ: Any, start_response: Any) -> list[bytes]:
    body = str(held_streams.active_streams).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


held_streams = LiveMiddleware(held, max_workers=4000, queue_size=4)


def held_app(environ: Any, start_response: Any) -> Any:
    if environ["PATH_INFO"] == "/active":
        return held_control(environ, start_response)
    return held_streams(environ, start_response)
