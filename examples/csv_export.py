"""A CSV export of 1,000,000 generated rows, streamed in constant memory.

    gunicorn --worker-class gthread --threads 16 examples.csv_export:app
    curl -o subscribers.csv http://127.0.0.1:8000/subscribers.csv

Rows have a fixed width, so the size is known up front: it is sent as
Content-Length and the browser shows real progress. Memory stays flat
because each write waits while the queue is full (backpressure).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from live_wsgi import LiveMiddleware, send_stream

HEADER = b"id,email,plan,amount_cents\n"
PLANS = (b"free ", b"pro  ", b"team ")
ROW_SIZE = len(b"0000000,user0000000@example.com,free ,00000\n")
DEFAULT_ROWS = 1_000_000


def row(i: int) -> bytes:
    return b"%07d,user%07d@example.com,%s,%05d\n" % (i, i, PLANS[i % 3], (i * 7919) % 100_000)


def export(environ: Any, start_response: Any) -> list[bytes]:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    rows = min(int(query.get("rows", [DEFAULT_ROWS])[0]), 9_999_999)
    size = len(HEADER) + rows * ROW_SIZE
    with send_stream("subscribers.csv", size=size) as stream:
        stream.write(HEADER)
        batch = []
        for i in range(rows):
            batch.append(row(i))
            if len(batch) == 512:  # ~22 KiB per write: fewer, larger writes
                stream.write(b"".join(batch))
                batch.clear()
        stream.write(b"".join(batch))
    return []


def router(environ: Any, start_response: Any) -> Any:
    if environ.get("PATH_INFO") == "/subscribers.csv":
        return export(environ, start_response)
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
    return [b'<a href="/subscribers.csv">Download 1,000,000 subscribers</a>\n']


app = LiveMiddleware(router, when=lambda environ: environ.get("PATH_INFO") == "/subscribers.csv")

if __name__ == "__main__":
    from werkzeug.serving import run_simple

    run_simple("127.0.0.1", 8000, app, threaded=True)
