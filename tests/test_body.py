"""The server thread's side while idle: heartbeats and disconnect probes (SPEC 4.2, 3.6)."""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from live_wsgi import SSE, current_response, signals
from live_wsgi.body import HEARTBEAT, OPENING
from live_wsgi.probe import disconnect_probe

from .realserver import ROOT
from .support import WAIT, Recorder, chunks, open_stream, wait
from .tls import LoopbackTLS, tcp_pair

pytestmark = pytest.mark.timeout(30)


def test_heartbeat_on_silent_event_stream(live: Any) -> None:
    """SPEC 4.2: a silent text/event-stream gets heartbeat comments."""
    gate = threading.Event()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        sse = SSE(current_response().stream)
        sse.write("hello")
        wait(gate, "gate")
        sse.write("bye")
        return []

    mw = live(app, heartbeat=0.05)
    started = open_stream(mw)
    body = chunks(started)
    assert next(body) == OPENING
    assert next(body) == b"data: hello\n\n"
    assert next(body) == HEARTBEAT  # the producer is silent until the gate opens
    assert next(body) == HEARTBEAT
    gate.set()
    rest = b"".join(body)
    started.close()
    assert rest.replace(HEARTBEAT, b"") == b"data: bye\n\n"


def test_per_response_heartbeat_override_and_none(live: Any) -> None:
    """SPEC 4.2: response.heartbeat overrides the middleware's; None disables."""
    gate = threading.Event()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        response = current_response()
        response.heartbeat = 0.05 if environ["PATH_INFO"] == "/fast" else None
        sse = SSE(response.stream)
        sse.write("x")
        wait(gate, "gate")
        return []

    mw = live(app, heartbeat=None)
    started = open_stream(mw, "/fast")
    body = chunks(started)
    assert next(body) == OPENING
    assert next(body) == b"data: x\n\n"
    assert next(body) == HEARTBEAT
    gate.set()
    started.close()
    assert mw.wait_idle(10)


def test_no_heartbeat_inside_a_half_written_line(live: Any) -> None:
    """SPEC 4.2: a heartbeat never lands inside a line the producer is writing."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        stream = current_response().stream
        SSE(stream)
        stream.write(b"data: half")
        # Silent for ~10 heartbeat periods while the server thread iterates.
        stream.wait(0.2)
        stream.write(b" line\n\n")
        return []

    started = open_stream(live(app, heartbeat=0.02, write_timeout=None))
    body = b"".join(chunks(started))
    started.close()
    assert body.startswith(OPENING + b"data: half line\n\n")


def test_no_heartbeat_for_other_content_types(live: Any) -> None:
    """SPEC 4.2: a CSV download never gets heartbeat bytes."""
    gate = threading.Event()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        current_response().headers["Content-Type"] = "text/csv"
        stream = current_response().stream
        stream.write(b"a,b\n")
        # Hold the producer silent: a heartbeat would show up in the body.
        stream.wait(0.3)
        gate.set()
        stream.write(b"1,2\n")
        return []

    started = open_stream(live(app, heartbeat=0.02))
    assert b"".join(chunks(started)) == b"a,b\n1,2\n"
    started.close()
    assert gate.is_set()


def test_event_stream_opens_before_its_first_event(live: Any) -> None:
    """SPEC 2.1, 7.1: an event stream committed with no event yet hands the server a first
    chunk at once (an SSE comment line), so the head reaches the client while the producer
    still waits; no heartbeat needed."""
    gate = threading.Event()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        stream = current_response().stream
        sse = SSE(stream)
        stream.write(b"")  # the commit
        wait(gate, "gate")
        sse.write("first")
        return []

    started = open_stream(live(app, heartbeat=None, probe_interval=None))
    body = chunks(started)
    first: list[bytes] = []
    reader = threading.Thread(target=lambda: first.append(next(body)))
    reader.start()
    reader.join(WAIT / 2)  # well within the producer's own wait for the gate
    gate.set()  # whatever happened, let the producer finish
    reader.join(WAIT)
    assert first == [OPENING]
    assert b"".join(body) == b"data: first\n\n"
    started.close()


def test_opening_comment_is_its_own_first_chunk(live: Any) -> None:
    """SPEC 7.1: the opening comment comes first and alone while the body streams,
    whether or not an event was already queued at the commit; the events follow byte
    for byte."""
    gate = threading.Event()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        SSE(current_response().stream).write("hello")  # commits with the event queued
        gate.wait(WAIT)  # still streaming when the server thread takes the body
        return []

    started = open_stream(live(app))
    body = chunks(started)
    assert next(body) == OPENING
    gate.set()
    assert b"".join(body) == b"data: hello\n\n"
    started.close()


def test_a_body_complete_at_the_commit_still_opens_with_the_comment(live: Any) -> None:
    """SPEC 7.1: an event stream whose whole body was queued by the time the server
    thread took it leaves as one chunk, the opening comment first."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        SSE(current_response().stream).write("hello")
        return []

    mw = live(app)
    body = mw({"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.multithread": True},
              lambda status, headers, exc_info=None: None)
    assert mw.wait_idle(WAIT)
    assert b"".join(body) == OPENING + b"data: hello\n\n"
    body.close()  # type: ignore[attr-defined]


