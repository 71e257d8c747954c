"""Start and stop the servers the benchmarks measure (loopback only)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: /proc/PID/stat clock ticks per second (Linux USER_HZ).
TICKS = os.sysconf("SC_CLK_TCK")


def _start(command: Callable[[int], list[str]], env: dict[str, str] | None = None,
           ) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``command(fd)`` with a listening loopback socket as ``fd``: (process, port)."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    listener.set_inheritable(True)
    port = listener.getsockname()[1]
    try:
        proc = subprocess.Popen(
            command(listener.fileno()), pass_fds=(listener.fileno(),), cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        )
    finally:
        listener.close()
    return proc, port


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Wait for our own server, sent SIGTERM, to end; SIGKILL (by its PID) after 30 s."""
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def _serving(command: Callable[[int], list[str]], env: dict[str, str] | None = None,
             ) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Run ``command(fd)`` with a listening loopback socket as ``fd``: (process, port)."""
    with serving([(command, env)]) as (served,):
        yield served


@contextmanager
def serving(commands: Sequence[tuple[Callable[[int], list[str]], dict[str, str] | None]],
            ) -> Iterator[list[tuple[subprocess.Popen[bytes], int]]]:
    """Start every ``(command, env)`` at once (each starts in its own time), wait
    until each answers, and stop them all at the end: [(process, port)]."""
    started: list[tuple[subprocess.Popen[bytes], int]] = []
    try:
        for command, env in commands:
            started.append(_start(command, env))
        for _, port in started:
            wait_ready(port)
        yield started
    finally:
        for proc, _ in started:  # all at once: they stop side by side
            proc.send_signal(signal.SIGTERM)
        for proc, _ in started:
            _reap(proc)


def gunicorn_command(app: str, *args: str) -> Callable[[int], list[str]]:
    """The command of one gunicorn worker serving ``app`` on an inherited socket.
    No control socket: the servers of a set would share its one default path."""
    return lambda fd: [
        sys.executable, "-m", "gunicorn", "--bind", f"fd://{fd}", "--no-control-socket",
        "--workers", "1", "--log-level", "warning", *args, app,
    ]  # fmt: skip


@contextmanager
def gunicorn(app: str, *args: str, env: dict[str, str] | None = None,
             ) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """One gunicorn worker serving ``app`` on a fresh loopback port: (process, port)."""
    with _serving(gunicorn_command(app, *args), env) as served:
        yield served


@contextmanager
def gunicorns(apps: list[str], *args: str, env: dict[str, str] | None = None,
              ) -> Iterator[list[tuple[subprocess.Popen[bytes], int]]]:
    """A gunicorn (one worker, ``args``) for each of ``apps``, started together."""
    with serving([(gunicorn_command(app, *args), env) for app in apps]) as served:
        yield served


def rawserver_command() -> Callable[[int], list[str]]:
    return lambda fd: [sys.executable, "-m", "benchmarks.rawserver", str(fd)]


@contextmanager
def rawserver() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """The trivial raw-socket server of ``benchmarks.rawserver``: (process, port)."""
    with _serving(rawserver_command()) as served:
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


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of every thread of ``pid`` so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


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
