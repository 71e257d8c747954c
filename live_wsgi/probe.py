"""Is the client still there? Asked without writing to it.

A live body that is idle (a producer waiting for news) and a request whose
app has not committed yet send nothing, so a client that left would go
unnoticed until the next write. Where the server exposes the client socket
(``gunicorn.socket``, ``werkzeug.socket``) or a disconnect check
(``waitress.client_disconnected``), it is asked instead (SPEC 4.2): an idle
body hands the raw socket to the process's watcher (``live_wsgi.watcher``),
and where that cannot be done the server thread calls the probe made here
every ``probe_interval``. The probe asks the kernel, never reads through
TLS, and never yields to gevent's hub.
"""

from __future__ import annotations

import _socket
import functools
import select
import socket
import sys
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


def raw_client_socket(environ: dict[str, Any]) -> _socket.socket | None:
    """The OS socket under the client's socket (below TLS and gevent), or None.

    None too where the server gives a disconnect check of its own (waitress),
    which knows better than its socket.
    """
    if callable(environ.get("waitress.client_disconnected")):
        return None
    sock = client_socket(environ)
    if sock is None:
        return None
    # gevent's socket wraps the real one in ``_sock``: probe that one, with
    # the OS's own calls, so the probe never yields to gevent's hub. An
    # SSLSocket is an OS socket itself (TLS is done in user space).
    raw = getattr(sock, "_sock", sock)
    return raw if isinstance(raw, _socket.socket) else None


def disconnect_probe(environ: dict[str, Any]) -> Callable[[], bool] | None:
    """A check that tells, without writing or consuming a byte, whether the client has left."""
    check = environ.get("waitress.client_disconnected")
    if callable(check):
        return check  # type: ignore[no-any-return]
    raw = raw_client_socket(environ)
    if raw is None:
        return None
    poll = unpatched("poll")
    if poll is not None:
        return functools.partial(_poll_probe, raw, poll)
    return functools.partial(_select_probe, raw, unpatched("select"))


#: Where the OS reports it (Linux), POLLRDHUP: the client shut its side down
#: (sent its FIN), even with bytes of its still unread in front of the FIN.
_POLLRDHUP: int = getattr(select, "POLLRDHUP", 0)
#: A peek that never blocks (MSG_DONTWAIT is missing on Windows, where the
#: peek only follows a select() that found the socket readable).
_PEEK = socket.MSG_PEEK | getattr(socket, "MSG_DONTWAIT", 0)


def unpatched(name: str) -> Any:
    """``select.<name>`` as the OS provides it, also under gevent's monkey-patching."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None:
        try:
            return monkey.get_original("select", name)
        except AttributeError:
            return None
    return getattr(select, name, None)


def _poll_probe(raw: _socket.socket, poll: Callable[[], Any]) -> bool:
    fd = raw.fileno()
    if fd < 0:
        return True  # closed under us
    poller = poll()
    poller.register(fd, select.POLLIN | _POLLRDHUP)
    events = poller.poll(0)
    if not events:
        return False  # connected and idle
    # POLLIN alone is no disconnect: a pipelined request, or any TLS record,
    # waiting to be read, raises it too.
    if events[0][1] & (_POLLRDHUP | select.POLLHUP | select.POLLERR | select.POLLNVAL):
        return True
    if _POLLRDHUP:
        return False  # only bytes waiting: the client is still there
    return _peek_is_eof(raw)


def _select_probe(raw: _socket.socket, select_: Callable[..., Any]) -> bool:
    if raw.fileno() < 0:
        return True
    if not select_([raw], [], [], 0)[0]:
        return False
    return _peek_is_eof(raw)


def _peek_is_eof(raw: _socket.socket) -> bool:
    """Readable, without POLLRDHUP to tell why: peek at the TCP bytes.

    ``_socket.socket.recv`` reads the socket itself, below TLS (an
    ``SSLSocket`` refuses flags) and below gevent. A close that follows
    unread bytes stays unseen here until those bytes are read.
    """
    try:
        return _socket.socket.recv(raw, 1, _PEEK) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True  # reset