def test_no_opening_comment_in_a_declared_length(live: Any) -> None:
    """SPEC 2.3: an event stream of a length the app declared gets no extra byte."""
    event = b"data: sized\n\n"

    def app(environ: Any, start_response: Any) -> list[bytes]:
        response = current_response()
        response.headers["Content-Type"] = "text/event-stream"
        response.content_length = len(event)
        response.stream.write(event)
        return []

    started = open_stream(live(app))
    assert started.headers["Content-Length"] == str(len(event))
    assert b"".join(chunks(started)) == event
    started.close()


def _socket_environ() -> tuple[dict[str, Any], socket.socket]:
    server_side, client_side = socket.socketpair()
    environ = {"gunicorn.socket": server_side, "SERVER_PROTOCOL": "HTTP/1.1"}
    return environ, client_side


def test_probe_sees_a_closed_client() -> None:
    """SPEC 4.2: the probe reads nothing, and tells a closed client from an idle one."""
    environ, client = _socket_environ()
    probe = disconnect_probe(environ)
    assert probe is not None
    assert probe() is False  # connected, idle
    client.sendall(b"GET /next HTTP/1.1\r\n")  # a pipelined request is no disconnect
    assert probe() is False
    assert environ["gunicorn.socket"].recv(100) == b"GET /next HTTP/1.1\r\n"  # untouched
    client.close()
    assert probe() is True
    environ["gunicorn.socket"].close()


@pytest.fixture(params=["tcp", "tls"])
def connection(request: Any) -> Iterator[tuple[socket.socket, socket.socket]]:
    """(server side, client side) of a loopback connection, plain TCP or TLS."""
    pair: tuple[socket.socket, socket.socket]
    pair = tcp_pair() if request.param == "tcp" else LoopbackTLS().connected_pair()
    yield pair
    for sock in pair:
        sock.close()


def _probe_for(sock: socket.socket) -> Callable[[], bool]:
    probe = disconnect_probe({"gunicorn.socket": sock, "SERVER_PROTOCOL": "HTTP/1.1"})
    assert probe is not None
    return probe


def _wait_readable(sock: socket.socket) -> None:
    """Until bytes the peer sent have reached ``sock`` (loopback is not instant)."""
    assert select.select([sock], [], [], WAIT)[0], "the client's bytes never arrived"


def _eventually(check: Callable[[], bool], what: str) -> None:
    """Until ``check()`` holds, within the suite's deadline."""
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"timed out after {WAIT} s waiting for {what}"
        select.select([], [], [], 0.01)


def test_probe_leaves_a_client_with_pending_bytes_connected(
    connection: tuple[socket.socket, socket.socket],
) -> None:
    """SPEC 4.2: bytes waiting from the client (a pipelined request; a TLS record) are no
    disconnect, over TLS too, and the probe reads none of them."""
    server, client = connection
    probe = _probe_for(server)
    assert probe() is False
    client.sendall(b"GET /next HTTP/1.1\r\n")  # half of the next request
    _wait_readable(server)
    assert probe() is False
    assert probe() is False
    received = b""
    while len(received) < 20:  # through TLS where it is TLS: nothing was consumed
        received += server.recv(20 - len(received))
    assert received == b"GET /next HTTP/1.1\r\n"


def test_probe_sees_a_client_that_closed_behind_pending_bytes(
    connection: tuple[socket.socket, socket.socket],
) -> None:
    """SPEC 4.2: a client that sent half a request and then closed is gone, though its
    bytes are still unread."""
    server, client = connection
    probe = _probe_for(server)
    client.sendall(b"GET /next HTTP/1.1\r\n")
    client.close()
    _eventually(probe, "the probe to see the client's close")


def test_probe_sees_a_client_that_closed(
    connection: tuple[socket.socket, socket.socket],
) -> None:
    """SPEC 4.2: a client that closed an idle connection is gone, over TLS too."""
    server, client = connection
    probe = _probe_for(server)
    assert probe() is False
    client.close()
    _eventually(probe, "the probe to see the client's close")


