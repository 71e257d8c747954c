"""LivePool, the default executor: a concurrent.futures Executor without a Future per job."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import CancelledError
from typing import Any

import pytest

from live_wsgi import LiveMiddleware
from live_wsgi.pool import LivePool

pytestmark = pytest.mark.timeout(30)

WAIT = 10.0


def until(condition: Any, what: str) -> None:
    """Poll ``condition()`` until true, failing after the suite's deadline."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {WAIT} s waiting for {what}"
        threading.Event().wait(0.005)


def names(pool: LivePool) -> list[str]:
    return sorted(thread.name for thread in pool._threads)


def test_submit_returns_a_future_with_the_result_or_the_error() -> None:
    pool = LivePool(2)
    try:
        assert pool.submit(pow, 2, 10).result(WAIT) == 1024
        with pytest.raises(ZeroDivisionError):
            pool.submit(lambda: 1 / 0).result(WAIT)
        assert list(pool.map(str, [1, 2, 3], timeout=WAIT)) == ["1", "2", "3"]
    finally:
        pool.shutdown()


def test_threads_start_on_demand_up_to_max_workers_and_are_reused() -> None:
    pool = LivePool(3, thread_name_prefix="p")
    release = threading.Event()
    started = threading.Semaphore(0)

    def job() -> None:
        started.release()
        release.wait(WAIT)

    try:
        for _ in range(2):
            pool.start(job)
        for _ in range(2):
            assert started.acquire(timeout=WAIT)
        assert len(pool._threads) == 2  # one thread per job running at once
        release.set()
        until(lambda: pool._waiting == 2, "both threads to wait for work again")
        # Back to waiting, the two threads take the next jobs: no new thread.
        done = [pool.submit(lambda: threading.current_thread().name) for _ in range(2)]
        assert {future.result(WAIT) for future in done} <= set(names(pool))
        assert len(pool._threads) == 2
        assert all(name.startswith("p_") for name in names(pool))
    finally:
        release.set()
        pool.shutdown()


def test_jobs_beyond_max_workers_wait_for_a_free_thread() -> None:
    pool = LivePool(1)
    release = threading.Event()
    order: list[str] = []
    try:
        first = pool.submit(lambda: (release.wait(WAIT), order.append("first")))
        second = pool.submit(lambda: order.append("second"))
        assert not second.done()
        assert len(pool._threads) == 1
        release.set()
        second.result(WAIT)
        first.result(WAIT)
        assert order == ["first", "second"]
    finally:
        release.set()
        pool.shutdown()


def test_shutdown_cancels_queued_jobs_joins_threads_and_refuses_new_ones() -> None:
    pool = LivePool(1)
    release = threading.Event()
    started = threading.Event()
    running = pool.submit(lambda: (started.set(), release.wait(WAIT))[1])
    queued = pool.submit(lambda: "never")
    assert started.wait(WAIT)  # the first job was taken; the second waits
    threading.Timer(0.05, release.set).start()  # lets the running job end
    pool.shutdown(wait=True, cancel_futures=True)
    assert running.result(0) is True
    with pytest.raises(CancelledError):
        queued.result(0)
    assert not any(thread.is_alive() for thread in pool._threads)
    with pytest.raises(RuntimeError, match="shut down"):
        pool.start(lambda: None)
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(lambda: None)
    pool.shutdown()  # twice is fine


def test_a_failing_job_is_logged_and_its_thread_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    pool = LivePool(1)
    try:
        with caplog.at_level(logging.ERROR, logger="live_wsgi"):
            pool.start(lambda: 1 / 0)
            assert pool.submit(lambda: "still here").result(WAIT) == "still here"
        assert any("a pool job failed" in record.getMessage() for record in caplog.records)
        assert len(pool._threads) == 1
    finally:
        pool.shutdown()


def test_a_thread_that_cannot_start_refuses_the_job_and_leaves_no_trace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = LivePool(2)

    def cannot_start(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    try:
        with monkeypatch.context() as patch:
            patch.setattr(threading.Thread, "start", cannot_start)
            with pytest.raises(RuntimeError, match="can't start new thread"):
                pool.start(lambda: None)
        assert not pool._threads and pool._waiting == 0 and pool._backlog == 0
        assert pool.submit(lambda: "ok").result(WAIT) == "ok"
    finally:
        pool.shutdown()


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "4", None])
def test_max_workers_must_be_a_positive_int(bad: Any) -> None:
    with pytest.raises(ValueError, match="max_workers must be an int >= 1"):
        LivePool(bad)


