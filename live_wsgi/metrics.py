"""Prometheus metrics for live streams: ``install()`` and a ``/metrics`` app.

Use it to put live streams on a dashboard: how many are open, how busy the
pool is, how many requests were refused, how streams end, bytes sent, how
long streams last and how long apps take to commit. It needs the
``metrics`` extra (``prometheus_client``)::

    from live_wsgi import metrics

    metrics.install()
    metrics_app = metrics.make_wsgi_app()   # serve it at /metrics

Do not use it to follow single requests: no metric carries a path or a
method (unbounded label values would swamp Prometheus). Connect to
``live_wsgi.signals`` for per-request facts instead.

Under gunicorn with several workers set ``PROMETHEUS_MULTIPROC_DIR`` and
``child_exit`` (below): one scrape then reports the streams of every worker.

design: counters, histograms and the open-streams gauge are fed by the
signals of ``live_wsgi.signals``, which are only sent while somebody
listens: until ``install()`` the request path pays nothing. The pool gauges
are never updated per request either: a collector reads every middleware's
pool when Prometheus scrapes. In multi-process mode a scrape reaches one
worker, which cannot see the other workers' pools, so each worker samples
its own every ``sample_interval`` seconds (from its first live request on)
into gauges that prometheus_client sums over the live workers
(``multiprocess_mode="livesum"``).

Refusals (the 503s and EventSource turn-aways of ``LiveMiddleware``) come
from the ``stream_refused`` signal.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

try:
    import prometheus_client  # noqa: F401
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError(
        "live_wsgi.metrics needs prometheus_client: pip install 'live_wsgi[metrics]'"
    ) from exc

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
)
from prometheus_client import make_wsgi_app as _prometheus_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import signals
from .middleware import instances
from .pool import LivePool

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication, WSGIEnvironment

__all__ = [
    "DURATION_BUCKETS",
    "SAMPLE_INTERVAL",
    "LiveMetrics",
    "PoolCollector",
    "child_exit",
    "install",
    "installed",
    "make_wsgi_app",
    "multiprocess_mode",
    "pool_counts",
    "uninstall",
]

log = logging.getLogger("live_wsgi")

#: Stream durations run from milliseconds (a short export) to hours (an
#: event stream a browser tab keeps open): the default buckets stop at 10 s.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0,
                    1800.0, 3600.0, 4 * 3600.0, float("inf"))  # fmt: skip

#: Seconds between two samples of the pool gauges in multi-process mode: a
#: scrape every 15 s (Prometheus' default) sees values at most this old.
SAMPLE_INTERVAL = 1.0

# Per-request marks the receivers keep in the request's environ (so they go
# with it): when the job started on its worker, and whether this response
# counts in the open-streams gauge (True) or ended before its commit was
# seen (False).
_STARTED_AT = "live_wsgi.metrics.started_at"
_OPEN = "live_wsgi.metrics.open"

_lock = threading.Lock()  # guards _installed and the patch of LiveMiddleware
_installed: LiveMetrics | None = None


def multiprocess_mode() -> bool:
    """True when prometheus_client runs in multi-process mode (its own test)."""
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ or "prometheus_multiproc_dir" in os.environ


class LiveMetrics:
    """The metrics of every ``LiveMiddleware`` in this process.

    Make it with ``install()``, which connects it to the signals; this class
    only holds the metrics and the receivers.

    :param registry: where the metrics are registered.
    :param sample_interval: multi-process mode only: seconds between two
        samples of the pool gauges.
    """

    def __init__(self, registry: CollectorRegistry, sample_interval: float) -> None:
        self.registry = registry
        self.multiprocess = multiprocess_mode()
        self.streams_started = Counter(
            "live_wsgi_streams_started",
            "Live requests whose app started on a pool thread.",
            registry=None,
        )
        self.streams_open = Gauge(
            "live_wsgi_streams_open",
            "Live responses being sent now: committed, their body not ended yet.",
            registry=None,
            multiprocess_mode="livesum",
        )
        self.streams_closed = Counter(
            "live_wsgi_streams_closed",
            "Live response bodies that ended, by outcome: complete, cut (ended "
            "incomplete after an error) or disconnected (the client went away).",
            ["outcome"],
            registry=None,
        )
        self.client_disconnects = Counter(
            "live_wsgi_client_disconnects",
            "Clients that went away before their live response ended.",
            registry=None,
        )
        self.stream_errors = Counter(
            "live_wsgi_stream_errors",
            "Errors the app raised after the commit (the body was cut), by exception class.",
            ["exception"],
            registry=None,
        )
        self.refused = Counter(
            "live_wsgi_refused",
            "Live requests turned away without running, by answer (503, or retry: an "
            "EventSource told when to come back) and reason (busy: no pool thread in "
            "time; shutdown).",
            ["answer", "reason"],
            registry=None,
        )
        self.sent_bytes = Counter(
            "live_wsgi_sent_bytes",
            "Body bytes live responses handed to the server, counted when each body ends.",
            registry=None,
        )
        self.stream_duration = Histogram(
            "live_wsgi_stream_duration_seconds",
            "Seconds from the request reaching the middleware to the end of its body.",
            registry=None,
            buckets=DURATION_BUCKETS,
        )
        self.time_to_commit = Histogram(
            "live_wsgi_time_to_commit_seconds",
            "Seconds from the app's start on its pool thread to the commit (status and "
            "headers handed to the server); the wait for a pool thread is not included.",
            registry=None,
        )
        # Every outcome and refusal shows from the start, at 0.
        for outcome in ("complete", "cut", "disconnected"):
            self.streams_closed.labels(outcome)
        for answer in ("503", "retry"):
            for reason in ("busy", "shutdown"):
                self.refused.labels(answer, reason)
        self._metrics: list[Collector] = [
            self.streams_started, self.streams_open, self.streams_closed,
            self.client_disconnects, self.stream_errors, self.refused, self.sent_bytes,
            self.stream_duration, self.time_to_commit,
        ]  # fmt: skip
        # Guards the _OPEN marks: the commit is signalled on the worker, the
        # end of the body on the server thread, and the server thread may be
        # first (it runs as soon as the commit latch opens).
        self._open_lock = threading.Lock()
        self._sampler: _PoolSampler | None = None
        if self.multiprocess:
            self._sampler = _PoolSampler(sample_interval)
            self._metrics += self._sampler.gauges.values()
        else:
            self._metrics.append(PoolCollector())
        self._receivers: list[tuple[Any, Callable[..., None]]] = [
            (signals.stream_started, self._on_started),
            (signals.stream_committed, self._on_committed),
            (signals.stream_closed, self._on_closed),
            (signals.client_disconnected, self._on_disconnected),
            (signals.stream_error, self._on_error),
            (signals.stream_refused, self._on_refused),
        ]

    # -- lifecycle (install() and uninstall() call these under _lock) -------

    def _connect(self) -> None:
        registered: list[Collector] = []
        try:
            for metric in self._metrics:
                self.registry.register(metric)
                registered.append(metric)
        except BaseException:  # a name taken already: leave the registry as it was
            for metric in registered:
                self.registry.unregister(metric)
            raise
        for signal, receiver in self._receivers:
            signal.connect(receiver, weak=False)

    def _disconnect(self) -> None:
        for signal, receiver in self._receivers:
            signal.disconnect(receiver)
        if self._sampler is not None:
            self._sampler.stop()
        for metric in self._metrics:
            self.registry.unregister(metric)

    def uninstall(self) -> None:
        """Disconnect from the signals and unregister the metrics."""
        uninstall(self.registry)

    # -- receivers -------------------------------------------------------------

    def _on_started(self, sender: Any, *, environ: WSGIEnvironment, **facts: Any) -> None:
        environ[_STARTED_AT] = time.monotonic()
        self.streams_started.inc()
        if self._sampler is not None:
            # Sampling starts in each process at its first live request, never
            # in one that may still fork (a gunicorn master with --preload): a
            # thread holding a lock at the fork would leave it locked in the child.
            self._sampler.ensure_running()

    def _on_committed(self, sender: Any, *, environ: WSGIEnvironment, **facts: Any) -> None:
        started = environ.get(_STARTED_AT)
        if started is not None:
            self.time_to_commit.observe(time.monotonic() - started)
        with self._open_lock:
            if _OPEN in environ:  # the body ended first: it was never open
                return
            environ[_OPEN] = True
        self.streams_open.inc()

    def _on_closed(
        self,
        sender: Any,
        *,
        environ: WSGIEnvironment,
        outcome: str,
        bytes_sent: int,
        duration: float,
        **facts: Any,
    ) -> None:
        with self._open_lock:
            was_open = environ.get(_OPEN, False)
            environ[_OPEN] = False
        if was_open:
            self.streams_open.dec()
        self.streams_closed.labels(outcome).inc()
        self.sent_bytes.inc(bytes_sent)
        self.stream_duration.observe(duration)

    def _on_disconnected(self, sender: Any, **facts: Any) -> None:
        self.client_disconnects.inc()

    def _on_error(self, sender: Any, *, error: BaseException, **facts: Any) -> None:
        self.stream_errors.labels(type(error).__name__).inc()

    def _on_refused(self, sender: Any, *, answer: str, reason: str, **facts: Any) -> None:
        self.refused.labels(answer, reason).inc()


# -- the pool gauges -----------------------------------------------------------

_POOL_HELP = {
    "live_wsgi_pool_threads_busy": "Pool threads running a live request now.",
    "live_wsgi_pool_threads_max": "Pool threads the live middlewares may start at most.",
    "live_wsgi_pool_queued": "Live requests waiting for a pool thread now.",
}


def pool_counts() -> dict[str, int]:
    """Busy threads, their maximum and requests waiting, over every live
    middleware of this process that runs on its own ``LivePool``."""
    busy = most = queued = 0
    for middleware in list(instances):
        pool = middleware.executor
        if not isinstance(pool, LivePool):
            continue  # a custom Executor: nothing to read
        counts = pool.counts()
        busy += counts.busy
        queued += counts.queued
        if not middleware.closing:
            most += pool.max_workers
    return {
        "live_wsgi_pool_threads_busy": busy,
        "live_wsgi_pool_threads_max": most,
        "live_wsgi_pool_queued": queued,
    }


class PoolCollector(Collector):
    """The pool gauges, read at scrape time (one process)."""

    def collect(self) -> Iterable[Metric]:
        for name, value in pool_counts().items():
            yield GaugeMetricFamily(name, _POOL_HELP[name], value=value)

    def describe(self) -> Iterable[Metric]:
        for name, text in _POOL_HELP.items():
            yield GaugeMetricFamily(name, text)


class _PoolSampler:
    """Multi-process mode: sample this process's pools into livesum gauges."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.gauges = {
            name: Gauge(name, text, registry=None, multiprocess_mode="livesum")
            for name, text in _POOL_HELP.items()
        }
        self._lock = threading.Lock()
        # The process whose thread samples (after a fork the parent's thread
        # is gone), and whether uninstall() stopped sampling for good.
        self._pid = 0
        self._stopped = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def ensure_running(self) -> None:
        """Start the sampling thread, unless it runs in this process already."""
        pid = os.getpid()
        if self._pid == pid:
            return
        with self._lock:
            if self._pid == pid or self._stopped:
                return
            self._pid = pid
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(self._stop,), name="live_wsgi-metrics", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._stop.set()
            thread, self._thread = self._thread, None
            ours = self._pid == os.getpid()
        if thread is not None and ours:
            thread.join(5.0)

    def sample(self) -> None:
        for name, value in pool_counts().items():
            self.gauges[name].set(value)

    def _run(self, stop: threading.Event) -> None:
        while True:
            try:
                self.sample()
            except Exception:
                log.exception("live_wsgi: sampling the pool gauges failed")
            if stop.wait(self.interval):
                return


