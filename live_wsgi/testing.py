"""Test helpers: read a live response a little at a time, with timeouts.

WebTest and Werkzeug's buffered client read whole bodies, so an endless
stream hangs the test. ``open_stream`` calls the app the way a threaded
server does and returns as soon as the response committed; read what you
need, then close (which the client leaving looks like to the app)::

    from live_wsgi.testing import open_stream

    def test_ticks(app):
        with open_stream(app, "/events") as response:       # app, TestApp or Client
            assert response.status_code == 200
            first, second = response.read_events(2, timeout=5)
            assert first.event == "tick"

Every read has a timeout and fails with a message that says what arrived.
"""

from __future__ import annotations

import codecs
import json
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from werkzeug.datastructures import Headers
from werkzeug.test import Client, EnvironBuilder

#: Default seconds a read may wait.
TIMEOUT = 5.0
_END = object()


@dataclass
class Event:
    """One server-sent event, as a browser's ``EventSource`` sees it."""

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None

    def json(self) -> Any:
        return json.loads(self.data)


class SSEParser:
    """A WHATWG event-stream parser (https://html.spec.whatwg.org/#event-stream-interpretation)."""

    def __init__(self) -> None:
        self._pending = ""
        self._skip_lf = False
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._retry: int | None = None
        self.last_event_id: str | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        """Parse more bytes; return the events they completed."""
        text = self._decoder.decode(chunk)
        if self._skip_lf and text.startswith("\n"):
            text = text[1:]
        self._skip_lf = False
        self._pending += text
        events = []
        while (cut := _line_end(self._pending)) is not None:
            start, end = cut
            if end == len(self._pending) and self._pending[start] == "\r":
                self._skip_lf = True  # a CR ends the line; an LF next time belongs to it
            line, self._pending = self._pending[:start], self._pending[end:]
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> Event | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\x00" not in value:
            self._id = value
            self.last_event_id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> Event | None:
        data, event, retry = self._data, self._event, self._retry
        self._data, self._event, self._retry = [], "", None
        if not data:
            return None
        return Event("\n".join(data), event or "message", self.last_event_id, retry)


def _line_end(text: str) -> tuple[int, int] | None:
    for index, char in enumerate(text):
        if char == "\n":
            return index, index + 1
        if char == "\r":
            return index, index + (2 if text[index + 1:index + 2] == "\n" else 1)
    return None


class LiveTestResponse:
    """A committed response whose body is read on demand, with timeouts.

    A helper thread calls ``next()`` on the body once per chunk asked for,
    so nothing is read ahead of the test and a hung producer fails the read
    instead of the test run.
    """

    def __init__(self, status: str, headers: list[tuple[str, str]], body: Iterable[bytes]):
        self.status = status
        self.status_code = int(status[:3])
        self.headers = Headers(headers)
        self.response = body
        self._iterator = iter(body)
        self._requests: queue.Queue[bool] = queue.Queue()
        self._results: queue.Queue[Any] = queue.Queue()
        self._reader: threading.Thread | None = None
        self._ended = False
        self._closed = False
        self._parser = SSEParser()
        self._events: list[Event] = []
        self.received: list[bytes] = []

    def __enter__(self) -> LiveTestResponse:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _read_loop(self) -> None:
        while self._requests.get():
            try:
                self._results.put(next(self._iterator))
            except StopIteration:
                self._results.put(_END)
                return
            except BaseException as exc:
                self._results.put(exc)
                return

    def next_chunk(self, timeout: float = TIMEOUT) -> bytes | None:
        """The next chunk the server would send; None once the body ended."""
        if self._ended:
            return None
        if self._reader is None:
            self._reader = threading.Thread(target=self._read_loop, daemon=True,
                                            name="live_wsgi-test-reader")
            self._reader.start()
        self._requests.put(True)
        try:
            item = self._results.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no chunk within {timeout:g} s; received so far: {self.received!r}"
            ) from None
        if item is _END:
            self._ended = True
            return None
        if isinstance(item, BaseException):
            self._ended = True
            raise item
        self.received.append(item)
        return item  # type: ignore[no-any-return]

    def read_chunks(self, n: int, timeout: float = TIMEOUT) -> list[bytes]:
        """Exactly ``n`` chunks; fails if the body ends or stalls first."""
        chunks: list[bytes] = []
        for _ in range(n):
            chunk = self.next_chunk(timeout)
            if chunk is None:
                raise AssertionError(f"the body ended after {len(chunks)} of {n} chunks: "
                                     f"{chunks!r}")
            chunks.append(chunk)
        return chunks

    def read_events(self, n: int, timeout: float = TIMEOUT) -> list[Event]:
        """Exactly ``n`` server-sent events (comments and heartbeats skipped)."""
        while len(self._events) < n:
            chunk = self.next_chunk(timeout)
            if chunk is None:
                raise AssertionError(
                    f"the stream ended after {len(self._events)} of {n} events: {self._events!r}"
                )
            self._events.extend(self._parser.feed(chunk))
        events, self._events = self._events[:n], self._events[n:]
        return events

    def read_all(self, timeout: float = TIMEOUT) -> bytes:
        """The rest of the body (each chunk within ``timeout``)."""
        body = []
        while (chunk := self.next_chunk(timeout)) is not None:
            body.append(chunk)
        return b"".join(body)

    def close(self) -> None:
        """Close the body, as a server does when the client leaves or the body ended."""
        if self._closed:
            return
        self._closed = True
        close = getattr(self.response, "close", None)
        if close is not None:
            close()
        if self._reader is not None:
            self._requests.put(False)
            self._reader.join(TIMEOUT)


def open_stream(
    app: Any,
    path: str = "/",
    method: str = "GET",
    headers: dict[str, str] | None = None,
    **environ: Any,
) -> LiveTestResponse:
    """Call ``app`` like a threaded server; return once the response committed.

    ``app`` is a WSGI app, a ``webtest.TestApp`` or a ``werkzeug.test.Client``.
    Extra keyword arguments go into the environ.
    """
    extra: dict[str, Any] = {}
    if hasattr(app, "extra_environ") and hasattr(app, "app"):  # webtest.TestApp
        extra.update(app.extra_environ)
        app = app.app
    elif isinstance(app, Client):
        app = app.application
    full = EnvironBuilder(path, method=method, headers=Headers(headers or {})).get_environ()
    full["wsgi.multithread"] = True
    full.update(extra)
    full.update(environ)
    seen: list[Any] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        if exc_info is not None and seen:
            raise exc_info[1].with_traceback(exc_info[2])
        seen[:] = [status, list(headers)]
        return lambda data: None

    body = app(full, start_response)
    if not seen:
        # A plain (non-live) app may call start_response on the first item.
        iterator: Iterator[bytes] = iter(body)
        first = next(iterator, None)
        assert seen, "the app returned without calling start_response"
        rest = [] if first is None else [first]
        return LiveTestResponse(seen[0], seen[1], _Prepend(rest, iterator, body))
    return LiveTestResponse(seen[0], seen[1], body)


class _Prepend:
    def __init__(self, head: list[bytes], tail: Iterator[bytes], original: Any) -> None:
        self._head = head
        self._tail = tail
        self._original = original

    def __iter__(self) -> Iterator[bytes]:
        yield from self._head
        yield from self._tail

    def close(self) -> None:
        close = getattr(self._original, "close", None)
        if close is not None:
            close()
