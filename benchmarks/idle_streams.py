"""M7, the idle cost: SSE streams that say nothing, held open on one gthread worker.

    python -m benchmarks.idle_streams [--streams 1000] [--seconds 60] [--apps plain,naive,live]

Each app gets a gunicorn of its own (gthread, one worker, a thread per
stream) and ``--streams`` streams of ``/idle``: one event, then silence. The
live producer waits on its stream with the default heartbeat (15 s) and
probe interval (1 s); the plain generator sleeps, on the server thread or (in
the naive middleware) on a pool thread. Once every stream has its event, the
worker's CPU time (utime + stime, /proc/PID/stat, all its threads) is read
over ``--seconds``: the share of one core it used. The apps are held side by
side, in one window.

Then 50 clients of each app hang up at once, and ``/stats`` (the streams the
worker still holds) is polled every 10 ms until the worker has let them go:
the seconds that took, or never within ``DEADLINE`` (a generator asleep
learns nothing until its next write). Bounded: every phase has a deadline.
"""

from __future__ import annotations

import argparse
import math
import socket
import time
from dataclasses import dataclass

from . import client
from .apps import APPS
from .held_streams import raise_fd_limit
from .server import cpu_seconds, gunicorns, worker_pid

#: Clients that hang up after the window, per app.
CLOSED = 50
#: How long the workers get to let them go: twice the default probe interval.
DEADLINE = 2.0
#: Between the last stream's first event and the window, for stragglers to settle.
SETTLE = 0.5
POLL = 0.010


@dataclass
class Idle:
    app: str
    streams: int
    seconds: float  # the CPU window
    cpu_percent: float  # of one core, over the window
    freed_after: float  # seconds until the hung-up streams were let go; inf: not in DEADLINE

    @property
    def freed(self) -> bool:
        return math.isfinite(self.freed_after)


def server_args(streams: int) -> list[str]:
    """A thread per stream and room for the /stats requests beside them (gthread
    accepts no connection past --worker-connections); a short graceful timeout,
    since the sleeping generators would hold the worker's exit for minutes."""
    return ["--worker-class", "gthread", "--threads", str(streams + 20),
            "--worker-connections", str(streams + 100), "--timeout", "120",
            "--graceful-timeout", "1"]


def open_count(port: int) -> int:
    return int(client.get_text(port, "/stats"))


def idle_cost(apps: list[str], streams: int, seconds: float) -> dict[str, Idle]:
    raise_fd_limit(streams * len(apps))
    # Long enough to outlast the opening, the window and the hang-ups; the
    # generators still asleep at the end are ended with their worker.
    path = f"/idle?seconds={seconds + 120:g}"
    with gunicorns([APPS[app] for app in apps], *server_args(streams)) as served:
        pids = [worker_pid(proc.pid) for proc, _ in served]
        ports = [port for _, port in served]
        held = client.hold_many([(port, path) for port in ports], streams, 1, 60)
        socks = [each for _, each in held]
        try:
            for app, (counts, _) in zip(apps, held, strict=True):
                if min(counts) < 1:
                    raise ConnectionError(f"M7 {app}: {counts.count(0)} streams got no event")
            time.sleep(SETTLE)
            before = [cpu_seconds(pid) for pid in pids]
            started = time.monotonic()
            time.sleep(seconds)
            after = [cpu_seconds(pid) for pid in pids]
            window = time.monotonic() - started
            freed = hang_up(ports, [each[:CLOSED] for each in socks])
        finally:
            for each in socks:
                for sock in each:
                    sock.close()
    return {
        app: Idle(app, streams, window, (end - start) / window * 100, freed[index])
        for index, (app, start, end) in enumerate(zip(apps, before, after, strict=True))
    }


def hang_up(ports: list[int], closing: list[list[socket.socket]]) -> list[float]:
    """Close ``closing[i]`` (sockets of the server on ``ports[i]``), all at once;
    then the seconds until each server holds that many streams fewer (to the
    answer of the /stats request that saw it), inf when not within DEADLINE."""
    wanted = [open_count(port) - len(socks) for port, socks in zip(ports, closing, strict=True)]
    started = time.monotonic()
    for socks in closing:
        for sock in socks:
            sock.close()
    freed = [math.inf] * len(ports)
    while time.monotonic() - started < DEADLINE:
        for index, port in enumerate(ports):
            if math.isinf(freed[index]) and open_count(port) <= wanted[index]:
                freed[index] = time.monotonic() - started
        if all(math.isfinite(each) for each in freed):
            break
        time.sleep(POLL)
    return freed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", default="plain,naive,live")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    apps = args.apps.split(",")
    results = idle_cost(apps, args.streams, args.seconds)
    print(f"{args.streams} idle streams per app on one gthread worker, "
          f"CPU over {next(iter(results.values())).seconds:.1f} s")
    for result in results.values():
        freed = f"{result.freed_after:.2f} s" if result.freed else f"not within {DEADLINE:g} s"
        print(f"{result.app:>12}: {result.cpu_percent:6.2f}% of one core; "
              f"{CLOSED} hung up, let go after {freed}")


if __name__ == "__main__":
    main()
