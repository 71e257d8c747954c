"""The demo ``make run`` serves on http://127.0.0.1:8000/ (Flask + live_wsgi).

    gunicorn -c python:live_wsgi.gunicorn examples.demo:app

The page shows a live clock and a live log over server-sent events
(``EventSource``), a counter of open streams, and a button that downloads a
large CSV export via ``send_stream`` with a progress bar (the size is known).
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

from flask import Flask, request

from examples.csv_export import HEADER, ROW_SIZE, row
from live_wsgi import SSE, current_response, send_stream, signals
from live_wsgi.flask import Live, live

app = Flask(__name__)
live_ext = Live(app, max_workers=64)

DEFAULT_ROWS = 200_000


class LogFeed:
    """Recent log lines, and a condition producers wait on for new ones."""

    def __init__(self, size: int = 200) -> None:
        self._lines: collections.deque[tuple[int, str]] = collections.deque(maxlen=size)
        self._changed = threading.Condition()
        self._count = 0

    def add(self, line: str) -> None:
        with self._changed:
            self._count += 1
            self._lines.append((self._count, f"{time.strftime('%H:%M:%S')} {line}"))
            self._changed.notify_all()

    def since(self, seen: int, timeout: float) -> tuple[int, list[str]]:
        with self._changed:
            if self._count == seen:
                self._changed.wait(timeout)
            return self._count, [text for n, text in self._lines if n > seen]


feed = LogFeed()


@signals.stream_started.connect
def _log_started(sender: Any, method: str, path: str, **facts: Any) -> None:
    feed.add(f"{method} {path}: stream started")


@signals.stream_closed.connect
def _log_closed(sender: Any, path: str, status: str, bytes_sent: int, duration: float,
                outcome: str, **facts: Any) -> None:
    feed.add(f"{path}: {status}, {bytes_sent} bytes in {duration:.1f} s ({outcome})")


@app.get("/")
def index() -> str:
    rows = request.args.get("rows", DEFAULT_ROWS, type=int)
    return PAGE.replace("{rows}", str(rows))


@app.get("/clock")
@live
def clock() -> None:
    stream = current_response().stream
    sse = SSE(stream, event="tick", retry=2000)
    while True:
        sse.write({"time": time.strftime("%H:%M:%S"),
                   "open_streams": live_ext.middleware.active_streams})  # type: ignore[union-attr]
        if stream.wait(1.0):
            break
    if stream.shutting_down:
        sse.write("the server is restarting", event="bye")


@app.get("/log")
@live
def log() -> None:
    stream = current_response().stream
    sse = SSE(stream, event="log")
    seen = 0
    while not stream.wait(0):
        seen, lines = feed.since(seen, timeout=1.0)
        for line in lines:
            sse.write(line)


@app.get("/export.csv")
@live
def export() -> None:
    rows = min(request.args.get("rows", DEFAULT_ROWS, type=int), 5_000_000)
    with send_stream("export.csv", size=len(HEADER) + rows * ROW_SIZE) as stream:
        stream.write(HEADER)
        for start in range(0, rows, 512):
            stream.write(b"".join(row(i) for i in range(start, min(start + 512, rows))))


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>live_wsgi demo</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; }
  section { border: 1px solid #ddd; border-radius: 6px; padding: .5rem 1rem; margin: 1rem 0; }
  #clock { font-size: 2.5rem; font-variant-numeric: tabular-nums; margin: .2rem 0; }
  #log { font-family: monospace; font-size: .85rem; max-height: 14rem; overflow: auto; }
  progress { width: 20rem; }
</style></head>
<body>
<h1>live_wsgi demo</h1>
<p>Every box below is streamed from a worker thread while it is produced.
Routes: <code>/clock</code> and <code>/log</code> (server-sent events),
<code>/export.csv</code> (a download with a known size).</p>
<section><h2>Clock</h2><p id="clock">connecting&hellip;</p>
  <p>Updates received: <span id="ticks">0</span> &middot;
     open streams on the server: <span id="open-streams">?</span></p></section>
<section><h2>Live log</h2><ul id="log"></ul></section>
<section><h2>Export</h2>
  <button id="download" data-rows="{rows}">Download {rows} rows as CSV</button>
  <progress id="progress" value="0" max="100"></progress>
  <span id="download-status"></span></section>
<script>
const $ = (id) => document.getElementById(id);
const clock = new EventSource("/clock");
clock.addEventListener("tick", (e) => {
  const tick = JSON.parse(e.data);
  $("clock").textContent = tick.time;
  $("open-streams").textContent = tick.open_streams;
  $("ticks").textContent = Number($("ticks").textContent) + 1;
});
const log = new EventSource("/log");
log.addEventListener("log", (e) => {
  const item = document.createElement("li");
  item.textContent = e.data;
  $("log").prepend(item);
  while ($("log").children.length > 50) $("log").lastChild.remove();
});
$("download").addEventListener("click", async () => {
  const rows = $("download").dataset.rows;
  $("download-status").textContent = "downloading...";
  const response = await fetch("/export.csv?rows=" + rows);
  const total = Number(response.headers.get("Content-Length"));
  const reader = response.body.getReader();
  const parts = [];
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    received += value.length;
    $("progress").value = Math.round(100 * received / total);
  }
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob(parts, { type: "text/csv" }));
  link.download = "export.csv";
  link.click();
  $("download-status").textContent = `done: ${received} bytes`;
});
</script>
</body></html>
"""
