"""``make bench``: live_wsgi against a plain generator app, same gunicorn, same run.

Starts one gunicorn (gthread, one worker) serving ``benchmarks.apps``,
downloads each body over a raw loopback socket from this process (the
client), and prints chunks/s, MB/s and the ratio live/plain (median of
several repetitions, interleaved so drift hits both alike).

    python -m benchmarks [--quick] [--reps N]
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import time

from .server import gunicorn

END = b"\r\n0\r\n\r\n"
#: Bounds for every download: a benchmark must stop by itself.
DOWNLOAD_TIMEOUT = 120.0

CASES = [  # (chunk size, chunk count)
    (64, 200_000),
    (1024, 200_000),
    (65536, 8192),  # 512 MiB
]
QUICK_CASES = [(64, 50_000), (1024, 50_000), (65536, 2048)]


def download(port: int, path: str) -> tuple[float, int]:
    """Seconds from sending the request to the last chunk, and bytes received."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=DOWNLOAD_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    deadline = time.monotonic() + DOWNLOAD_TIMEOUT
    started = time.perf_counter()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
    received = 0
    tail = b""
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    try:
        while True:
            n = sock.recv_into(view)
            if not n:
                raise ConnectionError(f"{path}: connection closed before the end")
            received += n
            tail = (tail + bytes(view[max(0, n - 16):n]))[-16:]
            if tail.endswith(END):
                return time.perf_counter() - started, received
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path}: no end after {DOWNLOAD_TIMEOUT} s")
    finally:
        sock.close()


def wait_ready(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            download(port, "/plain/1/1")
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller bodies, 3 reps")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (median)")
    args = parser.parse_args()
    cases = QUICK_CASES if args.quick else CASES
    reps = args.reps or (3 if args.quick else 5)

    import gunicorn as gunicorn_package

    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"gunicorn {gunicorn_package.__version__} (gthread, 1 worker), "
          f"{time.strftime('%Y-%m-%d')}")
    with gunicorn("benchmarks.apps:app", "--worker-class", "gthread",
                  "--threads", "8") as (_, port):
        wait_ready(port)
        header = (f"{'chunk':>7} {'count':>8} | {'plain chunks/s':>14} {'MB/s':>7} | "
                  f"{'live chunks/s':>14} {'MB/s':>7} | {'live/plain':>10}")
        print(header)
        print("-" * len(header))
        for size, count in cases:
            times: dict[str, list[float]] = {"plain": [], "live": []}
            for _ in range(reps):
                for kind in ("plain", "live"):
                    seconds, _ = download(port, f"/{kind}/{size}/{count}")
                    times[kind].append(seconds)
            plain = statistics.median(times["plain"])
            live = statistics.median(times["live"])
            mb = size * count / 1e6
            print(f"{size:>7} {count:>8} | {count / plain:>14,.0f} {mb / plain:>7.1f} | "
                  f"{count / live:>14,.0f} {mb / live:>7.1f} | {plain / live:>9.2f}x")


if __name__ == "__main__":
    main()
