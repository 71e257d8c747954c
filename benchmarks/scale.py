"""M8, scale on gevent: 10,000 idle SSE streams on one worker, one broadcast to all.

    python -m benchmarks.scale [--streams 10000] [--routes plain,naive,live,producer]

Each route gets a gunicorn of its own (``-k gevent``, one worker, room for
every stream) on the in-process broker (``memory://``), all of them started
together and measured one after the other:

- ``plain``: ``/plain-events/m8-0``, a generator that subscribes (on the
  server's greenlet);
- ``naive``: the same generator in ``benchmarks.naive``'s middleware;
- ``live``: ``/events/m8-0``, live_wsgi's fan-out stream (``broker.sse_app``);
- ``producer``: ``/live-events/m8-0``, producer code on a live worker
  (``broker.subscribe``, a pool greenlet per stream).

For each: open the streams (at most ``WINDOW`` waiting for their head at
once, so the listen backlog never overflows), read the worker's RSS, publish
one event in the worker (``/publish-load``: its data is the
``time.monotonic()`` of the publish, one clock for every process here), and
take each stream's delivery time as the event's bytes arrive here (p50, p99
across the streams); then hang up every stream. Once every route has been
measured, each worker's ``/stats`` (the streams it still holds) is polled
until it holds none or ``DEADLINE`` seconds have passed since its hang-up:
the streams it still holds then, and its RSS against its baseline.

This process holds its sockets on one ``selectors`` loop (epoll), reading a
socket only when the kernel says it has bytes. Bounded: every phase has a
deadline.
"""

from __future__ import annotations

import argparse
import math
import selectors
import socket
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

from . import client
from .apps import BROADCAST_APP, NAIVE_BROADCAST_APP
from .held_streams import raise_fd_limit
from .server import gunicorn_command, proc_status, serving, worker_pid

#: route name: (app, path of the channel's stream).
ROUTES = {
    "plain": (BROADCAST_APP, "/plain-events/m8-0"),
    "naive": (NAIVE_BROADCAST_APP, "/plain-events/m8-0"),
    "live": (BROADCAST_APP, "/events/m8-0"),
    "producer": (BROADCAST_APP, "/live-events/m8-0"),
}
#: The one publish: one event on channel m8-0, stamped in the worker.
PUBLISH = "/publish-load?name=m8&channels=1&count=1&rate=1000"
#: Streams at most waiting for their head at once while opening.
WINDOW = 500
#: How long after its hang-up a worker may still hold streams (the default
#: probe interval is 1 s; the heartbeat, which also finds them, 15 s).
DEADLINE = 5.0
KIB = 1024


@dataclass
class Scale:
    route: str
    streams: int
    rss_per_stream: float  # bytes, once every stream is open
    delivered: int  # streams that got the event
    p50: float  # seconds from the publish to the event's arrival here
    p99: float
    left: int = -1  # streams the worker still held DEADLINE s after the hang-up
    rss_kept_per_stream: float = math.nan  # bytes above the baseline then

    @property
    def all_delivered(self) -> bool:
        return self.delivered == self.streams


class Streams:
    """Many SSE streams of one path on one selector; bytes read only when ready."""

    def __init__(self, port: int, path: str) -> None:
        self.port = port
        self.request = (f"GET {path} HTTP/1.1\r\nHost: b\r\n"
                        f"Accept: text/event-stream\r\n\r\n").encode()
        self.selector = selectors.DefaultSelector()
        self.socks: list[socket.socket] = []
        self.buffers: dict[socket.socket, bytes] = {}

    def open(self, count: int, seconds: float) -> None:
        """Open ``count`` streams; return once each has its head (the server
        sends it once the stream is subscribed)."""
        deadline = time.monotonic() + seconds
        waiting = 0
        while len(self.socks) < count or waiting:
            while len(self.socks) < count and waiting < WINDOW:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
                sock.sendall(self.request)
                sock.setblocking(False)
                self.selector.register(sock, selectors.EVENT_READ)
                self.socks.append(sock)
                self.buffers[sock] = b""
                waiting += 1
            for key, _ in self.selector.select(timeout=1):
                sock = cast(socket.socket, key.fileobj)
                data = self._read(sock)
                if b"\r\n\r\n" in self.buffers[sock]:
                    continue  # its head came earlier
                self.buffers[sock] += data
                if b"\r\n\r\n" in self.buffers[sock]:
                    waiting -= 1
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.socks)} streams opened, {waiting} without "
                                   f"a head after {seconds:g} s")
        for sock in self.socks:  # keep what follows the head
            self.buffers[sock] = self.buffers[sock].partition(b"\r\n\r\n")[2]

    def _read(self, sock: socket.socket) -> bytes:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return b""
        if not data:
            raise ConnectionError("the server closed a stream")
        return data

    def stamps(self, seconds: float) -> list[float]:
        """Read until every stream has one stamped event or ``seconds`` pass:
        each delivery's seconds from its publish to its arrival here."""
        latencies = []
        waiting = set(self.socks)
        deadline = time.monotonic() + seconds
        while waiting and time.monotonic() < deadline:
            for key, _ in self.selector.select(timeout=1):
                now = time.monotonic()
                sock = cast(socket.socket, key.fileobj)
                text = self.buffers[sock] + self._read(sock)
                match = client.STAMP.search(text)
                if match is None:
                    self.buffers[sock] = text[-64:]
                    continue
                latencies.append(now - float(match.group(1)))
                self.selector.unregister(sock)
                waiting.discard(sock)
        return latencies

    def close(self) -> None:
        self.selector.close()
        for sock in self.socks:
            sock.close()


