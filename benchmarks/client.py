"""The load the benchmarks put on a server, from this (client) process.

Every loop here is bounded in time, and every socket goes to 127.0.0.1.
"""

from __future__ import annotations

import re
import selectors
import shutil
import socket
import subprocess
import time
from collections.abc import Callable

#: How a chunked body ends.
END = b"\r\n0\r\n\r\n"
#: No single measurement may run longer than this.
TIMEOUT = 180.0


def request(path: str, close: bool = True) -> bytes:
    connection = "Connection: close\r\n" if close else ""
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\n{connection}\r\n".encode()


def download(port: int, path: str) -> tuple[float, int]:
    """Seconds from sending the request to the end of a chunked body, and bytes received."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    deadline = time.monotonic() + TIMEOUT
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    received = 0
    tail = b""
    started = time.perf_counter()
    sock.sendall(request(path))
    try:
        while True:
            n = sock.recv_into(view)
            if not n:
                raise ConnectionError(f"{path}: the connection closed before the end")
            received += n
            tail = (tail + bytes(view[max(0, n - 16):n]))[-16:]
            if tail.endswith(END):
                return time.perf_counter() - started, received
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path}: no end after {TIMEOUT:g} s")
    finally:
        sock.close()


def ttfb_round(port: int, path: str, concurrency: int) -> list[float]:
    """Open ``concurrency`` connections, send a request on each at once, and
    return each one's seconds from its request to the first response byte.
    Reads every response to its end (the server closes)."""
    socks = []
    try:
        for _ in range(concurrency):
            sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socks.append(sock)
        selector = selectors.DefaultSelector()
        sent: dict[socket.socket, float] = {}
        first: dict[socket.socket, float] = {}
        payload = request(path)
        for sock in socks:
            sent[sock] = time.perf_counter()
            sock.sendall(payload)
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        open_count = len(socks)
        deadline = time.monotonic() + TIMEOUT
        while open_count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path}: {open_count} responses unfinished after {TIMEOUT:g} s")
            for key, _ in selector.select(timeout=1):
                now = time.perf_counter()
                sock = key.fileobj  # type: ignore[assignment]
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                if data and sock not in first:
                    first[sock] = now
                if not data:
                    # Close at once, as browsers do: gunicorn's graceful close
                    # lingers (on its main thread) until the client closes too.
                    selector.unregister(sock)
                    sock.close()
                    open_count -= 1
        selector.close()
        if len(first) != len(socks):
            raise ConnectionError(f"{path}: {len(socks) - len(first)} responses were empty")
        return [first[sock] - sent[sock] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


WRK = shutil.which("wrk")


def wrk(port: int, path: str, connections: int, seconds: float) -> float:
    """Requests/s that ``wrk`` (one thread, keep-alive) gets for ``path``."""
    if WRK is None:
        raise RuntimeError("M3 needs wrk: apt-get install wrk (make bench installs it)")
    result = subprocess.run(
        [WRK, "-t1", f"-c{connections}", f"-d{seconds:g}s", f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    )
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", result.stdout)
    if errors:
        raise RuntimeError(f"wrk reported errors for {path}:\n{result.stdout}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    if match is None:
        raise RuntimeError(f"cannot read wrk's output:\n{result.stdout}")
    return float(match.group(1))


def slow_read(
    port: int, path: str, size: int, interval: float, seconds: float,
    sample: Callable[[], None],
) -> int:
    """Read at most ``size`` bytes every ``interval`` seconds for ``seconds``,
    calling ``sample()`` after each read; then hang up. Returns bytes read."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    received = 0
    try:
        sock.sendall(request(path))
        started = time.monotonic()
        tick = started
        while time.monotonic() - started < seconds:
            data = sock.recv(size)
            if not data:
                raise ConnectionError(f"{path}: the server closed the connection")
            received += len(data)
            sample()
            tick += interval
            pause = tick - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    finally:
        sock.close()
    return received


def hold(
    port: int, path: str, streams: int, expected: int, seconds: float,
) -> tuple[list[int], list[socket.socket]]:
    """Hold ``streams`` SSE responses open until each has ``expected`` events
    or ``seconds`` pass: (events each received, the sockets, still open for
    the caller to measure the server and then close)."""
    return hold_many([(port, path)], streams, expected, seconds)[0]


