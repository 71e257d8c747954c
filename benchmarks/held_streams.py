"""M5: many concurrent SSE streams held open on one gunicorn worker.

    python -m benchmarks.held_streams --app live --streams 1000 --events 30
    python -m benchmarks.held_streams --app live --worker gevent --streams 2000

Starts a fresh gunicorn for the app, opens N streams from this (client)
process that each receive one event per ``--interval`` seconds, checks every
event arrives, reads the worker's RSS and thread count while they are held,
then hangs up. ``held_together`` holds them on several apps' servers in one
window (``make bench``'s M5). Bounded: every phase has a deadline. (That hanging up frees
every stream is asserted by the test suite, not measured here.)
"""

from __future__ import annotations

import argparse
import resource
import time
from dataclasses import dataclass

from .apps import APPS
from .client import hold_many
from .server import gunicorns, proc_status, worker_pid


@dataclass
class Held:
    app: str
    worker: str
    streams: int
    events: int
    delivered: int  # streams that got every event
    rss_per_stream: float  # bytes
    threads_per_stream: float
    seconds: float

    @property
    def all_delivered(self) -> bool:
        return self.delivered == self.streams


def server_args(worker: str, streams: int) -> list[str]:
    if worker == "gevent":
        return ["--worker-class", "gevent", "--worker-connections", str(streams + 100),
                "--timeout", "120"]
    return ["--worker-class", "gthread", "--threads", str(streams + 20), "--timeout", "120"]


def raise_fd_limit(streams: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, 3 * streams + 500))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def held_streams(
    app: str, streams: int, events: int, interval: float = 1.0, worker: str = "gthread",
) -> Held:
    return held_together([app], streams, events, interval, worker)[app]


def held_together(
    apps: list[str], streams: int, events: int, interval: float = 1.0, worker: str = "gthread",
) -> dict[str, Held]:
    """``streams`` streams on each app's own server, all held in one window (the
    same stretch of the machine's noise for every app, in the time of one)."""
    raise_fd_limit(streams * len(apps))
    with gunicorns([APPS[app] for app in apps], *server_args(worker, streams)) as served:
        pids = [worker_pid(proc.pid) for proc, _ in served]
        baselines = [proc_status(pid) for pid in pids]
        started = time.monotonic()
        path = f"/held?events={events}&interval={interval:g}"
        results = hold_many([(port, path) for _, port in served], streams, events,
                            60 + events * interval)
        try:
            held = [proc_status(pid) for pid in pids]
            seconds = time.monotonic() - started
        finally:
            for _, socks in results:
                for sock in socks:
                    sock.close()
    return {
        app: Held(
            app=app, worker=worker, streams=streams, events=events,
            delivered=sum(1 for n in counts if n >= events),
            rss_per_stream=(after["VmRSS"] - before["VmRSS"]) * 1024 / streams,
            threads_per_stream=(after["Threads"] - before["Threads"]) / streams,
            seconds=seconds,
        )
        for app, (counts, _), before, after in zip(apps, results, baselines, held, strict=True)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", choices=sorted(APPS), default="live")
    parser.add_argument("--worker", choices=["gevent", "gthread"], default="gthread")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--events", type=int, default=30)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    result = held_streams(args.app, args.streams, args.events, args.interval, args.worker)
    print(f"app: {result.app}, worker: {result.worker}, streams: {result.streams}, "
          f"events each: {result.events}, held for {result.seconds:.1f} s")
    print(f"all events delivered: {'yes' if result.all_delivered else 'NO'} "
          f"({result.delivered}/{result.streams})")
    print(f"worker RSS per stream: {result.rss_per_stream / 1000:.1f} KB (1 KB = 1,000 bytes)")
    print(f"worker threads per stream: {result.threads_per_stream:.2f}")


if __name__ == "__main__":
    main()
