"""Idle event streams under a real server, for the disconnect watcher's tests.

``/idle?key=K`` writes one event and then only waits (up to 60 s): nothing
but the watcher (or a probe) can tell that its client left; nor can a failed
heartbeat with ``&quiet=1`` (no heartbeats). ``/result?key=K``
blocks until that producer finished and says what it saw; ``/stats`` names the
worker process and counts the times a body's wait for its producer ran out (its
server thread, or greenlet, woke). Heartbeats every 0.5 s, probes every 0.05 s:
an idle body that woke for every probe would wake ten times per heartbeat.

With ``IDLE_APP_WATCH_IN_MASTER=1`` the module watches a socket of its own
when it is imported, so under ``gunicorn --preload`` the master has a running
watcher (an epoll set and a thread) when it forks the worker.
"""

from __future__ import annotations

import os

if os.environ.get("IDLE_APP_GEVENT_PRELOAD") == "1":
    # gevent under --preload: patch before the app (and live_wsgi) is made in the
    # master, as gevent asks; the worker's own patching then finds it done.
    from gevent import monkey

    monkey.patch_all()

import json
import socket
import threading
from collections import defaultdict
from typing import Any
from urllib.parse import parse_qs

from live_wsgi import SSE, LiveMiddleware, current_response
from live_wsgi.body import LiveBody
from live_wsgi.channel import Channel
from live_wsgi.watcher import watcher

WAIT = 10.0
HEARTBEAT = 0.5
PROBE_INTERVAL = 0.05

_lock = threading.Lock()
_done: defaultdict[str, threading.Event] = defaultdict(threading.Event)
_results: dict[str, dict[str, Any]] = {}
_idle_calls = 0
_idle = LiveBody._idle


def _counted_idle(self: LiveBody) -> bytes | None:
    global _idle_calls
    with _lock:
        _idle_calls += 1
    return _idle(self)


LiveBody._idle = _counted_idle  # type: ignore[method-assign]


def done(key: str) -> threading.Event:
    with _lock:
        return _done[key]


def idle(key: str, quiet: bool) -> None:
    if quiet:
        current_response().heartbeat = None
    stream = current_response().stream
    SSE(stream).write("hello")
    woke = stream.wait(60)
    with _lock:
        _results[key] = {"woke": woke, "connected": stream.connected}
    done(key).set()


def routes(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    path = environ["PATH_INFO"]
    query = parse_qs(environ.get("QUERY_STRING", ""))
    key = query.get("key", [""])[0]
    if path == "/idle":
        idle(key, quiet="quiet" in query)
        return []
    if path == "/result":
        if done(key).wait(WAIT):
            with _lock:
                payload = dict(_results[key])
        else:
            payload = {"woke": "producer still running"}
    elif path == "/stats":
        with _lock:
            payload = {"pid": os.getpid(), "idle": _idle_calls}
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    body = json.dumps(payload).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


app = LiveMiddleware(routes, when=lambda environ: environ["PATH_INFO"] == "/idle",
                     heartbeat=HEARTBEAT, probe_interval=PROBE_INTERVAL, max_workers=64)

if os.environ.get("IDLE_APP_WATCH_IN_MASTER") == "1":
    _master_pair = socket.socketpair()
    _master_channel = Channel(None)
    _master_watcher = watcher()
    assert _master_watcher is not None
    _master_watch = _master_watcher.watch(_master_pair[0], _master_channel)
