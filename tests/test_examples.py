"""The examples run as they are."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .realserver import gunicorn

pytestmark = pytest.mark.timeout(60)


def test_demo_page_and_streams_under_gunicorn() -> None:
    """SPEC 8.1: the demo serves its page, SSE clock and log, and a sized export."""
    from examples.csv_export import HEADER, ROW_SIZE

    with gunicorn("examples.demo:app", "--config", "python:live_wsgi.gunicorn") as server:
        page = server.get("/")
        assert page.status == 200
        html = page.read_all().decode()
        page.close()
        for route in ("/clock", "/log", "/export.csv", "EventSource"):
            assert route in html
        clock = server.get("/clock")
        assert clock.headers["content-type"] == "text/event-stream"
        assert clock.next_chunk() == b":\n"  # the opening comment: the head leaves at once
        first = clock.next_chunk()
        assert first is not None and b"event: tick" in first and b"open_streams" in first
        log = server.get("/log")
        assert b"/clock: stream started" in log.read_until(b"stream started\n\n")
        clock.close()
        log.close()
        export = server.get("/export.csv?rows=1000")
        assert export.headers["content-length"] == str(len(HEADER) + 1000 * ROW_SIZE)
        body = export.read_all()
        export.close()
        assert body.count(b"\n") == 1001


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _worker_pid(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def test_csv_export_streams_a_million_rows_in_constant_memory() -> None:
    """SPEC 7.2: 1,000,000 rows with a known size; the worker's memory stays flat."""
    from examples.csv_export import HEADER, ROW_SIZE, row

    with gunicorn("examples.csv_export:app") as server:
        warm = server.get("/subscribers.csv?rows=1000")
        warm.read_all()
        warm.close()
        worker = _worker_pid(server.proc.pid)
        before = _rss_kb(worker)
        response = server.get("/subscribers.csv")
        expected = len(HEADER) + 1_000_000 * ROW_SIZE
        assert response.headers["content-length"] == str(expected)
        assert response.headers["content-type"] == "text/csv"
        assert "subscribers.csv" in response.headers["content-disposition"]
        received = 0
        rows = 0
        peak = before
        tail = b""
        while received < expected:
            data = response.sock.recv(1 << 20) if not response.buffer else response.buffer
            response.buffer = b""
            assert data, "connection closed early"
            received += len(data)
            rows += data.count(b"\n")
            tail = (tail + data)[-200:]
            peak = max(peak, _rss_kb(worker))
        response.close()
        assert received == expected
        assert rows == 1_000_001
        assert tail.endswith(row(999_999))
        # The body is 44 MB; buffering it would show. Streaming keeps the
        # worker within a few queue-fulls of where it started.
        assert peak - before < 16_000, f"worker RSS grew by {peak - before} KiB"


def test_sse_clock_sends_ticks_and_resumes_from_last_event_id() -> None:
    """SPEC 7.1: the clock example streams tick events and honours Last-Event-ID."""
    import json

    from sseclient import SSEClient

    with gunicorn("examples.sse_clock:app") as server:
        page = server.get("/")
        assert b"EventSource" in page.read_all()
        page.close()
        response = server.get("/clock", headers={"Last-Event-ID": "41"})
        assert response.headers["content-type"] == "text/event-stream"

        def body() -> Any:
            while (chunk := response.next_chunk()) is not None:
                yield chunk

        events = SSEClient(body()).events()
        first = next(events)
        assert first.event == "tick" and first.id == "42" and first.retry == "2000"
        assert json.loads(first.data)["n"] == 42
        second = next(events)  # one second later
        assert second.id == "43"
        response.close()