GEVENT_PROBE = """
import json, socket
from gevent import monkey
monkey.patch_all()
import gevent
from live_wsgi.probe import disconnect_probe

server, client = socket.socketpair()
probe = disconnect_probe({"gunicorn.socket": server, "SERVER_PROTOCOL": "HTTP/1.1"})
switched = []
gevent.spawn(switched.append, True)  # runs only if something yields to the hub
results = [probe()]
client.sendall(b"GET /next HTTP/1.1\\r\\n")
results.append(probe())
client.close()
results.append(probe())
print(json.dumps({"results": results, "yielded": bool(switched)}))
"""


def test_probe_never_yields_under_gevent() -> None:
    """SPEC 4.2: under gevent's monkey-patching the probe runs to its answer without
    yielding to the hub, and still sees a close behind pending bytes."""
    done = subprocess.run([sys.executable, "-c", GEVENT_PROBE], cwd=ROOT, timeout=WAIT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"results": [False, False, True], "yielded": False}


def test_probe_uses_waitress_check_and_skips_http2() -> None:
    """SPEC 4.2: waitress's client_disconnected is used; no socket probe over HTTP/2."""
    flag = {"gone": False}
    probe = disconnect_probe({"waitress.client_disconnected": lambda: flag["gone"]})
    assert probe is not None and probe() is False
    flag["gone"] = True
    assert probe() is True
    environ, client = _socket_environ()
    environ["SERVER_PROTOCOL"] = "HTTP/2"
    assert disconnect_probe(environ) is None
    client.close()
    environ["gunicorn.socket"].close()


def test_idle_producer_learns_of_disconnect_without_writes(live: Any) -> None:
    """SPEC 3.6, 4.2: stream.wait() returns True once the probe sees the client gone."""
    seen = Recorder()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        current_response().headers["Content-Type"] = "text/csv"
        stream = current_response().stream
        stream.write(b"header\n")
        seen["woken"] = stream.wait(30)
        seen["connected"] = stream.connected
        return []

    environ, client = _socket_environ()
    mw = live(app, probe_interval=0.05)

    def call() -> Any:
        from werkzeug.test import EnvironBuilder

        full = EnvironBuilder("/").get_environ()
        full.update(environ, **{"wsgi.multithread": True})
        return mw(full, lambda status, headers, exc_info=None: None)

    body = call()
    iterator = iter(body)
    assert next(iterator) == b"header\n"
    client.close()  # the client leaves; the producer writes nothing more
    leftover = list(iterator)  # the server thread's probe notices and ends the body
    body.close()
    assert mw.wait_idle(10)
    assert leftover == []
    assert seen["woken"] is True and seen["connected"] is False
    environ["gunicorn.socket"].close()


def test_next_on_a_finished_body_keeps_raising_stop_iteration(live: Any) -> None:
    """SPEC 3.4: next() on a live body that has ended raises StopIteration again,
    never blocks."""
    gate = threading.Event()

    def app(environ: Any, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"do"
        gate.wait(WAIT)  # still streaming when the server thread takes the body
        yield b"ne"

    mw = live(app)
    body = mw({"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.multithread": True},
              lambda status, headers, exc_info=None: None)
    gate.set()
    assert b"".join(body) == b"done"
    for _ in range(3):
        with pytest.raises(StopIteration):
            next(body)  # type: ignore[call-overload]
    body.close()  # type: ignore[attr-defined]


def test_a_bodiless_response_closes_once(live: Any) -> None:
    """SPEC 2.5, 7.3: NoBody.close() is idempotent: stream_closed is sent once."""
    closed = []
    mw = live(lambda environ, sr: [b"ignored"])
    # With a receiver, the server thread hands over a body that reports its close.
    with signals.stream_closed.connected_to(lambda sender, **facts: closed.append(facts)):
        body = mw({"REQUEST_METHOD": "HEAD", "PATH_INFO": "/", "wsgi.multithread": True},
                  lambda status, headers, exc_info=None: None)
        assert list(body) == []
        body.close()  # type: ignore[attr-defined]
        body.close()  # type: ignore[attr-defined]
    assert len(closed) == 1


def test_body_ends_quietly_when_waitress_says_the_client_left(live: Any) -> None:
    """SPEC 5.3: once waitress's own check says the client left, the body just ends:
    no ResponseAborted for the server to log as an error (there is nothing to cut)."""
    gone = threading.Event()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        stream = current_response().stream
        SSE(stream).write("hello")
        stream.wait(30)  # idle: only the probe can tell the client left
        return []

    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder("/").get_environ()
    environ.update({"wsgi.multithread": True, "waitress.client_disconnected": gone.is_set})
    mw = live(app, probe_interval=0.05)
    body = mw(environ, lambda status, headers, exc_info=None: None)
    iterator = iter(body)
    assert next(iterator) == OPENING
    assert next(iterator) == b"data: hello\n\n"
    gone.set()
    assert list(iterator) == []  # ended, not raised
    body.close()
    assert mw.wait_idle(10)
