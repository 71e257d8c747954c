"""Helpers for the tests: a Werkzeug client reading incrementally, events."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from webtest import TestApp
from werkzeug.datastructures import Headers
from werkzeug.test import Client, EnvironBuilder

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


class Started:
    """A response as the server sees it right after the app committed."""

    def __init__(self, status: str, headers: list[tuple[str, str]], body: Any) -> None:
        self.status = status
        self.status_code = int(status[:3])
        self.headers = Headers(headers)
        self.response = body

    def close(self) -> None:
        close = getattr(self.response, "close", None)
        if close is not None:
            close()


def open_stream(app: Any, path: str = "/", method: str = "GET",
                headers: dict[str, str] | None = None) -> Started:
    """Call ``app`` as a threaded server would, without reading the body.

    Returns as soon as the app called start_response (for a live app: at the
    commit), with the body iterable still unread.
    """
    environ = EnvironBuilder(path, method=method, headers=headers).get_environ()
    environ["wsgi.multithread"] = True
    seen: list[Any] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        seen[:] = [status, headers]
        return lambda data: None

    body = app(environ, start_response)
    assert seen, "the app returned without calling start_response"
    return Started(seen[0], seen[1], body)


def chunks(response: Started) -> Iterator[bytes]:
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
