"""Fixtures shared by the whole suite.

``no_leaks`` (autouse) fails any test that leaves a thread running or a live
stream open; ``live`` builds middlewares and shuts them down afterwards.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from live_wsgi import LiveMiddleware
from live_wsgi.middleware import instances

#: How long a test's threads get to finish after it (a deadline, not a sleep).
SETTLE = 5.0


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + SETTLE
    open_streams = []
    for mw in list(instances):
        if not mw.wait_idle(max(0.0, deadline - time.monotonic())):
            open_streams.append((mw, list(mw._jobs)))
    leaked = []
    for thread in set(threading.enumerate()) - before:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            leaked.append(thread.name)
    assert not open_streams, f"live streams still open after the test: {open_streams}"
    assert not leaked, f"threads still running after the test: {leaked}"


@pytest.fixture
def live() -> Iterator[Callable[..., LiveMiddleware]]:
    """``live(app, **options)``: a LiveMiddleware shut down after the test."""
    made: list[LiveMiddleware] = []

    def make(app: Any, **options: Any) -> LiveMiddleware:
        mw = LiveMiddleware(app, **options)
        made.append(mw)
        return mw

    yield make
    for mw in made:
        mw.shutdown(timeout=SETTLE)