def hold_many(
    targets: list[tuple[int, str]], streams: int, expected: int, seconds: float,
) -> list[tuple[list[int], list[socket.socket]]]:
    """``hold`` on several servers at once: ``streams`` responses of each
    ``(port, path)``, opened server after server, then read together until
    every one has ``expected`` events or ``seconds`` pass. Per target: (events
    each received, its sockets, still open)."""
    selector = selectors.DefaultSelector()
    counts: dict[socket.socket, int] = {}
    tails: dict[socket.socket, bytes] = {}
    held: list[list[socket.socket]] = []
    for port, path in targets:
        payload = f"GET {path} HTTP/1.1\r\nHost: b\r\nAccept: text/event-stream\r\n\r\n".encode()
        socks = []
        for _ in range(streams):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(payload)
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
            counts[sock] = 0
            tails[sock] = b""
            socks.append(sock)
        held.append(socks)
    deadline = time.monotonic() + seconds
    done = 0
    while done < len(counts) and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1):
            sock = key.fileobj  # type: ignore[assignment]
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            # Count event starts; keep a short tail so one split across two
            # reads is counted once.
            text = tails[sock] + data
            before = counts[sock]
            counts[sock] = before + text.count(b"data: ") - tails[sock].count(b"data: ")
            tails[sock] = text[-8:]
            if before < expected <= counts[sock]:
                done += 1
            if not data:
                # The server ended the response and the connection: close at
                # once, as browsers do. gunicorn's gthread lingers on its main
                # thread until the client closes too, accepting nobody else.
                selector.unregister(sock)
                sock.close()
    selector.close()
    return [([counts[sock] for sock in socks], socks) for socks in held]


def get_text(port: int, path: str) -> str:
    """The body of a short response (``Content-Length``) to ``GET path``."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(request(path))
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"{path}: {head.decode('latin-1')}")
    return body.decode()


#: One SSE data line carrying a ``time.monotonic()`` stamp.
STAMP = re.compile(rb"data: (\d+\.\d+)\n")


def send(port: int, path: str) -> socket.socket:
    """A connection that has sent ``GET path``; the caller reads or closes it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.sendall(request(path))
    return sock


def delivery(
    port: int, paths: list[str], expected: list[int], start: Callable[[], Callable[[], None]],
    seconds: float,
) -> tuple[list[float], list[int]]:
    """Subscribe to each of ``paths`` (SSE), start the publisher (``start()``,
    which returns what waits for it to end) once every stream has its head,
    and read until each has its ``expected`` stamped events or ``seconds``
    pass: (seconds from publish to receipt, one per event received; events
    each stream received)."""
    selector = selectors.DefaultSelector()
    socks = []
    buffers: dict[socket.socket, bytes] = {}
    counts: dict[socket.socket, int] = {}
    latencies: list[float] = []
    finish: Callable[[], None] | None = None
    try:
        for path in paths:
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: b\r\n"
                         f"Accept: text/event-stream\r\n\r\n".encode())
            socks.append(sock)
        # The head (and the opening comment) leave once the stream is
        # subscribed: wait for every one before anything is published.
        deadline = time.monotonic() + TIMEOUT
        for sock in socks:
            head = b""
            while b"\r\n\r\n" not in head or head.endswith(b"\r\n\r\n"):
                if time.monotonic() > deadline:
                    raise TimeoutError("streams did not open in time")
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("a stream closed before its head")
                head += data
            buffers[sock] = head.partition(b"\r\n\r\n")[2]
            counts[sock] = 0
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        wanted = dict(zip(socks, expected, strict=True))
        finish = start()
        done = 0
        deadline = time.monotonic() + seconds
        while done < len(wanted) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1):
                now = time.monotonic()
                sock = key.fileobj  # type: ignore[assignment]
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                if not data:
                    selector.unregister(sock)
                    continue
                text = buffers[sock] + data
                cut = text.rfind(b"\n") + 1
                stamps = STAMP.findall(text, 0, cut)
                buffers[sock] = text[cut:]
                latencies.extend(now - float(stamp) for stamp in stamps)
                before = counts[sock]
                counts[sock] = before + len(stamps)
                if before < wanted[sock] <= counts[sock]:
                    done += 1
        return latencies, [counts[sock] for sock in socks]
    finally:
        selector.close()
        for sock in socks:
            sock.close()
        if finish is not None:
            finish()
