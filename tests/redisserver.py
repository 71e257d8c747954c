"""A real ``redis-server`` for the tests, on a free loopback port of its own.

The benchmarks start theirs with it too (``benchmarks.broadcast``,
``--broker redis-server``): keep it to the standard library, no pytest.

Debian's ``redis-server`` (``make redis`` installs it). It never uses 6379 nor
a Redis it did not start: the port is one the kernel just handed out, the
process is stopped by its own PID, and its data lives in a temporary dir.

``--port 0`` does not pick a port in Redis (it means "no TCP at all"), so a
free port is found by binding ``127.0.0.1:0`` and closing it; if another
process grabs it in between, the server exits and a new port is tried.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

#: How long a server gets from exec to answering PING (it takes ~25 ms).
START_DEADLINE = 10.0
#: Ports tried before giving up (a collision needs a race with another process).
PORT_TRIES = 5


def redis_server_path() -> str | None:
    return shutil.which("redis-server")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def ping(port: int, timeout: float = 0.5) -> bool:
    """True when a Redis answers PING on ``127.0.0.1:port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process: ``start()``, ``kill()``, ``restart()``, ``stop()``.

    :param directory: its working dir (RDB/AOF files, the log).
    :param appendonly: persist every write to an AOF before replying, so a
        restart keeps the data.
    """

    def __init__(self, directory: Path, *, appendonly: bool = False) -> None:
        exe = redis_server_path()
        if exe is None:
            raise FileNotFoundError("redis-server is not installed (`make redis` installs it)")
        self.exe = exe
        self.directory = directory
        self.appendonly = appendonly
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        for _ in range(PORT_TRIES):
            port = free_port()
            if port == 6379:  # never the system Redis's port
                continue
            self.port = port
            if self._launch():
                return self
        raise RuntimeError(f"redis-server did not start on any of {PORT_TRIES} free ports; "
                           f"see {self.directory / 'redis.log'}")

    def restart(self) -> None:
        """Start again on the same port (the outage tests' 'Redis is back')."""
        assert self.proc is None or self.proc.poll() is not None, "still running"
        if not self._launch():
            raise RuntimeError(f"redis-server did not restart on port {self.port}; "
                               f"see {self.directory / 'redis.log'}")

    def _launch(self) -> bool:
        argv = [
            self.exe, "--port", str(self.port), "--bind", "127.0.0.1",
            "--protected-mode", "yes", "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            # "always": the reply to a write waits for it to be in the AOF. With
            # the default "everysec" a loaded machine may postpone the AOF write
            # by up to 2 s (while an fsync runs), so a kill -9 right after a
            # publish lost it and the restart test saw a Reset.
            "--appendfsync", "always",
            "--dir", str(self.directory), "--logfile", "redis.log",
            "--daemonize", "no",
        ]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, cwd=self.directory)
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            if ping(self.port, timeout=0.2):
                return True
            if self.proc.poll() is not None:  # most likely: the port was taken meanwhile
                self.proc = None
                return False
            time.sleep(0.005)  # a poll interval, bounded by the deadline above
        self.stop()
        raise RuntimeError(f"redis-server gave no PONG within {START_DEADLINE} s; "
                           f"see {self.directory / 'redis.log'}")

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown save, connections cut."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def _signal(self, signum: int) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signum)  # our own child, by its PID
        try:
            proc.wait(START_DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(START_DEADLINE)
