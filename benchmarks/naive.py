"""The naive peer: a thread-pool streaming middleware as one writes it in an afternoon.

A permanent column of ``make bench``, beside ``live``: live_wsgi must be
ahead of it on every metric of the same run. Written plainly on purpose:
the app runs on a ``ThreadPoolExecutor``, its body items go through a
``queue.Queue(10)``; the server thread waits for the first item, then calls
the server's ``start_response`` and returns a generator that drains the
queue. No coalescing, no heartbeats, no probes: a client that leaves an idle
stream is noticed at the next write, never before.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any

DONE = object()  # the app's body ended


class Gone(Exception):
    """The client left (the server closed our body): the producer stops."""


class NaiveMiddleware:
    """Run ``app`` on a thread pool and stream its body through a bounded queue.

    :param app: any WSGI application.
    :param max_workers: the pool's threads (a held stream holds one).
    :param when: ``when(environ)`` false passes the request straight through.
    """

    def __init__(self, app: Any, max_workers: int = 64,
                 when: Callable[[Any], bool] | None = None) -> None:
        self.app = app
        self.when = when  # False: straight through
        self.max_workers = max_workers
        self.executor = ThreadPoolExecutor(max_workers, thread_name_prefix="naive")
        self.active = 0  # requests whose producer has not ended
        self.lock = threading.Lock()

    def __call__(self, environ: Any, start_response: Any) -> Any:
        if self.when is not None and not self.when(environ):
            return self.app(environ, start_response)
        body: queue.Queue[Any] = queue.Queue(10)
        gone = threading.Event()
        head: list[Any] = []

        def put(item: Any) -> None:
            while not gone.is_set():
                try:
                    body.put(item, timeout=0.5)
                    return
                except queue.Full:
                    pass
            raise Gone

        def app_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            head[:] = [status, headers]
            return put  # the legacy write callable

        def produce() -> None:
            try:
                result = self.app(environ, app_start_response)
                try:
                    for item in result:
                        if item:
                            put(item)
                finally:
                    if hasattr(result, "close"):
                        result.close()
                put(DONE)
            except Gone:
                pass
            except BaseException as exc:
                with suppress(Gone):
                    put(exc)
            finally:
                with self.lock:
                    self.active -= 1

        with self.lock:
            self.active += 1
        self.executor.submit(produce)
        first = body.get()  # the first item, the end, or an error
        if isinstance(first, BaseException):
            gone.set()
            raise first
        start_response(*head)
        return self.drain(first, body, gone)

    def shutdown(self) -> None:
        """End the pool's threads once their requests are done (tests: no thread
        outlives them); a later request starts on a fresh pool."""
        executor, self.executor = self.executor, ThreadPoolExecutor(
            self.max_workers, thread_name_prefix="naive")
        executor.shutdown(wait=True)

    @staticmethod
    def drain(item: Any, body: queue.Queue[Any], gone: threading.Event) -> Iterator[bytes]:
        try:
            while item is not DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
                item = body.get()
        finally:
            gone.set()  # done, or closed by the server: the producer stops at its next put
