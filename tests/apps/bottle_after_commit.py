"""A Bottle live route that fails after its first write, and what came of it.

The Bottle tests run ``facts(kind)`` in-process (the installed Bottle) and
as ``python -m tests.apps.bottle_after_commit KIND`` in a subprocess whose
``PYTHONPATH`` puts another Bottle first (0.12.25, the oldest setup.cfg
allows). It prints the facts as one JSON line.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import bottle

from live_wsgi import ResponseAborted, current_response
from live_wsgi.bottle import LivePlugin
from live_wsgi.testing import open_stream

WAIT = 10.0
#: What the route does after its first write.
KINDS = ("abort", "exception")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def facts(kind: str) -> dict[str, Any]:
    """Serve one request to a route that writes, then fails as ``kind`` says."""
    reported: list[BaseException] = []
    app = bottle.Bottle()
    plugin = LivePlugin(max_workers=1, on_error=lambda environ, exc: reported.append(exc))
    app.install(plugin)

    @app.route("/fails", live=True)
    def fails() -> None:
        current_response().stream.write("part;")
        if kind == "abort":
            bottle.abort(403, "no more")
        raise RuntimeError("broke mid-stream")

    records = _Records()
    logger = logging.getLogger("live_wsgi")
    logger.addHandler(records)
    try:
        started = open_stream(app, "/fails")
        try:
            started.read_all(WAIT)
            ending = "clean end"
        except ResponseAborted:
            ending = "cut"
        finally:
            started.close()
        idle = plugin.middleware is not None and plugin.middleware.wait_idle(WAIT)
    finally:
        logger.removeHandler(records)
        app.close()
    body = b"".join(started.received)
    errors = [r for r in records.records if r.levelno >= logging.ERROR]
    return {
        "bottle": bottle.__version__,
        "status": started.status,
        "body": body.decode("utf-8", "replace"),
        "ending": ending,
        "idle": idle,
        "reported": [f"{type(exc).__name__}: {exc}" for exc in reported],
        "logged": [
            f"{type(r.exc_info[1]).__name__}: {r.exc_info[1]}" if r.exc_info else r.getMessage()
            for r in errors
        ],
    }


if __name__ == "__main__":
    print(json.dumps(facts(sys.argv[1])))
