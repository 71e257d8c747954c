"""The app the cross-process broadcast tests run under gunicorn (SPEC 9).

Configured by the environment: ``LIVE_WSGI_BROKER`` (the Redis URL),
``BROADCAST_PREFIX`` (the test's own keys), ``BROADCAST_MAXLEN``, and
``BROADCAST_WARM=1`` to start the broker's reader at import (in a ``--preload``
master, before the fork).

- ``GET /events/<channel>``: the fan-out SSE response; its first chunk is a
  comment naming the worker: ``: pid <pid> broker-made-in <pid>``.
- ``POST /publish?channel=c&data=d[&count=n]``: publishes; the ids as JSON.
- ``GET /info``: this worker's pid, where the broker was made, its threads.
- ``GET /live``: a LiveMiddleware route (its pool is what fan-out must not use).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

from live_wsgi import LiveMiddleware, current_response
from live_wsgi.broadcast import broker_from_url

BROKER_MADE_IN = os.getpid()
broker = broker_from_url(os.environ["LIVE_WSGI_BROKER"],
                         prefix=os.environ.get("BROADCAST_PREFIX", "live:"),
                         maxlen=int(os.environ.get("BROADCAST_MAXLEN", "1000")))
if os.environ.get("BROADCAST_WARM") == "1":
    # The reader thread and a pooled connection now exist in this process; a
    # forked worker must not use either.
    broker.publish("warm-up", "before the fork")
    broker.subscribe("warm-up").close()

events = broker.sse_app(heartbeat=None)


def live_route(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    current_response().stream.write("from a pool thread\n")
    return []


live = LiveMiddleware(live_route, max_workers=4)


class WithPid:
    """The fan-out body, after a first comment naming this worker."""

    def __init__(self, body: Iterable[bytes]) -> None:
        self.body = body

    def __iter__(self) -> Iterator[bytes]:
        yield f": pid {os.getpid()} broker-made-in {BROKER_MADE_IN}\n\n".encode()
        yield from self.body

    def close(self) -> None:
        close = getattr(self.body, "close", None)
        if close is not None:
            close()


def reply(start_response: Any, data: object, status: str = "200 OK") -> list[bytes]:
    body = json.dumps(data).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
    return [body]


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path.startswith("/events/"):
        environ["live_wsgi.channel"] = path[len("/events/"):]
        return WithPid(events(environ, start_response))
    if path == "/publish" and environ["REQUEST_METHOD"] == "POST":
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        count = int(query.get("count", "1"))
        ids = [broker.publish(query["channel"], query.get("data", ""))
               for _ in range(count)]
        return reply(start_response, ids)
    if path == "/info":
        return reply(start_response, {
            "pid": os.getpid(),
            "broker_made_in": BROKER_MADE_IN,
            "threads": [t.name for t in threading.enumerate()],
            "subscriptions": broker.subscriptions(),
        })
    if path == "/live":
        return live(environ, start_response)
    return reply(start_response, {"error": "not found"}, "404 Not Found")
