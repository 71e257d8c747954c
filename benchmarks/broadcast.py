"""Broadcast: what a publish costs, what a held fan-out stream costs, how soon an event arrives.

    python -m benchmarks.broadcast [--quick] [--broker URL ...] [--only B1,B2,B3]

Each figure is measured for every ``--broker`` given (``memory://`` when none
is): ``memory://``, a ``redis://`` URL, or ``redis-server``, which starts a
Redis of the run's own (Debian's ``redis-server``, ``make redis`` installs it)
on a free loopback port and stops it by its PID afterwards.

- **B1** publishes a second from one thread of this process to the broker,
  one channel, a 100-byte JSON payload (with Redis: a round trip each).
- **B2** N fan-out SSE streams of one channel (``broker.sse_app``), an event a
  second published by this process through the server: every event
  delivered, the workers' RSS and threads per stream, against N plain
  generator SSE streams (M5's plain app) in the same run. On one gthread
  worker with ``memory://``; spread over two workers with Redis.
- **B3** delivery latency from the publish to the bytes arriving here, p50 and
  p99, at 1,000 publishes a second over 200 channels, one subscriber each:
  fan-out streams, then the same load from producer code (``broker.subscribe``
  on a live worker), in the same run, on the same server. With ``memory://``
  the worker publishes (the in-process broker reaches no other process); with
  Redis the publisher is a process of its own (``benchmarks.publisher``) and
  the server has two workers: every event goes publisher -> Redis -> worker ->
  this process.

Then, with more than one broker, each one's figures against the first's.

The workers' broker comes from ``LIVE_WSGI_BROKER`` (set here for each broker),
with Redis under a key prefix of the run's own. Every phase is bounded in
time; figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tests.redisserver import RedisServer

from . import client
from .apps import BROADCAST_APP
from .held_streams import Held, held_streams, raise_fd_limit, server_args
from .publisher import PREFIX_ENV, broker_for
from .server import ROOT, gunicorn, proc_status


@dataclass(frozen=True)
class Settings:
    b1_seconds: float
    b2_streams: int
    b2_events: int
    b3_channels: int
    b3_subscribers: int  # per channel
    b3_seconds: float  # of publishing
    b3_rate: float  # events a second, over all channels

    @property
    def b3_count(self) -> int:
        return round(self.b3_rate * self.b3_seconds)


# B2 holds as many streams as M5, for as long, so M5's plain figure can stand in.
FULL = Settings(b1_seconds=5, b2_streams=1000, b2_events=30, b3_channels=200, b3_subscribers=1,
                b3_seconds=5, b3_rate=1000)
QUICK = Settings(b1_seconds=1, b2_streams=200, b2_events=3, b3_channels=200, b3_subscribers=1,
                 b3_seconds=1, b3_rate=1000)
#: About what the demo's chat publishes.
PAYLOAD = {"name": "ann", "text": "x" * 64, "time": "12:00:00"}
#: B2's targets, against the plain generator stream.
RSS_LIMIT = 1.1
THREADS_LIMIT = 1.0
#: ``--broker`` for a Redis this run starts itself.
OWN_REDIS = "redis-server"
#: Workers of a server whose broker is shared (Redis): the streams and the
#: publisher span processes. The in-process broker serves one worker.
SHARED_WORKERS = 2


@dataclass(frozen=True)
class Backend:
    """A broker under measurement: ``label`` for the tables, ``url`` for the servers."""

    label: str
    url: str

    @property
    def shared(self) -> bool:
        """Several processes share it (Redis), unlike ``memory://``."""
        return urlsplit(self.url).scheme != "memory"

    @property
    def workers(self) -> int:
        return SHARED_WORKERS if self.shared else 1


@dataclass
class Figure:
    """One broadcast figure, and what it is compared with in the same run."""

    label: str
    value: float
    unit: str = ""
    against: str = ""  # what ``base`` measured
    base: float | None = None
    limit: float | None = None  # a target for the ratio (at most)...
    absolute: bool = False  # ...or for the value itself

    @property
    def ratio(self) -> float | None:
        return None if not self.base else self.value / self.base

    def verdict(self) -> str:
        compared = self.value if self.absolute else self.ratio
        if self.limit is None or compared is None:
            return ""
        # To two decimals, as printed: the one thread that serves the
        # publishing requests is not a thread per stream.
        missed = round(compared, 2) > self.limit
        unit = "" if self.absolute else "x"
        return (f"target <= {self.limit:.2f}{unit} "
                + (f"MISSED by {(compared - self.limit) / self.limit:.1%}" if missed else "met"))


