"""Is the client still there? Asked without writing to it.

A live body that is idle (a producer waiting for news) and a request whose
app has not committed yet send nothing, so a client that left would go
unnoticed until the next write. Where the server exposes the client socket
(``gunicorn.socket``, ``werkzeug.socket``) or a disconnect check
(``waitress.client_disconnected``), the server thread asks it every
``probe_interval`` instead (SPEC 4.2).
"""

from __future__ import annotations

import select
import socket
from collections.abc import Callable
from typing import Any

#: environ keys under which servers expose the client socket.
SOCKET_KEYS = ("gunicorn.socket", "werkzeug.socket")


def client_socket(environ: dict[str, object]) -> socket.socket | None:
    """The client's socket if the server exposes it for this HTTP/1 request."""
    if not str(environ.get("SERVER_PROTOCOL", "")).startswith("HTTP/1"):
        return None  # HTTP/2: the socket carries other requests too
    for key in SOCKET_KEYS:
        sock = environ.get(key)
        if sock is not None and hasattr(sock, "shutdown"):
            return sock  # type: ignore[return-value]
    return None


def disconnect_probe(environ: dict[str, Any]) -> Callable[[], bool] | None:
    """A check that tells, without writing, whether the client has left."""
    check = environ.get("waitress.client_disconnected")
    if callable(check):
        return check  # type: ignore[no-any-return]
    sock = client_socket(environ)
    if sock is None:
        return None
    # gevent wraps the real socket; peek on that one so the call never yields.
    raw = getattr(sock, "_sock", sock)

    def probe() -> bool:
        try:
            if hasattr(select, "poll"):
                poller = select.poll()
                poller.register(raw.fileno(), select.POLLIN | select.POLLPRI)
                if not poller.poll(0):
                    return False
            elif not select.select([raw], [], [], 0)[0]:
                return False
            # Readable: either the next pipelined request, or the end.
            return raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except (OSError, ValueError):
            return True  # reset, or closed under us

    return probe
