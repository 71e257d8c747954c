"""gunicorn integration: sensible settings and graceful shutdown of live streams.

Use it as the config::

    gunicorn -c python:live_wsgi.gunicorn myapp:app

or import from your own config file (``gunicorn.conf.py``)::

    from live_wsgi.gunicorn import *                # noqa: F403
    threads = 128                                   # then override what you like

On SIGTERM (a deploy, a scale-down) each worker calls
``LiveMiddleware.shutdown(grace)`` on every middleware it runs: every
``stream.wait`` returns at once, producers get ``grace`` seconds to write a
farewell (``stream.shutting_down`` is True), then every stream still open is
ended (cleanly, except a download, which is cut so it never looks complete)
and the worker exits, well inside
``graceful_timeout``. Set ``LIVE_WSGI_SHUTDOWN_GRACE`` (seconds, default 5)
to change the grace period.

Settings: ``worker_class = "gthread"`` (each live stream holds a server
thread while its producer runs on a pool thread: size ``threads`` to at
least the number of concurrent streams plus ordinary traffic), and a
``graceful_timeout`` that leaves room for the grace period.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

from .broadcast import brokers
from .middleware import instances

log = logging.getLogger("live_wsgi")

#: Seconds producers get to say goodbye on SIGTERM.
SHUTDOWN_GRACE = float(os.environ.get("LIVE_WSGI_SHUTDOWN_GRACE", "5"))

worker_class = "gthread"
threads = 64
graceful_timeout = int(SHUTDOWN_GRACE) + 25


def shutdown_all(grace: float = SHUTDOWN_GRACE) -> None:
    """``shutdown(grace)`` on every LiveMiddleware and every broadcast broker in
    this process, together: live streams get their grace, fan-out streams and
    subscriptions end, broker readers stop (SPEC 8.3, 9.8)."""
    middlewares = list(instances)
    workers = [threading.Thread(target=mw.shutdown, args=(grace,), name="live_wsgi-shutdown")
               for mw in middlewares]
    workers += [threading.Thread(target=broker.shutdown, args=(grace,),
                                 name="live_wsgi-broker-shutdown")
                for broker in list(brokers)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()


def install_shutdown_handler(grace: float = SHUTDOWN_GRACE) -> None:
    """Chain a SIGTERM handler that shuts live streams down gracefully.

    The worker's own handler still runs (it stops accepting and waits for
    requests in flight); the streams are ended from a helper thread so the
    worker's loop keeps serving their last bytes meanwhile.
    """
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        log.info("live_wsgi: SIGTERM, ending live streams within %g s", grace)
        threading.Thread(target=shutdown_all, args=(grace,), name="live_wsgi-sigterm",
                         daemon=True).start()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


#: gunicorn worker classes that serve one request at a time (SPEC 8.2).
SINGLE_THREADED = frozenset({"sync"})


def when_ready(server: Any) -> None:
    """gunicorn hook: runs in the master once it is ready to serve.

    Warns at startup, not at the first live request, when the configured
    worker serves one request at a time (SPEC 8.2).
    """
    warn_if_single_threaded(server.cfg)


def warn_if_single_threaded(cfg: Any) -> bool:
    """Log a warning if ``cfg`` (gunicorn's config) runs a sync worker; True if so."""
    worker = str(getattr(cfg, "worker_class_str", "") or "").rsplit(".", 1)[-1].lower()
    threads = getattr(cfg, "threads", 1) or 1
    if worker in SINGLE_THREADED or worker == "syncworker":
        if threads > 1:
            return False  # gunicorn runs gthread when sync is given threads
        log.warning(
            "live_wsgi: gunicorn runs the sync worker (one request at a time, "
            "and it kills long responses at --timeout): live streams need "
            "-k gthread (or gevent). live_wsgi.gunicorn sets gthread; something "
            "overrode worker_class."
        )
        return True
    return False


def post_worker_init(worker: Any) -> None:
    """gunicorn hook: runs in each worker once it is ready."""
    install_shutdown_handler(SHUTDOWN_GRACE)
