"""The real-server tier: gunicorn gthread on loopback, raw-socket clients.

Chunks are proven to arrive one by one *while the producer runs*: the
producer writes chunk i, then waits for the client to acknowledge it through
a second request before producing chunk i+1.
"""

from __future__ import annotations

import socket
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from live_wsgi.body import HEARTBEAT, OPENING

from .realserver import (
    Response,
    Server,
    gunicorn,
    read_until_output,
    send_request,
    serve,
    stop,
)
from .support import WAIT
from .tls import LoopbackTLS

pytestmark = pytest.mark.timeout(60)

APP = "tests.apps.live_app:app"


def key() -> str:
    """A fresh name for one producer's events in the served app."""
    return uuid.uuid4().hex


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with gunicorn(APP) as srv:
        yield srv


SERVERS = ["gthread", "gevent", "waitress", "werkzeug"]


@pytest.fixture(scope="module", params=SERVERS)
def any_server(request: Any) -> Iterator[Server]:
    with serve(request.param, APP) as srv:
        yield srv


def test_chunks_arrive_one_by_one_on_every_server(any_server: Server) -> None:
    """SPEC 8.1: chunk by chunk on gunicorn gthread and gevent, waitress, Werkzeug."""
    k = key()
    response = any_server.get(f"/chunks?n=3&key={k}")
    assert response.status == 200
    for i in range(3):
        assert response.read_until(b"\n").endswith(f"chunk {i}\n".encode())
        any_server.get_json(f"/ack?key={k}&i={i}")
    assert response.next_chunk() is None and response.complete
    response.close()
    assert any_server.get_json(f"/result?key={k}")["outcome"] == "done"


def test_disconnect_frees_the_producer_on_every_server(any_server: Server) -> None:
    """SPEC 8.1, 4.1: a client that leaves frees its producer on every server."""
    k = key()
    response = any_server.get(f"/forever?key={k}&size=4096")
    assert response.next_chunk()
    response.close()
    result = any_server.get_json(f"/result?key={k}")
    assert result["outcome"] == "ClientDisconnected"
    assert result["idle"] is True and result["active"] == 0


def test_idle_producer_learns_of_a_close_behind_unread_bytes(any_server: Server) -> None:
    """SPEC 4.2: a client that sent half a pipelined request and then left is noticed by
    the probe alone (a CSV download: no heartbeat, no write), on every server."""
    _close_behind_unread_bytes(any_server)


def _close_behind_unread_bytes(server: Server) -> None:
    k = key()
    response = server.get(f"/idle-csv?key={k}")
    assert response.next_chunk() == b"id,value\n"
    response.sock.sendall(b"GET /next HTTP/1.1\r\n")  # never finished, never read
    response.close()
    # The producer waits up to 60 s; /result gives up long before that.
    result = server.get_json(f"/result?key={k}")
    assert result["outcome"] == "woke"
    assert result["connected"] is False
    assert result["idle"] is True and result["active"] == 0


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: Any) -> Iterator[Server]:
    """gunicorn gthread speaking TLS (``--certfile``/``--keyfile``), a cert made here."""
    tls = LoopbackTLS()
    certfile, keyfile = tls.write_files(tmp_path_factory.mktemp("tls"))
    with gunicorn(APP, "--certfile", certfile, "--keyfile", keyfile,
                  tls=tls.client_context()) as srv:
        yield srv


def test_tls_client_with_unread_bytes_keeps_its_stream(tls_server: Server) -> None:
    """SPEC 4.2: over TLS, bytes the client sent ahead (unread by the server) do not make
    the watcher call it gone: the stream goes on; its close then reaches the producer."""
    k = key()
    response = tls_server.get(f"/idle-sse?key={k}")
    response.read_until(b"data: hello\n\n")
    response.sock.sendall(b"GET /next HTTP/1.1\r\n")  # a TLS record the server leaves unread
    # The body hands its socket to the watcher at its first idle wait, before its first
    # heartbeat (live_app: every 0.5 s): these are sent while the record waits unread.
    for _ in range(3):
        assert response.next_chunk() == HEARTBEAT
    response.close()
    result = tls_server.get_json(f"/result?key={k}")
    assert result["outcome"] == "woke"
    assert result["connected"] is False
    assert result["idle"] is True and result["active"] == 0


def test_tls_idle_producer_learns_of_disconnect(tls_server: Server) -> None:
    """SPEC 4.2: over TLS the probe, never reading through TLS, sees a client that left,
    also behind bytes it sent ahead."""
    _close_behind_unread_bytes(tls_server)


def test_waitress_logs_a_client_leaving_an_idle_stream_as_info() -> None:
    """SPEC 5.3: a client that leaves an idle stream under waitress is an expected event:
    waitress logs it at INFO, never as an ERROR with a traceback."""
    with serve("waitress", APP, stderr=subprocess.PIPE, log_level="INFO") as srv:
        k = key()
        response = srv.get(f"/idle-sse?key={k}")
        response.read_until(b"data: hello\n\n")
        response.close()
        result = srv.get_json(f"/result?key={k}")
        assert result["outcome"] == "woke"  # the probe saw the client leave
        # waitress says how the request ended, in either case: "Client disconnected
        # while serving" (INFO), or "Exception while serving" (ERROR, traceback).
        output = read_until_output(srv.proc, "while serving /idle-sse")
        stop(srv.proc)
        assert srv.proc.stderr is not None
        output += srv.proc.stderr.read().decode()
    assert "INFO waitress: Client disconnected while serving /idle-sse" in output, output
    assert "ERROR" not in output and "Traceback" not in output, output


