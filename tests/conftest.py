"""Fixtures shared by the whole suite.

``no_leaks`` (autouse) fails any test that leaves a thread running or a live
stream open; ``live`` builds middlewares and shuts them down afterwards.
``redis_server`` is a real ``redis-server`` for the session, ``redis_prefix``
a key prefix of the test's own, ``new_redis`` a server of the test's own
(to kill and restart). Without ``redis-server`` installed these skip, except
under ``CI=true``, where they fail: a green CI run never hides the tier.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from live_wsgi import LiveMiddleware
from live_wsgi.middleware import instances

from .redisserver import RedisServer, redis_server_path

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


# -- a real redis-server ------------------------------------------------------------

_prefixes = itertools.count()


def _require_redis_server() -> None:
    if redis_server_path() is None:
        message = "redis-server is not installed (`make redis` installs Debian's)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; under CI=true the Redis tier must run")
        pytest.skip(message)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    _require_redis_server()
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_prefix() -> str:
    """Keys of this test's own on the shared server (no FLUSHALL needed)."""
    return f"test{os.getpid()}-{next(_prefixes)}:"


@pytest.fixture
def new_redis(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """``new_redis(appendonly=False)``: a server of the test's own, stopped after it."""
    _require_redis_server()
    made: list[RedisServer] = []

    def make(*, appendonly: bool = False) -> RedisServer:
        directory = tmp_path / f"redis{len(made)}"
        directory.mkdir()
        server = RedisServer(directory, appendonly=appendonly).start()
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()
