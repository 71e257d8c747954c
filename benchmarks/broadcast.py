"""Broadcast: what a publish costs, what a held fan-out stream costs, how soon an event arrives.

    python -m benchmarks.broadcast [--quick] [--broker URL] [--only B1,B2,B3]

- **B1** publishes a second from one thread of this process, to the broker of
  ``--broker`` (``memory://`` by default; a ``redis://`` URL measures the round
  trip to that server), one channel, a 100-byte JSON payload.
- **B2** N fan-out SSE streams held on one gthread worker (``broker.sse_app``,
  one channel, an event a second published by this process through the
  worker): every event delivered, the worker's RSS and threads per stream,
  against N plain generator SSE streams (M5's plain app) in the same run.
- **B3** delivery latency from ``broker.publish`` in the worker to the bytes
  arriving here, p50 and p99, at a bounded rate over several channels: fan-out
  streams, and the same events from producer code (``broker.subscribe`` on a
  live worker), in the same run, on the same server.

The worker's broker comes from ``LIVE_WSGI_BROKER`` (``--broker`` sets it), so
a Redis URL takes B2 and B3 through Redis as well. Every phase is bounded in
time; figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from live_wsgi.broadcast import broker_from_url

from . import client
from .apps import BROADCAST_APP
from .held_streams import Held, held_streams, raise_fd_limit, server_args
from .server import gunicorn, proc_status, worker_pid


@dataclass(frozen=True)
class Settings:
    b1_seconds: float
    b2_streams: int
    b2_events: int
    b3_channels: int
    b3_subscribers: int  # per channel
    b3_count: int  # events published in all
    b3_rate: float  # events a second


# B2 holds as many streams as M5, for as long, so M5's plain figure can stand in.
FULL = Settings(b1_seconds=5, b2_streams=1000, b2_events=30, b3_channels=8, b3_subscribers=8,
                b3_count=2000, b3_rate=100)
QUICK = Settings(b1_seconds=1, b2_streams=200, b2_events=5, b3_channels=4, b3_subscribers=8,
                 b3_count=300, b3_rate=100)
#: About what the demo's chat publishes.
PAYLOAD = {"name": "ann", "text": "x" * 64, "time": "12:00:00"}
#: B2's targets, against the plain generator stream.
RSS_LIMIT = 1.1
THREADS_LIMIT = 1.0


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


def fan_out_server_args(streams: int) -> list[str]:
    """M5's gthread settings, plus room for the publishing requests: gthread
    accepts no connection past ``--worker-connections`` (default 1000), so
    with 1,000 streams held the publisher would wait forever."""
    return [*server_args("gthread", streams), "--worker-connections", str(streams + 100)]


# -- B1: publishes a second -----------------------------------------------------------


def publish_rate(url: str, seconds: float) -> float:
    """Publishes a second from this thread to the broker at ``url``."""
    broker = broker_from_url(url)
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


def held_fan_out(streams: int, events: int, interval: float = 1.0) -> Held:
    """``streams`` fan-out streams of one channel on one gthread worker, while
    this process publishes ``events`` events, one per ``interval``, through it."""
    raise_fd_limit(streams)
    with gunicorn(BROADCAST_APP, *fan_out_server_args(streams)) as (proc, port):
        pid = worker_pid(proc.pid)
        # Every stream resumes from this id, so none misses an event however
        # late it subscribes (the page-render pattern of current_id).
        start = client.get_text(port, "/publish/held?data=start")
        baseline = proc_status(pid)
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
                held = proc_status(pid)
                seconds = time.monotonic() - started
            finally:
                for sock in socks:
                    sock.close()
        finally:
            stop.set()
            publisher.join()
    return Held(
        app="fan-out", worker="gthread", streams=streams, events=events,
        delivered=sum(1 for n in counts if n >= events),
        rss_per_stream=(held["VmRSS"] - baseline["VmRSS"]) * 1024 / streams,
        threads_per_stream=(held["Threads"] - baseline["Threads"]) / streams,
        seconds=seconds,
    )


# -- B3: delivery latency -------------------------------------------------------------


def delivery_latency(port: int, route: str, settings: Settings) -> tuple[list[float], bool]:
    """Latencies (s) of every delivery on ``route`` (``/events/`` or
    ``/live-events/``) under B3's load, and whether every stream got every event."""
    channels, count = settings.b3_channels, settings.b3_count
    paths, expected = [], []
    for channel in range(channels):
        share = count // channels + (1 if channel < count % channels else 0)
        for _ in range(settings.b3_subscribers):
            paths.append(f"{route}load-{channel}")
            expected.append(share)
    load = f"/publish-load?channels={channels}&count={count}&rate={settings.b3_rate:g}"
    latencies, counts = client.delivery(port, paths, expected, load,
                                        count / settings.b3_rate + 30)
    return latencies, counts == expected


