"""The thread pool live requests run on by default: a lean ``concurrent.futures`` Executor.

design: a live request is two thread hand-offs (S to W, W back to S), and on a
busy server each costs a GIL hand-off besides the switch, so whatever a
thread runs between waking the other one and blocking itself is paid for
twice. ``ThreadPoolExecutor`` makes a ``Future`` (with its ``Condition``) per
job and runs two ``Semaphore`` round trips in Python around it; on one
core that measured about 19 µs of a streamed live request
(``python -m benchmarks.handoff``). ``LivePool`` is a ``concurrent.futures.Executor``
(``submit`` returns a ``Future`` as usual), and ``start`` runs a job with
nothing but a queue put and an idle count.

Threads start on demand up to ``max_workers``; one that waited
``idle_timeout`` seconds for a job exits (as Rails' cached thread pool
does), so a burst leaves no threads behind, and a pool nobody uses any more
ends up with none. They are daemon threads: ``LiveMiddleware.shutdown`` ends
the streams and the pool (and a middleware that is garbage collected shuts
its pool down); the interpreter's exit never waits on an endless producer.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from queue import Empty, SimpleQueue
from typing import Any, NamedTuple, TypeVar

log = logging.getLogger("live_wsgi")

T = TypeVar("T")

#: Seconds an idle thread waits for work before it exits: Rails' cached
#: pool's figure. Long enough that steady traffic never restarts threads
#: (a thread start costs ~100 µs), short enough that a burst's threads go.
IDLE_TIMEOUT = 60.0

_serial = itertools.count()


class PoolCounts(NamedTuple):
    """A reading of ``LivePool.counts()``."""

    threads: int
    busy: int
    queued: int


class LivePool(Executor):
    """Run callables on up to ``max_workers`` threads, started as needed.

    :param max_workers: the most threads the pool starts (an int >= 1).
    :param thread_name_prefix: threads are named ``PREFIX_N``.
    :param idle_timeout: seconds a thread waits for a job before it exits.
    """

    def __init__(
        self,
        max_workers: int,
        thread_name_prefix: str = "live_wsgi",
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(f"max_workers must be an int >= 1, not {max_workers!r}")
        if (isinstance(idle_timeout, bool) or not isinstance(idle_timeout, (int, float))
                or math.isnan(idle_timeout) or not 0 < idle_timeout <= threading.TIMEOUT_MAX):
            raise ValueError(
                f"idle_timeout must be a number of seconds > 0 and <= "
                f"{threading.TIMEOUT_MAX:g}, not {idle_timeout!r}"
            )
        self.max_workers = max_workers
        self.idle_timeout = float(idle_timeout)
        self._prefix = thread_name_prefix
        self._queue: SimpleQueue[Callable[[], object] | None] = SimpleQueue()
        # _lock guards the counts and _threads (workers take it); _submit_lock
        # orders starting jobs and threads against shutdown (workers never
        # take it): every thread in _threads has started, or is starting
        # under _submit_lock.
        self._lock = threading.Lock()
        self._submit_lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        # Threads waiting for a job (or on their way to), and jobs queued that
        # no thread has taken yet: a job needs a new thread only when the
        # waiting threads are all spoken for.
        self._waiting = 0
        self._backlog = 0
        self._shutdown = False

    def __repr__(self) -> str:
        return f"<LivePool {len(self._threads)}/{self.max_workers} threads>"

    def counts(self) -> PoolCounts:
        """How many threads run, how many of them are busy, how many jobs wait
        for one: one consistent reading (for metrics and debugging)."""
        with self._lock:
            threads, waiting, backlog = len(self._threads), self._waiting, self._backlog
        # A thread on its way to a job counts as waiting; a job no waiting
        # thread will take is queued.
        return PoolCounts(threads, threads - waiting, max(0, backlog - waiting))

    def start(self, fn: Callable[[], object]) -> None:
        """Run ``fn()`` on a pool thread, without a ``Future``.

        An exception from ``fn`` is logged. Raises ``RuntimeError`` after
        ``shutdown``.
        """
        with self._submit_lock:  # against shutdown: a job taken is a job queued
            if self._shutdown:
                raise RuntimeError("cannot start a job after the pool was shut down")
            thread = None
            with self._lock:
                self._backlog += 1
                if self._backlog > self._waiting and len(self._threads) < self.max_workers:
                    self._waiting += 1
                    thread = threading.Thread(
                        target=self._work, name=f"{self._prefix}_{next(_serial)}", daemon=True
                    )
                    self._threads.add(thread)
            if thread is not None:
                try:
                    thread.start()
                except BaseException:  # e.g. "can't start new thread": undo, refuse
                    with self._lock:
                        self._threads.discard(thread)
                        self._waiting -= 1
                        self._backlog -= 1
                    raise
            # Last: from here the other thread may run. (Workers never take
            # _submit_lock, so releasing it costs them nothing.)
            self._queue.put(fn)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """``Executor.submit``: run ``fn(*args, **kwargs)``; its ``Future``."""
        job = _FutureJob(fn, args, kwargs)
        self.start(job)
        return job.future

    def _work(self) -> None:
        queue = self._queue
        lock = self._lock
        idle_timeout = self.idle_timeout
        while True:
            try:
                fn = queue.get(timeout=idle_timeout)
            except Empty:
                with lock:
                    # Leave only if a job queued now still finds a waiting
                    # thread: the jobs on their way are fewer than the others.
                    if self._backlog < self._waiting:
                        self._waiting -= 1
                        self._threads.discard(threading.current_thread())
                        return
                continue
            with lock:
                self._waiting -= 1
                if fn is None:  # shutdown
                    self._threads.discard(threading.current_thread())
                    return
                self._backlog -= 1
            try:
                fn()
            except BaseException:
                log.exception("live_wsgi: a pool job failed: %r", fn)
            fn = None  # let the job go before waiting for the next one
            with lock:
                self._waiting += 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Start no more jobs; let every thread end once the queue is done.

        ``cancel_futures`` drops the jobs no thread has taken yet. ``wait``
        joins the threads.
        """
        with self._submit_lock:
            if not self._shutdown:
                self._shutdown = True
                if cancel_futures:
                    self._drop_backlog()
                with self._lock:
                    threads = list(self._threads)
                for _ in threads:
                    self._queue.put(None)
            with self._lock:
                threads = list(self._threads)
        if wait:
            for thread in threads:
                thread.join()

    def _drop_backlog(self) -> None:
        # With _submit_lock held: the queue holds jobs only, no sentinel yet.
        while True:
            try:
                fn = self._queue.get_nowait()
            except Empty:  # the rest was taken by threads (it will run)
                return
            with self._lock:
                self._backlog -= 1
            if isinstance(fn, _FutureJob):
                fn.future.cancel()


class _FutureJob:
    """A ``submit``ted call and its ``Future``."""

    __slots__ = ("args", "fn", "future", "kwargs")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]):
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.future: Future[Any] = Future()

    def __call__(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)