def test_middleware_runs_on_its_own_live_pool_of_max_workers(live: Any) -> None:
    mw: LiveMiddleware = live(lambda environ, start_response: [b"ok"], max_workers=3)
    assert isinstance(mw.executor, LivePool)
    assert mw.executor.max_workers == 3


def race_shutdown_with_submits(cancel: bool) -> None:
    """Four threads submit while the pool shuts down; check every Future."""
    pool = LivePool(64)  # most submits start a thread: the widest window
    accepted: list[Any] = []
    refused = []
    go = threading.Barrier(5, timeout=WAIT)

    def submitter() -> None:
        go.wait()
        for _ in range(20):
            try:
                accepted.append(pool.submit(time.sleep, 0.001))  # keeps threads busy
            except RuntimeError:
                refused.append(1)

    submitters = [threading.Thread(target=submitter) for _ in range(4)]
    for thread in submitters:
        thread.start()
    go.wait()
    until(lambda: len(accepted) + len(refused) >= 8, "the submits to be under way")
    pool.shutdown(wait=True, cancel_futures=cancel)
    for thread in submitters:
        thread.join(WAIT)
    assert len(accepted) + len(refused) == 80
    for future in accepted:
        assert future.done(), "an accepted job was lost by shutdown"
        if not cancel:
            assert not future.cancelled()
    assert not any(thread.is_alive() for thread in pool._threads)


@pytest.mark.parametrize("cancel", [False, True], ids=["drain", "cancel"])
def test_shutdown_racing_submits_loses_no_accepted_job(cancel: bool) -> None:
    """Every submit that returned a Future sees it run (or, with
    cancel_futures, cancelled), and shutdown never trips over a thread that
    is still starting; submits after it are refused. Bounded: 60 rounds."""
    for _ in range(60):
        race_shutdown_with_submits(cancel)


def test_idle_threads_exit_after_idle_timeout() -> None:
    """SPEC 8.3: a thread that waited idle_timeout for a job exits (Rails' cached
    pool does the same), so a burst leaves no threads behind; the pool still runs
    jobs afterwards."""
    pool = LivePool(4, idle_timeout=0.05)
    try:
        assert [f.result(WAIT) for f in [pool.submit(pow, 2, n) for n in range(4)]] \
            == [1, 2, 4, 8]
        until(lambda: not pool._threads, "idle threads to exit")
        assert pool.submit(pow, 3, 2).result(WAIT) == 9
    finally:
        pool.shutdown()


def test_idle_timeout_is_checked() -> None:
    """SPEC 8.3: idle_timeout is a usable number of seconds."""
    for bad in (0, -1, float("inf"), float("nan"), True):
        with pytest.raises(ValueError, match="idle_timeout"):
            LivePool(2, idle_timeout=bad)


def test_pool_threads_do_not_outlive_their_middleware() -> None:
    """SPEC 8.3: 20 middlewares created and dropped leave no pool thread behind."""
    import gc

    before = {t for t in threading.enumerate() if t.name.startswith("live_wsgi_")}
    for _ in range(20):
        mw = LiveMiddleware(lambda environ, sr: [b"ok"])
        body = mw({"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.multithread": True},
                  lambda status, headers, exc_info=None: None)
        assert b"".join(body) == b"ok"
        body.close()  # type: ignore[attr-defined]
        assert mw.wait_idle(WAIT)
        del mw, body
    gc.collect()
    until(lambda: not {t for t in threading.enumerate()
                       if t.name.startswith("live_wsgi_")} - before,
          "the dropped middlewares' threads to exit")


def test_counts_read_threads_busy_and_queued() -> None:
    """SPEC 2.4: one consistent reading of the pool for metrics."""
    pool = LivePool(1)
    release, started = threading.Event(), threading.Event()
    try:
        assert pool.counts() == (0, 0, 0)
        pool.start(lambda: (started.set(), release.wait(WAIT)))
        assert started.wait(WAIT)
        pool.start(lambda: None)
        counts = pool.counts()
        assert (counts.threads, counts.busy, counts.queued) == (1, 1, 1)
    finally:
        release.set()
        pool.shutdown()
