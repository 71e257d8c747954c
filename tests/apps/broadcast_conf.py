"""gunicorn config for tests/apps/broadcast_app.py: live_wsgi's, plus ending
the brokers' subscriptions on SIGTERM so open fan-out streams end at once.

With ``BROADCAST_READY_DIR`` set, each worker creates ``ready-<pid>`` there
when it is about to accept: a test spreading connections over the workers
waits for all of them first (else the first one up takes every connection).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from live_wsgi.broadcast import brokers
from live_wsgi.gunicorn import install_shutdown_handler


def _shutdown_brokers() -> None:
    for broker in list(brokers):
        broker.shutdown()


def post_worker_init(worker: Any) -> None:
    install_shutdown_handler()
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        threading.Thread(target=_shutdown_brokers, daemon=True).start()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    ready = os.environ.get("BROADCAST_READY_DIR")
    if ready:
        with open(os.path.join(ready, f"ready-{os.getpid()}"), "w"):
            pass
