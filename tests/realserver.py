"""Real servers on loopback, and a raw-socket HTTP/1.1 client.

Servers run as subprocesses bound to a listening socket the test creates
and passes down (``fd://``), so there is no port race; they are stopped by
their PID, and only the processes a test started are ever signalled.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .support import WAIT

ROOT = Path(__file__).resolve().parent.parent


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], port: int,
                 tls: ssl.SSLContext | None = None) -> None:
        self.proc = proc
        self.port = port
        #: The client side's TLS context when the server speaks TLS.
        self.tls = tls

    def connect(self, timeout: float = WAIT) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        if self.tls is not None:
            return self.tls.wrap_socket(sock, server_hostname="127.0.0.1")
        return sock

    def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        """One request on a new connection; returns once the headers arrived."""
        sock = self.connect()
        send_request(sock, path, headers=headers)
        return Response(sock)

    def get_json(self, path: str) -> dict[str, object]:
        response = self.get(path)
        try:
            assert response.status == 200, (response.status, response.read_all())
            return json.loads(response.read_all())  # type: ignore[no-any-return]
        finally:
            response.close()


@contextmanager
def gunicorn(app: str, *args: str, env: dict[str, str] | None = None,
             stderr: Any = None, tls: ssl.SSLContext | None = None) -> Iterator[Server]:
    """``gunicorn app`` (gthread by default) on a fresh loopback port.

    With ``--certfile``/``--keyfile`` in ``args`` it speaks TLS: pass the
    client's context as ``tls``.
    """
    listener = listening_socket()
    port = listener.getsockname()[1]
    fd = listener.fileno()
    argv = [sys.executable, "-m", "gunicorn", "--bind", f"fd://{fd}",
            "--workers", "1", "--graceful-timeout", "5", "--log-level", "warning"]
    if not any(a.startswith(("--worker-class", "-k")) for a in args):
        argv += ["--worker-class", "gthread", "--threads", "16"]
    argv += [*args, app]
    proc = subprocess.Popen(
        argv, pass_fds=(fd,), cwd=ROOT, stderr=stderr,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )
    listener.close()
    try:
        yield Server(proc, port, tls)
    finally:
        stop(proc)


@contextmanager
def serve(kind: str, app: str, stderr: Any = None,
          log_level: str | None = None, env: dict[str, str] | None = None) -> Iterator[Server]:
    """``app`` under a real server of ``kind``: gthread, gevent, waitress, werkzeug.

    ``log_level`` (waitress, werkzeug) logs to stderr from that level on;
    ``env`` adds to (or replaces in) the server's environment.
    """
    if kind == "gthread":
        with gunicorn(app, env=env) as server:
            yield server
        return
    if kind == "gevent":
        with gunicorn(app, "--worker-class", "gevent", "--worker-connections", "4000",
                      env=env) as server:
            yield server
        return
    listener = listening_socket()
    fd = listener.fileno()
    argv = [sys.executable, "-m", "tests.serve", kind, str(fd), app]
    if log_level is not None:
        argv.append(log_level)
    proc = subprocess.Popen(
        argv, pass_fds=(fd,), cwd=ROOT, stderr=stderr,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )
    port = listener.getsockname()[1]
    listener.close()
    try:
        yield Server(proc, port)
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes], timeout: float = WAIT) -> None:
    """Stop a process this test started, by its PID; kill it if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def read_until_output(proc: subprocess.Popen[bytes], text: str,
                      timeout: float = WAIT) -> str:
    """Read the process's stderr pipe until ``text`` shows up; what was read so far."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    deadline = time.monotonic() + timeout
    output = b""
    while text.encode() not in output:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {text!r} within {timeout} s in:\n{output.decode()}"
        if select.select([fd], [], [], remaining)[0]:
            data = os.read(fd, 65536)
            assert data, f"the process ended without {text!r}:\n{output.decode()}"
            output += data
    return output.decode()


def send_request(sock: socket.socket, path: str, method: str = "GET",
                 headers: dict[str, str] | None = None) -> None:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


class Response:
    """An HTTP/1.1 response read incrementally from a raw socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        head = self._read_until(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split(" ", 2)[1])
        self.headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.chunked = self.headers.get("transfer-encoding") == "chunked"
        #: True once the terminating zero-size chunk arrived.
        self.complete = False

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buffer += data
        return True

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            if not self._fill():
                raise ConnectionError(f"connection closed before {marker!r}")
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def _read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise ConnectionError("connection closed inside a chunk")
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def next_chunk(self) -> bytes | None:
        """The next HTTP chunk's data; None after the last one."""
        assert self.chunked, f"not a chunked response: {self.headers}"
        if self.complete:
            return None
        size = int(self._read_until(b"\r\n").split(b";")[0], 16)
        data = self._read_exactly(size)
        self._read_exactly(2)
        if size == 0:
            self.complete = True
            return None
        return data

    def read_until(self, expected: bytes) -> bytes:
        """Read chunks until the body so far ends with ``expected``."""
        body = b""
        while not body.endswith(expected):
            chunk = self.next_chunk()
            if chunk is None:
                raise AssertionError(f"body ended before {expected!r}: {body!r}")
            body += chunk
        return body

    def read_all(self) -> bytes:
        """The rest of the body; for a chunked one, until its last chunk."""
        if self.chunked:
            body = b""
            while (chunk := self.next_chunk()) is not None:
                body += chunk
            return body
        length = self.headers.get("content-length")
        if length is not None:
            return self._read_exactly(int(length))
        while self._fill():
            pass
        data, self.buffer = self.buffer, b""
        return data

    def read_to_eof(self) -> tuple[bytes, bool]:
        """Chunked body until the connection ends: (body, complete?)."""
        body = b""
        try:
            while (chunk := self.next_chunk()) is not None:
                body += chunk
        except (ConnectionError, ValueError):
            return body, False
        return body, True

    def close(self) -> None:
        self.sock.close()
