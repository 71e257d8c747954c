"""Idle fan-out streams under a real server, for the disconnect watcher's tests.

``/events/<channel>`` is ``broker.sse_app`` (in-process broker) with heartbeats
every 0.5 s and probes every 0.05 s: a fan-out body that woke for every probe
would wake ten times per heartbeat. ``/quiet/<channel>`` is the same without
heartbeats: nothing but the watcher (or a probe) can tell that its client left.
``/publish/<channel>`` publishes one event; ``/stats`` names the worker
process, counts the times a fan-out body's wait for an event ran out (its server
thread, or greenlet, woke), and the subscriptions still open.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from live_wsgi.broadcast import Event, MemoryBroker, Reset, Subscription

HEARTBEAT = 0.5
PROBE_INTERVAL = 0.05

broker = MemoryBroker()
events = broker.sse_app(heartbeat=HEARTBEAT, probe_interval=PROBE_INTERVAL)
quiet = broker.sse_app(heartbeat=None, probe_interval=PROBE_INTERVAL)

_lock = threading.Lock()
_waits_ran_out = 0
_get = Subscription.get


def _counted_get(self: Subscription, timeout: float | None) -> Event | Reset | None:
    global _waits_ran_out
    item = _get(self, timeout)
    if item is None and not self.closed:
        with _lock:
            _waits_ran_out += 1
    return item


Subscription.get = _counted_get  # type: ignore[method-assign]


def reply(start_response: Any, data: object) -> list[bytes]:
    body = json.dumps(data).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


def app(environ: dict[str, Any], start_response: Any) -> Any:
    path = environ["PATH_INFO"]
    for prefix, fan_out in (("/events/", events), ("/quiet/", quiet)):
        if path.startswith(prefix):
            environ["live_wsgi.channel"] = path[len(prefix):]
            return fan_out(environ, start_response)
    if path.startswith("/publish/"):
        return reply(start_response, broker.publish(path[len("/publish/"):], "news"))
    if path == "/stats":
        with _lock:
            idle = _waits_ran_out
        return reply(start_response, {"pid": os.getpid(), "idle": idle,
                                      "subscriptions": broker.subscriptions()})
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]