# -- all of it ------------------------------------------------------------------------------


def run(settings: Settings, wanted: set[str], broker: str,
        plain: Held | None = None) -> list[Figure]:
    """The broadcast figures; ``plain`` is M5's plain result when it ran with B2's load."""
    os.environ["LIVE_WSGI_BROKER"] = broker  # for the servers this starts
    figures = []
    if "B1" in wanted:
        log(f"B1: publishing for {settings.b1_seconds:g} s from one thread to {broker}")
        rate = publish_rate(broker, settings.b1_seconds)
        figures += [Figure("B1 publishes/s, one thread", rate, "/s"),
                    Figure("B1 µs per publish", 1e6 / rate, "µs")]
    if "B2" in wanted:
        streams, events = settings.b2_streams, settings.b2_events
        if plain is None or (plain.streams, plain.events) != (streams, events):
            log(f"B2 plain: {streams} generator streams x {events} events, 1/s")
            plain = held_streams("plain", streams, events)
        log(f"B2 fan-out: {streams} fan-out streams x {events} events, 1/s")
        fan = held_fan_out(streams, events)
        figures += [
            Figure("B2 all delivered (1=yes)", float(fan.all_delivered), "", "plain",
                   float(plain.all_delivered)),
            Figure("B2 RSS/stream KB", fan.rss_per_stream / 1000, "KB", "plain",
                   plain.rss_per_stream / 1000, RSS_LIMIT),
            Figure("B2 threads/stream", fan.threads_per_stream, "", "plain",
                   plain.threads_per_stream, THREADS_LIMIT, absolute=True),
        ]
    if "B3" in wanted:
        streams = settings.b3_channels * settings.b3_subscribers
        log(f"B3: {settings.b3_count} events at {settings.b3_rate:g}/s over "
            f"{settings.b3_channels} channels x {settings.b3_subscribers} subscribers, "
            f"fan-out then producer code")
        with gunicorn(BROADCAST_APP, *fan_out_server_args(streams)) as (_, port):
            fans, fan_all = delivery_latency(port, "/events/", settings)
            live, live_all = delivery_latency(port, "/live-events/", settings)
        for label, index in (("p50", 49), ("p99", 98)):
            figures.append(Figure(
                f"B3 latency {label} ms", statistics.quantiles(fans, n=100)[index] * 1000, "ms",
                "producer", statistics.quantiles(live, n=100)[index] * 1000))
        figures.append(Figure("B3 all delivered (1=yes)", float(fan_all), "", "producer",
                              float(live_all)))
    return figures


def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def report(figures: list[Figure], broker: str) -> Iterator[str]:
    head = f"{'broadcast (' + broker + ')':<32} {'fan-out':>10} | {'against':>20} | ratio"
    yield head
    yield "-" * len(head)
    for figure in figures:
        against = "" if figure.base is None else f"{figure.against} {fmt(figure.base)}"
        ratio = "" if figure.ratio is None else f"{figure.ratio:.2f}x"
        line = f"{figure.label:<32} {fmt(figure.value):>10} | {against:>20} | {ratio:>5}"
        verdict = figure.verdict()
        yield f"{line}  {verdict}" if verdict else line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller loads")
    parser.add_argument("--broker", default="memory://",
                        help="broker URL for B1 and the servers (default memory://)")
    parser.add_argument("--only", default="B1,B2,B3", help="figures to measure, e.g. B1,B3")
    args = parser.parse_args()
    wanted = {part.strip().upper() for part in args.only.split(",")}
    if wanted - {"B1", "B2", "B3"}:
        parser.error("choose among B1, B2, B3")
    started = time.monotonic()
    figures = run(QUICK if args.quick else FULL, wanted, args.broker)
    print()
    for line in report(figures, args.broker):
        print(line)
    print(f"\n{len(figures)} figures in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