def test_event_stream_head_arrives_before_the_first_event(any_server: Server) -> None:
    """SPEC 2.1, 7.1: an event stream's status and headers reach the client at the commit,
    before any event (so EventSource.onopen fires), on every server: the body opens
    with an SSE comment line."""
    k = key()
    # The producer holds its first event until /ack (up to 10 s): the head must come
    # well before that, with no event and no heartbeat to carry it.
    sock = any_server.connect(timeout=WAIT / 2)
    send_request(sock, f"/sse-gate?key={k}")
    response = Response(sock)
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.next_chunk() == OPENING
    any_server.get_json(f"/ack?key={k}&i=0")
    assert response.read_all() == b"data: first\n\n"
    assert response.complete
    response.close()
    assert any_server.get_json(f"/result?key={k}")["outcome"] == "done"


def test_sync_worker_warns_once(tmp_path: Any) -> None:
    """SPEC 8.2: under gunicorn's sync worker live_wsgi warns, once."""
    log_path = tmp_path / "stderr.txt"
    with log_path.open("wb") as log_file, gunicorn(APP, "--worker-class", "sync",
                                                   stderr=log_file) as srv:
        for _ in range(3):
            response = srv.get("/iterable")
            assert response.read_all() == b"one\ntwo\nthree\n"
            response.close()
    output = log_path.read_text()
    assert output.count("not multithreaded") == 1, output


def test_sigterm_ends_200_streams_with_a_farewell() -> None:
    """SPEC 8.3: SIGTERM: every client gets the farewell and a clean end; master exits in time."""
    import signal
    import time

    grace = 2.0
    with gunicorn(APP, "--config", "python:live_wsgi.gunicorn", "--threads", "260",
                  env={"LIVE_WSGI_SHUTDOWN_GRACE": str(grace)}) as srv:
        responses = [srv.get("/farewell") for _ in range(200)]
        for response in responses:
            assert response.read_until(b"data: hello\n\n") == OPENING + b"data: hello\n\n"
        started = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        for response in responses:
            body = response.read_all()  # until the terminating chunk
            assert response.complete
            assert body.replace(b": heartbeat\n", b"") == (
                b"event: farewell\ndata: see you soon\n\n")
            response.close()
        srv.proc.wait(grace + 5)
        assert time.monotonic() - started < grace + 5
        assert srv.proc.returncode == 0


def test_chunks_arrive_one_by_one_while_producing(server: Server) -> None:
    """SPEC 1.2: each chunk reaches the client before the next one is produced."""
    k = key()
    response = server.get(f"/chunks?n=4&key={k}")
    assert response.status == 200
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.chunked
    for i in range(4):
        assert response.read_until(b"\n").endswith(f"chunk {i}\n".encode())
        server.get_json(f"/ack?key={k}&i={i}")  # lets the producer go on
    assert response.next_chunk() is None and response.complete
    response.close()
    result = server.get_json(f"/result?key={k}")
    assert result["outcome"] == "done"


def test_iterable_app_streams_complete_body(server: Server) -> None:
    """SPEC 3.4: a returned iterable ends with a complete chunked body."""
    response = server.get("/iterable")
    assert response.read_all() == b"one\ntwo\nthree\n"
    assert response.complete
    response.close()


def test_error_after_commit_cuts_the_connection(server: Server) -> None:
    """SPEC 5.2: after commit an error ends the body without its final chunk."""
    response = server.get("/fail-after-commit")
    assert response.status == 200
    body, complete = response.read_to_eof()
    response.close()
    assert body == b"partial body\n"
    assert complete is False


def test_stalled_client_trips_write_timeout(server: Server) -> None:
    """SPEC 3.2: a client that stops reading makes the producer's write time out."""
    k = key()
    sock = server.connect()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    send_request(sock, f"/forever?key={k}&size=65536")
    try:
        # Read nothing: kernel buffers fill, the queue fills, the write blocks.
        result = server.get_json(f"/result?key={k}")
    finally:
        sock.close()
    assert result["outcome"] == "WriteTimeout"
    assert result["idle"] is True


@pytest.mark.parametrize(("route", "first"), [
    ("/idle-sse", OPENING + b"data: hello\n\n"),
    ("/idle-csv", b"id,value\n"),
])  # fmt: skip
def test_idle_producer_learns_of_disconnect(server: Server, route: str, first: bytes) -> None:
    """SPEC 4.2, 3.6: a producer only in stream.wait(60) returns within 3 s of a disconnect."""
    k = key()
    response = server.get(f"{route}?key={k}")
    assert response.read_until(first) == first
    response.close()
    result = server.get_json(f"/result?key={k}")
    assert result["outcome"] == "woke"
    assert result["connected"] is False
    assert result["waited"] < 3.0
    assert result["idle"] is True and result["active"] == 0


def test_csv_route_never_gets_heartbeats(server: Server) -> None:
    """SPEC 4.2: a download's bytes are exactly what the producer wrote."""
    k = key()
    response = server.get(f"/idle-csv?key={k}")
    assert response.headers["content-type"] == "text/csv"
    assert response.next_chunk() == b"id,value\n"
    # The producer stays silent; anything else arriving now would be a
    # heartbeat. The server sends nothing, so the read times out.
    response.sock.settimeout(1.5)
    with pytest.raises(TimeoutError):
        response.next_chunk()
    response.close()
    assert server.get_json(f"/result?key={k}")["outcome"] == "woke"
