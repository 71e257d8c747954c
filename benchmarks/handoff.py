"""What one live request costs, taken apart in process, away from gunicorn.

    python -m benchmarks.handoff [--cores 1|2] [--requests N]

Calls each app directly, as a server would (``app(environ, start_response)``,
then the body drained and closed), one request after another, and prints the
microseconds per request:

- ``plain``: the plain app (the server thread does everything);
- ``live, inline``: ``LiveMiddleware`` on an executor that runs the job
  inline, in the caller: live_wsgi's own Python, without any thread hop;
- ``live``: ``LiveMiddleware`` as shipped (its ``LivePool``);
- ``live on ThreadPoolExecutor``: the same on the standard library's pool;
- ``bare round trip``: two Python threads handing a raw lock to each other
  through a ``SimpleQueue``: the hand-off alone, the floor of any design
  that runs the app on another thread.

It also counts the objects each request leaves in reference cycles (found
by ``gc.collect()``; 0 means reference counting frees the request at once).
With ``--cores 1`` (the default) the process is pinned to one core, which
makes the figures steadier; ``--cores 2`` shows the cross-core wake-ups.
"""

from __future__ import annotations

import _thread
import argparse
import gc
import os
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from queue import SimpleQueue
from typing import Any

from live_wsgi import LiveMiddleware
from live_wsgi.pool import LivePool

from .apps import plain_app

REPS = 5


class Inline(LivePool):
    """``LivePool`` that runs each job in the caller: no thread, no hand-off
    (and, as with the shipped pool, no ``Future``)."""

    def __init__(self) -> None:
        super().__init__(1)

    def start(self, fn: Callable[[], object]) -> None:
        fn()


def _ignore(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    return None


def one_request(app: Any, path: str) -> None:
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "",
               "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.multithread": True}  # fmt: skip
    body = app(environ, _ignore)
    try:
        for _ in body:
            pass
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


def per_request(app: Any, path: str, requests: int) -> float:
    """Median µs per request over REPS runs of ``requests``."""
    for _ in range(requests // 10):
        one_request(app, path)  # warm up: pool threads exist
    runs = []
    for _ in range(REPS):
        started = time.perf_counter()
        for _ in range(requests):
            one_request(app, path)
        runs.append((time.perf_counter() - started) / requests * 1e6)
    return statistics.median(runs)


def best_per_request(app: Any, path: str, batches: int = 150, size: int = 200) -> float:
    """The fastest of ``batches`` batches of ``size`` requests, in µs of this
    thread's CPU per request: what the request costs when nothing else on the
    machine gets in its way (other work only ever adds to a batch's time)."""
    best = float("inf")
    for _ in range(batches):
        started = time.thread_time_ns()
        for _ in range(size):
            one_request(app, path)
        best = min(best, (time.thread_time_ns() - started) / size / 1000)
    return best


def cycles_per_request(app: Any, path: str, middleware: LiveMiddleware | None) -> float:
    """Objects per request that only the cyclic GC would free."""
    count = 200
    gc.collect()
    gc.disable()
    try:
        for _ in range(count):
            one_request(app, path)
        if middleware is not None:
            middleware.wait_idle(10)
        return gc.collect() / count
    finally:
        gc.enable()


def round_trip(requests: int) -> float:
    """µs per hand-off round trip between two bare Python threads."""
    jobs: SimpleQueue[Any] = SimpleQueue()

    def worker() -> None:
        while (lock := jobs.get()) is not None:
            lock.release()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        runs = []
        for _ in range(REPS):
            started = time.perf_counter()
            for _ in range(requests):
                lock = _thread.allocate_lock()
                lock.acquire()
                jobs.put(lock)
                lock.acquire()
            runs.append((time.perf_counter() - started) / requests * 1e6)
        return statistics.median(runs)
    finally:
        jobs.put(None)
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cores", type=int, choices=(1, 2), default=1)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    if args.cores == 1:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    live = LiveMiddleware(plain_app)
    inline = LiveMiddleware(plain_app, executor=Inline())
    stdlib_pool = ThreadPoolExecutor(64)
    on_stdlib = LiveMiddleware(plain_app, executor=stdlib_pool)
    apps: list[tuple[str, Any, LiveMiddleware | None]] = [
        ("plain", plain_app, None),
        ("live, inline (no hand-off)", inline, inline),
        ("live", live, live),
        ("live on ThreadPoolExecutor", on_stdlib, on_stdlib),
    ]
    print(f"{args.cores} core(s), {args.requests} requests x {REPS} runs, medians; "
          "best: the fastest batch of 200 (thread CPU), for the apps that run in this thread")
    print(f"{'app':<28} {'path':<8} {'µs/request':>10} {'best':>6} {'cyclic objects/request':>23}")
    try:
        for path in ("/short", "/sse"):
            for name, app, middleware in apps:
                cost = per_request(app, path, args.requests)
                # Thread CPU misses the pool thread's share: only where all
                # of the request runs in this thread.
                best = (f"{best_per_request(app, path):6.1f}"
                        if middleware is None or middleware is inline else f"{'-':>6}")
                cycles = cycles_per_request(app, path, middleware)
                print(f"{name:<28} {path:<8} {cost:>10.1f} {best} {cycles:>23.1f}", flush=True)
        print(f"{'bare round trip':<28} {'':<8} {round_trip(args.requests):>10.1f}")
    finally:
        for middleware in (live, inline, on_stdlib):
            middleware.shutdown()
        stdlib_pool.shutdown()


if __name__ == "__main__":
    main()
