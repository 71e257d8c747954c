"""Start and stop the servers the benchmarks measure (loopback only)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def _serving(command: Callable[[int], list[str]]) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Run ``command(fd)`` with a listening loopback socket as ``fd``: (process, port)."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    listener.set_inheritable(True)
    port = listener.getsockname()[1]
    proc = subprocess.Popen(
        command(listener.fileno()), pass_fds=(listener.fileno(),), cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    listener.close()
    try:
        wait_ready(port)
        yield proc, port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def gunicorn(app: str, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """One gunicorn worker serving ``app`` on a fresh loopback port: (process, port)."""
    with _serving(lambda fd: [
        sys.executable, "-m", "gunicorn", "--bind", f"fd://{fd}",
        "--workers", "1", "--log-level", "warning", *args, app,
    ]) as served:  # fmt: skip
        yield served


@contextmanager
def rawserver() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """The trivial raw-socket server of ``benchmarks.rawserver``: (process, port)."""
    with _serving(lambda fd: [sys.executable, "-m", "benchmarks.rawserver", str(fd)]) as served:
        yield served


def wait_ready(port: int, timeout: float = 30.0) -> None:
    """Block until ``/short`` answers on ``port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"GET /short HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"no server answered on 127.0.0.1:{port} within {timeout:g} s")
        time.sleep(0.1)


def worker_pid(master: int) -> int:
    """The PID of gunicorn's (only) worker."""
    deadline = time.monotonic() + 30
    while True:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        if children:
            return int(children[0])
        if time.monotonic() > deadline:
            raise TimeoutError(f"gunicorn {master} started no worker")
        time.sleep(0.1)


def proc_status(pid: int) -> dict[str, int]:
    """``VmRSS`` (KiB) and ``Threads`` of a process, from /proc."""
    facts = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "Threads"):
                facts[name] = int(value.split()[0])
    return facts


def context_switches(pid: int) -> int:
    """Voluntary plus involuntary context switches of every thread of ``pid``."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "status").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        for line in text.splitlines():
            if "ctxt_switches:" in line:
                total += int(line.split()[-1])
    return total