def server_args(streams: int) -> list[str]:
    return ["--worker-class", "gevent", "--worker-connections", str(streams + 1000),
            "--timeout", "120", "--graceful-timeout", "1"]


@contextmanager
def servers(routes: list[str], streams: int) -> Iterator[dict[str, tuple[int, int]]]:
    """A gevent worker per route on ``memory://``: {route: (worker PID, port)}."""
    env = {"LIVE_WSGI_BROKER": "memory://", "LIVE_WSGI_BENCH_WORKERS": str(streams + 100)}
    commands = [(gunicorn_command(ROUTES[route][0], *server_args(streams)), env)
                for route in routes]
    with serving(commands) as served:
        yield {route: (worker_pid(proc.pid), port)
               for route, (proc, port) in zip(routes, served, strict=True)}


def scale(routes: list[str], streams: int,
          log: Callable[[str], None] = print) -> dict[str, Scale]:
    raise_fd_limit(streams)
    results: dict[str, Scale] = {}
    with servers(routes, streams) as where:
        baselines, hung_up = {}, {}
        for route in routes:
            pid, port = where[route]
            client.get_text(port, "/pid")  # the broker made, before the baseline
            baselines[route] = proc_status(pid)["VmRSS"]
            log(f"M8 {route}: opening {streams:,} streams")
            held = Streams(port, ROUTES[route][1])
            try:
                held.open(streams, client.TIMEOUT)
                rss = proc_status(pid)["VmRSS"]
                publisher = client.send(port, PUBLISH)
                try:
                    latencies = held.stamps(60)
                finally:
                    publisher.close()
            finally:
                held.close()
                hung_up[route] = time.monotonic()
            cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [math.nan] * 99
            results[route] = Scale(route, streams, (rss - baselines[route]) * KIB / streams,
                                   len(latencies), cuts[49], cuts[98])
        for route in routes:
            pid, port = where[route]
            left = int(client.get_text(port, "/stats"))
            while left and time.monotonic() < hung_up[route] + DEADLINE:
                time.sleep(0.05)
                left = int(client.get_text(port, "/stats"))
            results[route].left = left
            kept = proc_status(pid)["VmRSS"] - baselines[route]
            results[route].rss_kept_per_stream = kept * KIB / streams
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", default=",".join(ROUTES))
    parser.add_argument("--streams", type=int, default=10_000)
    args = parser.parse_args()
    started = time.monotonic()
    results = scale(args.routes.split(","), args.streams)
    print(f"{args.streams:,} idle SSE streams per route, one gevent worker each, "
          f"{time.monotonic() - started:.0f} s")
    print(f"{'route':>10} {'RSS/stream KB':>14} {'delivered':>10} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'left':>6} {'RSS kept KB':>12}")
    for r in results.values():
        print(f"{r.route:>10} {r.rss_per_stream / 1000:>14.1f} {r.delivered:>10,} "
              f"{r.p50 * 1000:>8.1f} {r.p99 * 1000:>8.1f} {r.left:>6,} "
              f"{r.rss_kept_per_stream / 1000:>12.1f}")


if __name__ == "__main__":
    main()
