"""The app the real-server tests run under gunicorn, waitress, Werkzeug.

Producers and the test coordinate through extra requests instead of sleeps:
``/ack`` releases the producer waiting for a chunk to be acknowledged, and
``/result`` blocks until a producer finished and reports what it saw.
Every wait here is bounded.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from typing import Any
from urllib.parse import parse_qs

from live_wsgi import ClientDisconnected, LiveMiddleware, current_response

WAIT = 10.0
#: Bound for producers that write until something stops them.
MAX_WRITES = 20_000

_lock = threading.Lock()
_events: defaultdict[str, threading.Event] = defaultdict(threading.Event)
_results: dict[str, dict[str, Any]] = {}


def event(name: str) -> threading.Event:
    with _lock:
        return _events[name]


def finish(key: str, **facts: Any) -> None:
    with _lock:
        _results[key] = facts
    event(f"{key}:done").set()


def produce_chunks(environ: dict[str, Any], key: str, n: int) -> None:
    stream = current_response().stream
    current_response().headers["Content-Type"] = "text/plain"
    for i in range(n):
        stream.write(f"chunk {i}\n")
        # The client acknowledges each chunk it received through /ack: the
        # next chunk is produced only then, so chunk i provably reached the
        # client while the producer was still running.
        if not event(f"{key}:ack:{i}").wait(WAIT):
            finish(key, outcome="no ack", index=i)
            return
    finish(key, outcome="done")


def produce_forever(key: str, chunk: bytes) -> None:
    stream = current_response().stream
    writes = 0
    try:
        for writes in range(MAX_WRITES):
            stream.write(chunk)
            if writes == 0:
                event(f"{key}:first").set()
    except ClientDisconnected as exc:
        finish(key, outcome=type(exc).__name__, writes=writes)
        raise
    finish(key, outcome="bound reached", writes=writes)


def produce_idle(key: str, sse: bool) -> None:
    """Write once, then only wait: no write can reveal a disconnect."""
    import time

    from live_wsgi import SSE

    response = current_response()
    if sse:
        SSE(response.stream).write("hello")
    else:
        response.headers["Content-Type"] = "text/csv"
        response.stream.write("id,value\n")
    event(f"{key}:first").set()
    started = time.monotonic()
    woke = response.stream.wait(60)
    finish(key, outcome="woke" if woke else "timed out",
           waited=time.monotonic() - started, connected=response.stream.connected)


def produce_until_shutdown() -> None:
    """Idle until the server shuts down, then say goodbye."""
    from live_wsgi import SSE

    stream = current_response().stream
    sse = SSE(stream)
    sse.write("hello")
    while not stream.wait(60):
        pass
    if stream.shutting_down:
        sse.write("see you soon", event="farewell")


def produce_event_after_gate(key: str) -> None:
    """Commit an event stream with an empty write, then stay silent until /ack?i=0."""
    from live_wsgi import SSE

    response = current_response()
    response.heartbeat = None  # no heartbeat may carry the head out early
    sse = SSE(response.stream)
    response.stream.write(b"")  # the commit, with no event yet
    if not event(f"{key}:ack:0").wait(WAIT):
        finish(key, outcome="no ack")
        return
    sse.write("first")
    finish(key, outcome="done")


def live_routes(environ: dict[str, Any], start_response: Any) -> Any:
    path = environ["PATH_INFO"]
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    key = query.get("key", "")
    if path == "/chunks":
        produce_chunks(environ, key, int(query.get("n", "3")))
        return []
    if path == "/forever":
        produce_forever(key, b"x" * int(query.get("size", "1024")))
        return []
    if path in ("/idle-sse", "/idle-csv"):
        produce_idle(key, sse=path == "/idle-sse")
        return []
    if path == "/sse-gate":
        produce_event_after_gate(key)
        return []
    if path == "/farewell":
        produce_until_shutdown()
        return []
    if path == "/fail-after-commit":
        stream = current_response().stream
        stream.write(b"partial body\n")
        raise RuntimeError("the producer failed after the commit")
    if path == "/iterable":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"one\n", b"two\n", b"three\n"]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]


def control(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Non-live routes: /ack, /result, /active."""
    path = environ["PATH_INFO"]
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    key = query.get("key", "")
    if path == "/ack":
        event(f"{key}:ack:{query['i']}").set()
        payload: dict[str, Any] = {"ok": True}
    elif path == "/result":
        if not event(f"{key}:done").wait(WAIT):
            payload = {"outcome": "producer still running"}
        else:
            # The producer returned; its pool thread is free once the job's
            # cleanup ran, which wait_idle() observes.
            with _lock:
                payload = dict(_results[key])
            payload["idle"] = middleware.wait_idle(WAIT)
            payload["active"] = middleware.active_streams
    elif path == "/first":
        payload = {"first": event(f"{key}:first").wait(WAIT)}
    else:
        return live_routes(environ, start_response)  # type: ignore[no-any-return]
    body = json.dumps(payload).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


CONTROL = ("/ack", "/result", "/first")
middleware = LiveMiddleware(
    control,
    when=lambda environ: environ["PATH_INFO"] not in CONTROL,
    write_timeout=2.0,
    max_workers=256,
    heartbeat=0.5,
)
app = middleware
