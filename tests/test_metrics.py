"""Prometheus metrics (``live_wsgi.metrics``) over the signals of SPEC 7.3.

In process first: each test installs the metrics on a fresh registry, runs
streams that complete, are cut, lose their client, fail before the commit
or are refused, and reads the exposition the ``/metrics`` app serves. Then
under a real ``gunicorn -w 2`` in multi-process mode: streams that both
workers serve are all counted in one scrape.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Counter, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from live_wsgi import LiveMiddleware, ResponseAborted, current_response, metrics, signals

from . import readme
from .realserver import Server, gunicorn
from .support import WAIT, chunks, open_stream, wait, webtest_app

pytestmark = pytest.mark.timeout(60)

SIGNALS = ["stream_started", "stream_committed", "stream_closed", "client_disconnected",
           "stream_error", "send_stream", "stream_refused"]


class Samples:
    """One scrape, parsed: ``samples("name", label="value")`` is a sample's value."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value

    def __call__(self, name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        assert key in self.values, f"no sample {key} in:\n{self.text}"
        return self.values[key]

    def names(self) -> set[str]:
        return {name for name, _ in self.values}


def scrape(registry: CollectorRegistry) -> Samples:
    """What Prometheus reads from the ``/metrics`` app serving ``registry``."""
    response = webtest_app(metrics.make_wsgi_app(registry)).get("/metrics")
    assert response.content_type == "text/plain"
    return Samples(response.text)


def eventually(read: Callable[[], Samples], check: Callable[[Samples], bool],
               what: str) -> Samples:
    """Read until ``check`` holds, within the suite's deadline (not a fixed sleep)."""
    deadline = time.monotonic() + WAIT
    while True:
        samples = read()
        if check(samples):
            return samples
        assert time.monotonic() < deadline, f"never {what}; last scrape:\n{samples.text}"
        threading.Event().wait(0.02)


def receiver_counts() -> dict[str, int]:
    return {name: len(getattr(signals, name).receivers) for name in SIGNALS}


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    """The metrics installed on a fresh registry; nothing of them left after."""
    before = receiver_counts()
    reg = CollectorRegistry()
    metrics.install(reg)
    yield reg
    assert metrics.uninstall(reg)
    assert receiver_counts() == before
    assert metrics.installed() is None


# -- in process ----------------------------------------------------------------------------


def test_complete_streams_are_counted(live: Any, registry: CollectorRegistry) -> None:
    """SPEC 7.3: started, closed complete, bytes, duration and time to commit per stream."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        current_response().stream.write(b"abc")
        return [b"defg"]

    mw = live(app)
    client = webtest_app(mw)
    assert client.get("/").body == b"abcdefg"
    assert client.get("/").body == b"abcdefg"
    assert mw.wait_idle(WAIT)
    m = scrape(registry)
    assert m("live_wsgi_streams_started_total") == 2
    assert m("live_wsgi_streams_closed_total", outcome="complete") == 2
    assert m("live_wsgi_streams_closed_total", outcome="cut") == 0
    assert m("live_wsgi_streams_closed_total", outcome="disconnected") == 0
    assert m("live_wsgi_sent_bytes_total") == 14
    assert m("live_wsgi_stream_duration_seconds_count") == 2
    assert m("live_wsgi_stream_duration_seconds_sum") > 0
    assert m("live_wsgi_time_to_commit_seconds_count") == 2
    assert m("live_wsgi_streams_open") == 0
    assert m("live_wsgi_client_disconnects_total") == 0
    assert m("live_wsgi_refused_total", answer="503", reason="busy") == 0


def test_open_streams_and_busy_threads_while_streaming(
    live: Any, registry: CollectorRegistry
) -> None:
    """SPEC 7.3: a stream being sent is open and holds a busy pool thread; then neither."""
    gate = threading.Event()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        current_response().stream.write(b"first")
        wait(gate, "gate")
        return [b" last"]

    # Other tests' middlewares may still be alive in this process: compare to before.
    before = scrape(registry)
    mw = live(app, max_workers=4)
    started = open_stream(mw)
    body = chunks(started)
    assert next(body) == b"first"
    m = scrape(registry)
    assert m("live_wsgi_streams_open") == 1
    assert m("live_wsgi_streams_started_total") == 1
    busy = m("live_wsgi_pool_threads_busy") - before("live_wsgi_pool_threads_busy")
    assert busy == 1
    most = m("live_wsgi_pool_threads_max") - before("live_wsgi_pool_threads_max")
    assert most == 4
    assert m("live_wsgi_pool_queued") == before("live_wsgi_pool_queued")
    gate.set()
    assert b"".join(body) == b" last"
    started.close()
    assert mw.wait_idle(WAIT)
    m = eventually(
        lambda: scrape(registry),
        lambda m: m("live_wsgi_pool_threads_busy") == before("live_wsgi_pool_threads_busy"),
        "the pool thread back to idle",
    )
    assert m("live_wsgi_streams_open") == 0
    assert m("live_wsgi_streams_closed_total", outcome="complete") == 1


def test_requests_waiting_for_a_pool_thread_are_queued(
    live: Any, registry: CollectorRegistry
) -> None:
    """SPEC 2.4: a request waiting for the only pool thread shows as queued."""
    gate = threading.Event()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        current_response().stream.write(b"x")
        wait(gate, "gate")
        return []

    before = scrape(registry)
    mw = live(app, max_workers=1, queue_timeout=WAIT)
    first = open_stream(mw)
    second: list[Any] = []
    waiting = threading.Thread(target=lambda: second.append(open_stream(mw)))
    waiting.start()
    try:
        eventually(
            lambda: scrape(registry),
            lambda m: m("live_wsgi_pool_queued") - before("live_wsgi_pool_queued") == 1,
            "the second request queued",
        )
    finally:
        gate.set()
        waiting.join(WAIT)
    assert b"".join(chunks(first)) == b"x"
    first.close()
    assert b"".join(chunks(second[0])) == b"x"
    second[0].close()
    assert mw.wait_idle(WAIT)
    m = scrape(registry)
    assert m("live_wsgi_pool_queued") == before("live_wsgi_pool_queued")
    assert m("live_wsgi_streams_closed_total", outcome="complete") == 2


def test_refusals_are_counted(live: Any, registry: CollectorRegistry) -> None:
    """SPEC 2.4: 503s and EventSource turn-aways are counted, busy or at shutdown."""
    gate = threading.Event()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        current_response().stream.write(b"x")
        wait(gate, "gate")
        return []

    mw = live(app, max_workers=1, queue_timeout=0.05)
    held = open_stream(mw)
    client = webtest_app(mw)
    client.get("/", status=503)
    retry = client.get("/", headers={"Accept": "text/event-stream"}, status=200)
    assert retry.body.startswith(b"retry: ")
    gate.set()
    assert b"".join(chunks(held)) == b"x"
    held.close()
    assert mw.shutdown(timeout=WAIT)
    client.get("/", status=503)
    m = scrape(registry)
    assert m("live_wsgi_refused_total", answer="503", reason="busy") == 1
    assert m("live_wsgi_refused_total", answer="retry", reason="busy") == 1
    assert m("live_wsgi_refused_total", answer="503", reason="shutdown") == 1
    assert m("live_wsgi_refused_total", answer="retry", reason="shutdown") == 0
    assert m("live_wsgi_streams_started_total") == 1  # refused requests never run


def test_cut_streams_count_the_error(live: Any, registry: CollectorRegistry) -> None:
    """SPEC 5.2, 7.3: an error after the commit counts by class and closes the stream cut."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        current_response().stream.write(b"part")
        raise ValueError("broken export")

    mw = live(app)
    started = open_stream(mw)
    with pytest.raises(ResponseAborted):
        b"".join(chunks(started))
    started.close()
    assert mw.wait_idle(WAIT)
    m = scrape(registry)
    assert m("live_wsgi_stream_errors_total", exception="ValueError") == 1
    assert m("live_wsgi_streams_closed_total", outcome="cut") == 1
    assert m("live_wsgi_streams_closed_total", outcome="complete") == 0
    assert m("live_wsgi_client_disconnects_total") == 0
    assert m("live_wsgi_sent_bytes_total") == 4
    assert m("live_wsgi_streams_open") == 0


def test_disconnects_are_counted(live: Any, registry: CollectorRegistry) -> None:
    """SPEC 4.1, 7.3: a client that leaves counts once and closes the stream disconnected."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        stream = current_response().stream
        stream.write(b"first")
        stream.wait(WAIT)
        return []

    mw = live(app)
    started = open_stream(mw)
    assert next(chunks(started)) == b"first"
    started.close()
    assert mw.wait_idle(WAIT)
    m = scrape(registry)
    assert m("live_wsgi_client_disconnects_total") == 1
    assert m("live_wsgi_streams_closed_total", outcome="disconnected") == 1
    assert m("live_wsgi_sent_bytes_total") == 5
    assert m("live_wsgi_stream_duration_seconds_count") == 1
    assert m("live_wsgi_streams_open") == 0
    assert "live_wsgi_stream_errors_total" not in m.names()


def test_an_error_before_the_commit_leaves_no_open_stream(
    live: Any, registry: CollectorRegistry
) -> None:
    """SPEC 5.1: an error before the commit is the server's: started, never open or closed."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        raise ValueError("before any byte")

    mw = live(app)
    with pytest.raises(ValueError, match="before any byte"):
        webtest_app(mw).get("/")
    assert mw.wait_idle(WAIT)
    m = scrape(registry)
    assert m("live_wsgi_streams_started_total") == 1
    assert m("live_wsgi_streams_open") == 0
    for outcome in ("complete", "cut", "disconnected"):
        assert m("live_wsgi_streams_closed_total", outcome=outcome) == 0
    assert m("live_wsgi_time_to_commit_seconds_count") == 0
    assert "live_wsgi_stream_errors_total" not in m.names()


def test_open_streams_never_go_negative_when_the_end_is_signalled_first(
    live: Any, registry: CollectorRegistry, monkeypatch: Any
) -> None:
    """SPEC 7.3: the commit is signalled on the worker after the server thread may go on:
    a HEAD response can end (stream_closed) before stream_committed's receivers ran."""
    in_commit = threading.Event()
    release = threading.Event()
    installed = metrics.installed()
    assert installed is not None
    observe = installed.time_to_commit.observe

    def slow_observe(amount: float) -> None:  # the commit receiver, held up on the worker
        in_commit.set()
        wait(release, "release")
        observe(amount)

    monkeypatch.setattr(installed.time_to_commit, "observe", slow_observe)

    def app(environ: Any, start_response: Any) -> list[bytes]:
        current_response().stream.write(b"dropped: HEAD")
        return []

    mw = live(app)
    try:
        webtest_app(mw).head("/")  # the server thread ends the body meanwhile
        wait(in_commit, "the commit receiver")
        assert scrape(registry)("live_wsgi_streams_open") == 0
    finally:
        release.set()
    assert mw.wait_idle(WAIT)
    m = scrape(registry)
    assert m("live_wsgi_streams_open") == 0
    assert m("live_wsgi_streams_closed_total", outcome="complete") == 1


def test_install_is_idempotent_and_uninstall_leaves_nothing() -> None:
    """SPEC 7.3: one installation per process; uninstall removes receivers and metrics."""
    before = receiver_counts()
    reg = CollectorRegistry()
    installed = metrics.install(reg)
    try:
        assert metrics.install(reg) is installed
        assert metrics.installed() is installed
        with pytest.raises(ValueError, match="another registry"):
            metrics.install(CollectorRegistry())
        assert receiver_counts() == {
            name: count + (name != "send_stream") for name, count in before.items()
        }
        assert b"live_wsgi_streams_open" in generate_latest(reg)
    finally:
        assert metrics.uninstall(reg)
    assert receiver_counts() == before
    assert generate_latest(reg) == b""
    assert metrics.installed() is None
    assert not metrics.uninstall()
    again = metrics.install(reg)  # and once more, afresh
    assert again is not installed
    again.uninstall()
    assert receiver_counts() == before


def test_install_on_a_registry_with_a_taken_name_leaves_nothing() -> None:
    """SPEC 7.3: install is all or nothing: a clash leaves the registry and signals as they were."""
    before = receiver_counts()
    reg = CollectorRegistry()
    Counter("live_wsgi_sent_bytes", "somebody else's", registry=reg)
    mine = generate_latest(reg)
    with pytest.raises(ValueError, match="Duplicated"):
        metrics.install(reg)
    assert metrics.installed() is None
    assert receiver_counts() == before
    assert generate_latest(reg) == mine


def readme_example() -> str:
    """The README's ``metrics_app.py`` block (tests/test_docs.py runs every block too)."""
    [block] = [b for b in readme.blocks() if b.filename == "metrics_app.py"]
    return block.code


def test_readme_example_runs() -> None:
    """SPEC 7.3: the README's metrics example streams and serves /metrics as shown."""
    namespace: dict[str, Any] = {}
    exec(compile(readme_example(), "README.rst", "exec"), namespace)
    app = namespace["app"]
    mw = app.app
    assert isinstance(mw, LiveMiddleware)
    try:
        started = open_stream(app, "/ticks")
        assert next(chunks(started)) == b"tick 0\n"
        started.close()  # the client leaves: stream.wait returns True
        assert mw.wait_idle(WAIT)
        m = Samples(webtest_app(app).get("/metrics").text)
        assert m("live_wsgi_client_disconnects_total") == 1
        assert m("live_wsgi_streams_closed_total", outcome="disconnected") == 1
    finally:
        metrics.uninstall(REGISTRY)
        mw.shutdown(timeout=WAIT)


# -- gunicorn, several workers ------------------------------------------------------------

APP = "tests.apps.metrics_app:app"
CONFIG = "python:tests.apps.metrics_conf"


def http_scrape(server: Server) -> Samples:
    response = server.get("/metrics", headers={"Connection": "close"})
    try:
        assert response.status == 200
        return Samples(response.read_all().decode())
    finally:
        response.close()


def pid_of(server: Server, path: str = "/pid") -> int:
    response = server.get(path, headers={"Connection": "close"})
    try:
        return int(response.read_all())
    finally:
        response.close()


def test_gunicorn_workers_are_counted_in_one_scrape(tmp_path: Path) -> None:
    """SPEC 8.1, 7.3: under gunicorn -w 2 (PROMETHEUS_MULTIPROC_DIR), one scrape counts
    the streams, pool threads and bytes of both workers."""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    # Two connections at most per worker: of three held streams, each worker
    # gets at least one, and a scrape still finds a worker that accepts.
    with gunicorn(APP, "--workers", "2", "--worker-connections", "2", "--keep-alive", "0",
                  "--config", CONFIG, env=env) as server:
        held = [server.get("/hold") for _ in range(3)]
        bodies = [response.read_until(b"\n") for response in held]
        pids = {int(body) for body in bodies}
        assert len(pids) == 2, f"both workers serve: {bodies}"
        m = eventually(
            lambda: http_scrape(server),
            lambda m: m("live_wsgi_pool_threads_busy") == 3,
            "three busy pool threads over both workers",
        )
        assert m("live_wsgi_streams_open") == 3
        assert m("live_wsgi_streams_started_total") == 3
        assert m("live_wsgi_pool_threads_max") == 16  # 8 per worker
        for response in held:
            response.close()
        m = eventually(
            lambda: http_scrape(server),
            lambda m: m("live_wsgi_client_disconnects_total") == 3
            and m("live_wsgi_streams_closed_total", outcome="disconnected") == 3
            and m("live_wsgi_pool_threads_busy") == 0,
            "three disconnects and idle pools",
        )
        assert m("live_wsgi_streams_open") == 0
        served = [pid_of(server) for _ in range(2)]
        m = eventually(
            lambda: http_scrape(server),
            lambda m: m("live_wsgi_streams_closed_total", outcome="complete") == 2,
            "two complete streams",
        )
        lines = [*bodies, *(f"{pid}\n".encode() for pid in served)]
        assert m("live_wsgi_sent_bytes_total") == sum(len(line) for line in lines)
        assert m("live_wsgi_stream_duration_seconds_count") == 5
        assert m("live_wsgi_time_to_commit_seconds_count") == 5
        assert m("live_wsgi_streams_started_total") == 5


def test_child_exit_forgets_a_dead_workers_gauges(tmp_path: Path) -> None:
    """SPEC 8.1: the config's child_exit drops a recycled worker's gauges, so the
    live-summed gauges count live workers only."""

    def from_files() -> Samples:
        reg = CollectorRegistry()
        MultiProcessCollector(reg, path=str(tmp_path))
        return Samples(generate_latest(reg).decode())

    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    with gunicorn(APP, "--max-requests", "3", "--config", CONFIG, env=env) as server:
        dead = pid_of(server)
        assert pid_of(server) == dead
        assert (tmp_path / f"gauge_livesum_{dead}.db").exists()
        assert pid_of(server) == dead  # its third request: the worker recycles
        deadline = time.monotonic() + WAIT
        while (tmp_path / f"gauge_livesum_{dead}.db").exists():
            assert time.monotonic() < deadline, "the dead worker's gauges stayed"
            threading.Event().wait(0.02)
        assert pid_of(server) != dead
        m = eventually(from_files, lambda m: m("live_wsgi_pool_threads_max") == 8,
                       "the new worker's pool sampled")
        assert m("live_wsgi_streams_started_total") == 4  # counters keep the dead's
