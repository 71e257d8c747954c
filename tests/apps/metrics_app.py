"""The app the multi-process metrics tests run under ``gunicorn -w 2``.

Every live response starts with the pid of the worker that serves it, so
the test knows which workers its streams reached. ``/hold`` then stays open
until the client leaves; ``/metrics`` is the scrape.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from live_wsgi import LiveMiddleware, current_response, metrics

WAIT = 10.0

# A short interval, so the test's deadline polls see the pool gauges move fast.
metrics.install(sample_interval=0.1)


def produce(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    stream = current_response().stream
    stream.write(f"{os.getpid()}\n")
    if environ["PATH_INFO"] == "/hold":
        stream.wait(WAIT)  # returns early once the probe finds the client gone
    return []


live = LiveMiddleware(produce, max_workers=8)
scrape = metrics.make_wsgi_app()


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/metrics":
        return scrape(environ, start_response)
    return live(environ, start_response)
