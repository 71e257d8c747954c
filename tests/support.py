"""Helpers for the tests: a Werkzeug client reading incrementally, events."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from webtest import TestApp
from werkzeug.test import Client

from live_wsgi import testing
from live_wsgi.testing import LiveTestResponse

#: Upper bound for any wait in a test: far above any normal latency, so a
#: failure means a hang, never a slow machine.
WAIT = 10.0

MT_ENVIRON = {"wsgi.multithread": True}


def webtest_app(app: Any, lint: bool = False) -> TestApp:
    """A WebTest app for a threaded server (``wsgi.multithread``)."""
    return TestApp(app, lint=lint, extra_environ=MT_ENVIRON)


def client(app: Any) -> Client:
    """A Werkzeug test client for a threaded server (``wsgi.multithread``)."""
    return Client(app)


def open_stream(app: Any, path: str = "/", method: str = "GET",
                headers: dict[str, str] | None = None) -> LiveTestResponse:
    """Call ``app`` as a threaded server would; returns at the commit (the library helper)."""
    return testing.open_stream(app, path, method=method, headers=headers)


def chunks(response: LiveTestResponse) -> Iterator[bytes]:
    """The body chunks as the middleware hands them to the server."""
    return iter(response.response)


def wait(event: threading.Event, what: str = "event") -> None:
    """Wait for ``event`` with the suite's deadline; fail clearly if it never comes."""
    assert event.wait(WAIT), f"timed out after {WAIT} s waiting for {what}"


class Recorder:
    """Collects facts from the producer thread for the test to assert."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.facts: dict[str, Any] = {}
        self.done = threading.Event()

    def __setitem__(self, key: str, value: Any) -> None:
        with self.lock:
            self.facts[key] = value

    def __getitem__(self, key: str) -> Any:
        with self.lock:
            return self.facts[key]

    def get(self, key: str, default: Any = None) -> Any:
        with self.lock:
            return self.facts.get(key, default)


class ClosingIterable:
    """An app iterable that counts ``close()`` calls and where they ran."""

    def __init__(self, items: list[bytes], fail_at: int | None = None,
                 before_item: Any = None) -> None:
        self.items = items
        self.fail_at = fail_at
        self.before_item = before_item
        self.close_calls: list[str] = []
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        for index, item in enumerate(self.items):
            if self.before_item is not None:
                self.before_item(index)
            if index == self.fail_at:
                raise ValueError(f"boom at item {index}")
            yield item

    def close(self) -> None:
        self.close_calls.append(threading.current_thread().name)
        self.closed.set()


def drain(sub: Any, n: int) -> list[Any]:
    """The next ``n`` items of a broker subscription, each within the deadline."""
    items = []
    for _ in range(n):
        item = sub.get(WAIT)
        assert item is not None, f"only {items!r} within {WAIT} s"
        items.append(item)
    return items