# -- install ---------------------------------------------------------------------

def install(
    registry: CollectorRegistry | None = None, *, sample_interval: float = SAMPLE_INTERVAL
) -> LiveMetrics:
    """Register the live_wsgi metrics and connect them to the signals.

    Idempotent: a second call with the same registry returns the same
    ``LiveMetrics``. One installation per process: another registry raises
    ``ValueError`` until ``uninstall()``.

    :param registry: default ``prometheus_client.REGISTRY``.
    :param sample_interval: multi-process mode only: seconds between two
        samples of the pool gauges in each worker.
    """
    global _installed
    if registry is None:
        registry = REGISTRY
    if (isinstance(sample_interval, bool) or not isinstance(sample_interval, (int, float))
            or not 0 < sample_interval <= threading.TIMEOUT_MAX):
        raise ValueError(f"sample_interval must be a number of seconds > 0, "
                         f"not {sample_interval!r}")
    with _lock:
        if _installed is not None:
            if _installed.registry is registry:
                return _installed
            raise ValueError(
                "live_wsgi metrics are installed on another registry already: "
                "uninstall() them first"
            )
        metrics = LiveMetrics(registry, float(sample_interval))
        metrics._connect()  # all or nothing
        _installed = metrics
        return metrics


def uninstall(registry: CollectorRegistry | None = None) -> bool:
    """Disconnect the metrics from the signals and unregister them.

    ``registry``, when given, must be the one they were installed on.
    Returns False when nothing was installed.
    """
    global _installed
    with _lock:
        metrics = _installed
        if metrics is None:
            return False
        if registry is not None and registry is not metrics.registry:
            raise ValueError("live_wsgi metrics are installed on another registry")
        _installed = None
        metrics._disconnect()
        return True


def installed() -> LiveMetrics | None:
    """The metrics installed in this process, if any."""
    return _installed


def make_wsgi_app(registry: CollectorRegistry | None = None) -> WSGIApplication:
    """A WSGI app that serves the metrics in Prometheus' text format.

    In multi-process mode it reports every worker's metrics (prometheus_client's
    ``MultiProcessCollector`` reads them from ``PROMETHEUS_MULTIPROC_DIR``);
    otherwise those of ``registry`` (default ``prometheus_client.REGISTRY``).
    Mount it where no ``LiveMiddleware`` routes it live.
    """
    if registry is None:
        if multiprocess_mode():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        else:
            registry = REGISTRY
    app: WSGIApplication = _prometheus_wsgi_app(registry)
    return app


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn hook (multi-process mode): forget a dead worker's live gauges.

    In your gunicorn config: ``from live_wsgi.metrics import child_exit``.
    """
    if multiprocess_mode():
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]

