"""A small streaming app: ``make run`` serves it on http://127.0.0.1:8000/.

    gunicorn --worker-class gthread --threads 32 examples.demo:app

``/`` names the streaming routes; each streams from a worker thread.
"""

from __future__ import annotations

import time
from typing import Any

from live_wsgi import ClientDisconnected, LiveMiddleware, current_response

ROUTES = {
    "/clock": "the time, once a second, for a minute (text/plain)",
    "/count?to=N": "the numbers 1..N, one line each, as fast as the client reads",
}


def index(environ: Any, start_response: Any) -> list[bytes]:
    lines = ["live_wsgi demo: these routes stream from a worker thread", ""]
    lines += [f"  {route:<14} {what}" for route, what in ROUTES.items()]
    body = ("\n".join(lines) + "\n").encode()
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"),
                              ("Content-Length", str(len(body)))])
    return [body]


def clock(environ: Any, start_response: Any) -> list[bytes]:
    stream = current_response().stream
    try:
        for _ in range(60):
            stream.writeln(time.strftime("%H:%M:%S"))
            if stream.wait(1.0):  # True: the client left, or shutdown
                break
    except ClientDisconnected:
        pass
    return []


def count(environ: Any, start_response: Any) -> Any:
    from urllib.parse import parse_qs

    to = int(parse_qs(environ.get("QUERY_STRING", "")).get("to", ["100"])[0])
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return (b"%d\n" % i for i in range(1, min(to, 10_000_000) + 1))


def router(environ: Any, start_response: Any) -> Any:
    path = environ.get("PATH_INFO", "/")
    if path == "/clock":
        return clock(environ, start_response)
    if path == "/count":
        return count(environ, start_response)
    if path == "/":
        return index(environ, start_response)
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]


app = LiveMiddleware(router, when=lambda environ: environ.get("PATH_INFO") in ("/clock", "/count"))