def log(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


# -- the brokers ------------------------------------------------------------------------


def _label(url: str) -> str:
    """``url`` without credentials."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


@contextmanager
def backends(specs: list[str]) -> Iterator[list[Backend]]:
    """The brokers of ``--broker``; ``redis-server`` starts a Redis of this run's
    own (tests/redisserver.py's, on a free loopback port), stopped by its PID
    when the run ends."""
    with ExitStack() as stack:
        made = []
        for spec in specs:
            if spec == OWN_REDIS:
                directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-redis"))
                server = RedisServer(Path(directory)).start()
                stack.callback(server.stop)
                made.append(Backend("redis-server (this run's)", server.url))
            else:
                made.append(Backend(_label(spec), spec))
        yield made


def fan_out_server_args(streams: int, workers: int = 1) -> list[str]:
    """M5's gthread settings, plus room for the publishing requests: gthread
    accepts no connection past ``--worker-connections`` (default 1000), so
    with 1,000 streams held the publisher would wait forever. Each worker may
    get every stream (the kernel picks the worker of each connection)."""
    return [*server_args("gthread", streams), "--worker-connections", str(streams + 100),
            "--workers", str(workers)]


def workers_ready(port: int, workers: int, timeout: float = 30.0) -> list[int]:
    """The PIDs of the server's ``workers`` workers once each has answered
    ``/pid`` (and so made its broker and started its reader): while one is
    still starting, the others take every connection."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < workers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only workers {sorted(seen)} of {workers} answered "
                               f"within {timeout:g} s")
        seen.add(int(client.get_text(port, "/pid")))
    return sorted(seen)


# -- B1: publishes a second -----------------------------------------------------------


def publish_rate(url: str, seconds: float) -> float:
    """Publishes a second from this thread to the broker at ``url``."""
    broker = broker_for(url)
    channel = f"bench-b1-{os.getpid()}"
    try:
        for _ in range(200):  # warm up (and connect)
            broker.publish(channel, PAYLOAD)
        count = 0
        started = time.perf_counter()
        deadline = started + seconds
        while True:
            for _ in range(100):
                broker.publish(channel, PAYLOAD)
            count += 100
            now = time.perf_counter()
            if now >= deadline:
                return count / (now - started)
    finally:
        broker.shutdown()


# -- B2: held fan-out streams ---------------------------------------------------------


def held_fan_out(streams: int, events: int, interval: float = 1.0, workers: int = 1) -> Held:
    """``streams`` fan-out streams of one channel on ``workers`` gthread
    workers, while this process publishes ``events`` events, one per
    ``interval``, through the server. RSS and threads are the workers' sum."""
    raise_fd_limit(streams)
    with gunicorn(BROADCAST_APP, *fan_out_server_args(streams, workers)) as (_, port):
        pids = workers_ready(port, workers)
        # Every stream resumes from this id, so none misses an event however
        # late it subscribes (the page-render pattern of current_id).
        start = client.get_text(port, "/publish/held?data=start")
        baseline = {pid: proc_status(pid) for pid in pids}
        stop = threading.Event()

        def publish() -> None:
            for n in range(events):
                if stop.wait(interval):
                    return
                client.get_text(port, f"/publish/held?data={n}")

        publisher = threading.Thread(target=publish, name="b2-publisher")
        started = time.monotonic()
        publisher.start()
        try:
            counts, socks = client.hold(port, f"/events/held?lastEventId={start}", streams,
                                        events, 60 + events * interval)
            try:
                held = {pid: proc_status(pid) for pid in pids}
                seconds = time.monotonic() - started
            finally:
                for sock in socks:
                    sock.close()
        finally:
            stop.set()
            publisher.join()
    grown = {pid: held[pid]["Threads"] - baseline[pid]["Threads"] for pid in pids}
    if workers > 1:
        log(f"B2: threads added per worker (about its streams): {grown}")
    return Held(
        app="fan-out", worker="gthread", streams=streams, events=events,
        delivered=sum(1 for n in counts if n >= events),
        rss_per_stream=sum(held[pid]["VmRSS"] - baseline[pid]["VmRSS"] for pid in pids)
        * 1024 / streams,
        threads_per_stream=sum(grown.values()) / streams,
        seconds=seconds,
    )


# -- B3: delivery latency -------------------------------------------------------------

#: Starts B3's load on channels ``<name>-0`` ...; returns what waits for it to end.
Load = Callable[[str], Callable[[], None]]


def load_in_worker(port: int, settings: Settings) -> Load:
    """The load published by a worker of the server (``/publish-load``)."""

    def start(name: str) -> Callable[[], None]:
        sock = client.send(port, f"/publish-load?name={name}&channels={settings.b3_channels}"
                                 f"&count={settings.b3_count}&rate={settings.b3_rate:g}")
        return sock.close

    return start


def load_in_process(settings: Settings) -> Load:
    """The load published by a process of its own (``benchmarks.publisher``)."""

    def start(name: str) -> Callable[[], None]:
        argv = [sys.executable, "-m", "benchmarks.publisher", name,
                str(settings.b3_channels), str(settings.b3_count), f"{settings.b3_rate:g}"]
        proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})

        def wait() -> None:  # it ends by itself once it has published everything
            try:
                proc.wait(client.TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()  # our own child, by its PID
                proc.wait()

        return wait

    return start


def delivery_latency(port: int, route: str, name: str, settings: Settings,
                     load: Load) -> tuple[list[float], bool]:
    """Latencies (s) of every delivery on ``route`` (``/events/`` or
    ``/live-events/``) of channels ``name-0`` ... under B3's load, and whether
    every stream got every event."""
    channels, count = settings.b3_channels, settings.b3_count
    paths, expected = [], []
    for channel in range(channels):
        share = count // channels + (1 if channel < count % channels else 0)
        for _ in range(settings.b3_subscribers):
            paths.append(f"{route}{name}-{channel}")
            expected.append(share)
    latencies, counts = client.delivery(port, paths, expected, lambda: load(name),
                                        settings.b3_seconds + 30)
    return latencies, counts == expected


def latency_figures(settings: Settings, backend: Backend) -> list[Figure]:
    streams = settings.b3_channels * settings.b3_subscribers
    where = "a publisher process" if backend.shared else "the worker"
    log(f"B3: {settings.b3_count} events at {settings.b3_rate:g}/s over "
        f"{settings.b3_channels} channels x {settings.b3_subscribers} subscribers, "
        f"published by {where}, {backend.workers} worker(s); fan-out then producer code")
    with gunicorn(BROADCAST_APP, *fan_out_server_args(streams, backend.workers)) as (_, port):
        workers_ready(port, backend.workers)
        load = load_in_process(settings) if backend.shared else load_in_worker(port, settings)
        # Channels of their own per phase: fan-out streams whose hang-up the
        # server has not noticed yet get none of the producer phase's events.
        fans, fan_all = delivery_latency(port, "/events/", "fan", settings, load)
        live, live_all = delivery_latency(port, "/live-events/", "producer", settings, load)
    figures = []
    for label, index in (("p50", 49), ("p99", 98)):
        figures.append(Figure(
            f"B3 latency {label} ms", statistics.quantiles(fans, n=100)[index] * 1000, "ms",
            "producer", statistics.quantiles(live, n=100)[index] * 1000))
    figures.append(Figure("B3 all delivered (1=yes)", float(fan_all), "", "producer",
                          float(live_all)))
    return figures


# -- all of it ------------------------------------------------------------------------------


def run(settings: Settings, wanted: set[str], backend: Backend,
        plain: Held | None = None) -> list[Figure]:
    """The broadcast figures of one broker; ``plain`` is B2's plain generator
    streams (measured here when missing or of another load)."""
    os.environ["LIVE_WSGI_BROKER"] = backend.url  # for the servers this starts
    os.environ.setdefault(PREFIX_ENV, f"bench{os.getpid()}-{time.time():.0f}:")
    figures: list[Figure] = []
    if "B1" in wanted:
        log(f"B1: publishing for {settings.b1_seconds:g} s from one thread to {backend.label}")
        rate = publish_rate(backend.url, settings.b1_seconds)
        figures += [Figure("B1 publishes/s, one thread", rate, "/s"),
                    Figure("B1 µs per publish", 1e6 / rate, "µs")]
    if "B2" in wanted:
        streams, events = settings.b2_streams, settings.b2_events
        plain = plain_streams(settings, plain)
        log(f"B2 fan-out: {streams} fan-out streams over {backend.workers} worker(s) "
            f"x {events} events, 1/s")
        fan = held_fan_out(streams, events, workers=backend.workers)
        figures += [
            Figure("B2 all delivered (1=yes)", float(fan.all_delivered), "", "plain",
                   float(plain.all_delivered)),
            Figure("B2 RSS/stream KB", fan.rss_per_stream / 1000, "KB", "plain",
                   plain.rss_per_stream / 1000, RSS_LIMIT),
            Figure("B2 threads/stream", fan.threads_per_stream, "", "plain",
                   plain.threads_per_stream, THREADS_LIMIT, absolute=True),
        ]
    if "B3" in wanted:
        figures += latency_figures(settings, backend)
    return figures


def plain_streams(settings: Settings, plain: Held | None) -> Held:
    """``plain`` when it held B2's load (M5 ran in this invocation), else measured now."""
    streams, events = settings.b2_streams, settings.b2_events
    if plain is not None and (plain.streams, plain.events) == (streams, events):
        return plain
    log(f"B2 plain: {streams} generator streams x {events} events, 1/s")
    return held_streams("plain", streams, events)


def run_all(settings: Settings, wanted: set[str], chosen: list[Backend],
            plain: Held | None = None) -> dict[str, list[Figure]]:
    """``run`` for each broker; B2's plain streams are measured at most once."""
    if "B2" in wanted:
        plain = plain_streams(settings, plain)
    return {backend.label: run(settings, wanted, backend, plain) for backend in chosen}


def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def describe(backend: Backend) -> str:
    workers = f"{backend.workers} worker{'s' if backend.workers > 1 else ''}"
    publisher = "a publisher process" if backend.shared else "the worker"
    return f"{backend.label}; B2, B3 on {workers}; B3 published by {publisher}"


def report(figures: list[Figure], backend: Backend) -> Iterator[str]:
    yield f"broadcast ({describe(backend)})"
    head = f"{'':<32} {'fan-out':>10} | {'against':>20} | ratio"
    yield head
    yield "-" * len(head)
    for figure in figures:
        against = "" if figure.base is None else f"{figure.against} {fmt(figure.base)}"
        ratio = "" if figure.ratio is None else f"{figure.ratio:.2f}x"
        line = f"{figure.label:<32} {fmt(figure.value):>10} | {against:>20} | {ratio:>5}"
        verdict = figure.verdict()
        yield f"{line}  {verdict}" if verdict else line


def compare(results: dict[str, list[Figure]]) -> Iterator[str]:
    """Every broker's figures against the first broker's, from the same run."""
    (first, reference), *others = results.items()
    for label, figures in others:
        by_label = {figure.label: figure for figure in reference}
        yield f"{label} against {first}, same run"
        head = f"{'':<32} {'value':>10} {'against':>12} | ratio"
        yield head
        yield "-" * len(head)
        for figure in figures:
            base = by_label.get(figure.label)
            if base is None:
                continue
            ratio = f"{figure.value / base.value:.2f}x" if base.value else ""
            yield (f"{figure.label:<32} {fmt(figure.value):>10} {fmt(base.value):>12} "
                   f"| {ratio:>5}")


def print_results(results: dict[str, list[Figure]], chosen: list[Backend]) -> None:
    for backend in chosen:
        print()
        for line in report(results[backend.label], backend):
            print(line)
    if len(results) > 1:
        print()
        for line in compare(results):
            print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller loads")
    parser.add_argument("--broker", action="append", default=None,
                        help="a broker URL, or redis-server for a Redis of the run's own; "
                             "repeat for several (default memory://)")
    parser.add_argument("--only", default="B1,B2,B3", help="figures to measure, e.g. B1,B3")
    args = parser.parse_args()
    wanted = {part.strip().upper() for part in args.only.split(",")}
    if wanted - {"B1", "B2", "B3"}:
        parser.error("choose among B1, B2, B3")
    started = time.monotonic()
    with backends(args.broker or ["memory://"]) as chosen:
        results = run_all(QUICK if args.quick else FULL, wanted, chosen)
    print_results(results, chosen)
    count = sum(len(figures) for figures in results.values())
    print(f"\n{count} figures in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
