"""M7: the worker CPU that idle SSE streams cost.

    python -m benchmarks.idle --streams 1000 --seconds 30
    python -m benchmarks.idle --worker gevent --streams 1000 --seconds 30
    python -m benchmarks.idle --route fan-out --streams 1000 --seconds 30

Starts a fresh gunicorn (one worker) for the live app, opens N SSE streams
that each get one event and then nothing for a minute (``/held?events=2&
interval=60``: the producer sleeps, the body is idle with the default
heartbeat, 15 s, and probe interval, 1 s), waits until every stream has its
first event and a few seconds more (so each body has settled into its idle
state), then reads the worker's CPU time (utime + stime from
``/proc/PID/stat``) and its threads' context switches across ``--seconds``,
and hangs up. Every phase has a deadline.

``--route fan-out`` measures fan-out streams instead (``broker.sse_app`` with
its defaults, no pool thread): the broadcast app's ``/events/idle``, each
resuming from the id before the channel's last event, so each gets that one
event (its first) and then nothing.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .apps import APPS, BROADCAST_APP
from .client import get_text, hold
from .held_streams import raise_fd_limit, server_args
from .server import context_switches, gunicorn, worker_pid

#: Seconds between the first events and the measurement: every body has gone
#: idle once (its first wait is the probe interval) and settled.
SETTLE = 3.0


@dataclass
class Idle:
    worker: str
    route: str
    streams: int
    delivered: int
    seconds: float
    cpu_seconds: float
    switches: int

    @property
    def cpu_share(self) -> float:
        """Of one core, 0..1."""
        return self.cpu_seconds / self.seconds


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # After the command: state is field 3, utime field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: The streams ``--route`` measures: LiveMiddleware ones, or fan-out ones.
ROUTES = ("live", "fan-out")


def idle(streams: int, seconds: float, worker: str = "gthread", route: str = "live") -> Idle:
    raise_fd_limit(streams)
    app = APPS["live"] if route == "live" else BROADCAST_APP
    with gunicorn(app, *server_args(worker, streams)) as (proc, port):
        pid = worker_pid(proc.pid)
        if route == "live":
            path = "/held?events=2&interval=60"
        else:
            get_text(port, "/pid")  # the broker is made
            before = get_text(port, "/publish/idle?data=before")
            get_text(port, "/publish/idle?data=first")
            path = f"/events/idle?lastEventId={before}"
        counts, socks = hold(port, path, streams, 1, 60)
        try:
            time.sleep(SETTLE)
            cpu, switches = cpu_seconds(pid), context_switches(pid)
            started = time.monotonic()
            time.sleep(seconds)
            elapsed = time.monotonic() - started
            cpu = cpu_seconds(pid) - cpu
            switches = context_switches(pid) - switches
        finally:
            for sock in socks:
                sock.close()
    return Idle(worker=worker, route=route, streams=streams,
                delivered=sum(1 for n in counts if n >= 1),
                seconds=elapsed, cpu_seconds=cpu, switches=switches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["gevent", "gthread"], default="gthread")
    parser.add_argument("--route", choices=ROUTES, default="live",
                        help="live: LiveMiddleware streams; fan-out: broker.sse_app streams")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    if args.route == "live" and args.seconds + SETTLE > 55:
        parser.error("--seconds: the streams' producers end after 60 s")
    result = idle(args.streams, args.seconds, args.worker, args.route)
    print(f"worker: {result.worker}, idle {result.route} streams: {result.streams} "
          f"({result.delivered} got their first event), measured for {result.seconds:.1f} s")
    print(f"worker CPU: {result.cpu_seconds:.2f} s = {100 * result.cpu_share:.2f}% of one core; "
          f"context switches: {result.switches} ({result.switches / result.seconds:.0f}/s)")


if __name__ == "__main__":
    main()
