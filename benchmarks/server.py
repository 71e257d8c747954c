"""Start and stop the gunicorn the benchmarks measure."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def gunicorn(app: str, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """One gunicorn worker serving ``app`` on a fresh loopback port: (process, port)."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    listener.set_inheritable(True)
    port = listener.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"fd://{listener.fileno()}",
         "--workers", "1", "--log-level", "warning", *args, app],
        pass_fds=(listener.fileno(),), cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    listener.close()
    try:
        yield proc, port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
