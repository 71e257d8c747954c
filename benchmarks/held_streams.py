"""Many concurrent SSE streams held open on one gunicorn worker.

    python -m benchmarks.held_streams --worker gevent --streams 2000            # idle
    python -m benchmarks.held_streams --worker gthread --streams 1000 --events 30

Opens N streams from this (client) process, checks every stream receives all
its events, reads the worker's RSS and thread count while they are held,
then closes them all and checks the worker frees every one. Bounded: every
phase has a deadline.
"""

from __future__ import annotations

import argparse
import resource
import selectors
import socket
import time
from pathlib import Path

from .server import gunicorn


def proc_status(pid: int) -> dict[str, int]:
    facts = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "Threads"):
                facts[name] = int(value.split()[0])
    return facts


def server_args(worker: str, streams: int) -> list[str]:
    if worker == "gevent":
        return ["--worker-class", "gevent", "--worker-connections", str(streams + 100),
                "--timeout", "120"]
    return ["--worker-class", "gthread", "--threads", str(streams + 20), "--timeout", "120"]


def get(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data.partition(b"\r\n\r\n")[2]


def worker_pid(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return int(children[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["gevent", "gthread"], default="gevent")
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--events", type=int, default=0, help="0: idle streams")
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 3 * args.streams + 500)), hard))

    with gunicorn("benchmarks.apps:held_app", *server_args(args.worker, args.streams)) as (
        proc, port
    ):
        deadline = time.monotonic() + 30
        while True:
            try:
                get(port, "/active")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        worker = worker_pid(proc.pid)
        baseline = proc_status(worker)
        path = f"/held?events={args.events}&interval={args.interval}"
        selector = selectors.DefaultSelector()
        received: dict[socket.socket, int] = {}
        buffers: dict[socket.socket, bytes] = {}
        opened = time.monotonic()
        for _ in range(args.streams):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: b\r\nAccept: text/event-stream\r\n\r\n"
                         .encode())
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
            received[sock] = 0
            buffers[sock] = b""
        expected = max(args.events, 1)
        deadline = time.monotonic() + 60 + args.events * args.interval
        while time.monotonic() < deadline and min(received.values()) < expected:
            for key, _ in selector.select(timeout=1):
                sock = key.fileobj
                try:
                    data = sock.recv(65536)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                buffers[sock] += data  # type: ignore[index]
                received[sock] = buffers[sock].count(b"\ndata: ")  # type: ignore[index]
        delivered = sum(1 for n in received.values() if n >= expected)
        held = proc_status(worker)
        elapsed = time.monotonic() - opened
        streams = args.streams
        rss_per_stream = (held["VmRSS"] - baseline["VmRSS"]) * 1024 / streams
        threads_per_stream = (held["Threads"] - baseline["Threads"]) / streams
        for sock in list(received):
            selector.unregister(sock)
            sock.close()
        deadline = time.monotonic() + 60
        active = int(get(port, "/active"))
        while active and time.monotonic() < deadline:
            time.sleep(0.5)
            active = int(get(port, "/active"))
        print(f"worker: {args.worker}, streams: {streams}, events each: {expected}, "
              f"held for {elapsed:.1f} s")
        print(f"all events delivered: {'yes' if delivered == streams else 'NO'} "
              f"({delivered}/{streams})")
        print(f"worker RSS per stream: {rss_per_stream / 1024:.1f} KB "
              f"(baseline {baseline['VmRSS'] / 1024:.1f} MB, held {held['VmRSS'] / 1024:.1f} MB)")
        print(f"worker threads per stream: {threads_per_stream:.2f}")
        print(f"streams still open after the clients left (checked up to 60 s): {active}")


if __name__ == "__main__":
    main()
