"""The demo ``make run`` serves on http://127.0.0.1:8000/ (Flask + live_wsgi).

    gunicorn -c python:live_wsgi.gunicorn examples.demo:app

The page shows a live clock and a live log over server-sent events
(``EventSource``), a counter of open streams, and a button that downloads a
large CSV export via ``send_stream`` with a progress bar (the size is known).

``/feed`` is a small chat fed by the broker (``live_wsgi.broadcast``): the
form POSTs a message, which ``broker.publish`` sends to every open feed, in
every worker that shares the broker. The feed is a *fan-out* response: no
producer code and no pool thread, the server thread drains the channel.
Pick the broker by URL (the in-process one by default)::

    LIVE_WSGI_BROKER=memory:// gunicorn -c python:live_wsgi.gunicorn examples.demo:app
"""

from __future__ import annotations

import collections
import os
import threading
import time
from typing import Any

from flask import Flask, jsonify, redirect, request

from examples.csv_export import HEADER, ROW_SIZE, row
from live_wsgi import SSE, current_response, send_stream, signals
from live_wsgi.broadcast import BrokerUnavailable, FanOutApp, broker_from_url
from live_wsgi.flask import Live, live

app = Flask(__name__)
live_ext = Live(app, max_workers=64)

DEFAULT_ROWS = 200_000

#: One broker per process; every worker that shares its URL shares the feed.
broker = broker_from_url(os.environ.get("LIVE_WSGI_BROKER", "memory://"))
FEED = "demo-feed"
#: The fan-out response for the feed: the browser comes back 2 s after a drop.
feed_stream = broker.sse_app(FEED, retry=2000)
MAX_NAME = 40
MAX_TEXT = 500


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


@app.get("/feed")
def feed_page() -> str:
    # The broker's newest id as the page is rendered: the first subscribe
    # starts exactly there, so a message posted between this render and the
    # EventSource's first connection is not lost.
    return FEED_PAGE.replace("{last_id}", broker.current_id(FEED))


@app.post("/feed")
def post_message() -> Any:
    name = request.form.get("name", "").strip()[:MAX_NAME] or "anonymous"
    text = request.form.get("text", "").strip()
    wants_json = request.accept_mimetypes.best == "application/json"
    if not text or len(text) > MAX_TEXT:
        error = f"a message is 1 to {MAX_TEXT} characters"
        return (jsonify(error=error), 400) if wants_json else (error, 400)
    try:
        message_id = broker.publish(
            FEED, {"name": name, "text": text, "time": time.strftime("%H:%M:%S")},
            event="chat")
    except BrokerUnavailable:
        # Fails fast while the broker is down; open feeds stay open meanwhile.
        error = "the message broker is unavailable, try again shortly"
        return (jsonify(error=error), 503) if wants_json else (error, 503)
    if wants_json:
        return jsonify(id=message_id), 201
    return redirect("/feed", code=303)  # a form posted without JavaScript


@app.get("/feed/events")
def feed_events() -> FanOutApp:
    # Not @live: the fan-out app needs no worker. Flask calls the WSGI app it
    # is handed (Response.force_type, unbuffered), the extension passes the
    # request straight through, and the server thread drains the channel.
    # Replay starts from Last-Event-ID, or the page's ?lastEventId=.
    return feed_stream


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
<code>/export.csv</code> (a download with a known size), and
<a href="/feed"><code>/feed</code></a>: a chat that every open page sees live,
fed by the broker.</p>
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

FEED_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>live_wsgi feed</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; }
  #feed { list-style: none; padding: 0; }
  #feed li { padding: .2rem 0; border-bottom: 1px solid #eee; }
  #feed .meta { color: #777; font-size: .8rem; margin-right: .5rem; }
  #feed-notice { color: #a40; }
</style></head>
<body>
<h1>Feed</h1>
<p>Every page open on <code>/feed</code> shows each message once, in order, live
(a fan-out stream of the broker's channel). Reload: the page resumes from the
last message it showed, with nothing missed and nothing twice.
<a href="/">Back to the demo</a>.</p>
<form id="feed-form" method="post" action="/feed">
  <input id="feed-name" name="name" placeholder="name" maxlength="40" size="10">
  <input id="feed-text" name="text" placeholder="message" maxlength="500" size="40" required>
  <button id="feed-send">Send</button>
  <span id="feed-error"></span>
</form>
<p>Status: <span id="feed-status">connecting&hellip;</span></p>
<p id="feed-notice"></p>
<ul id="feed" data-last-id="{last_id}"></ul>
<script>
const $ = (id) => document.getElementById(id);
const KEY = "live_wsgi.demo.feed";
// What this tab has shown, so a reload resumes instead of starting over.
const saved = JSON.parse(sessionStorage.getItem(KEY) || "null");
const state = saved || { lastId: $("feed").dataset.lastId, items: [] };
const save = () => sessionStorage.setItem(KEY, JSON.stringify(state));
function show(item) {
  const li = document.createElement("li");
  li.dataset.id = item.id;
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = `${item.time} ${item.name}`;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = item.text;
  li.append(meta, text);
  $("feed").append(li);
}
state.items.forEach(show);
// The first connection cannot send Last-Event-ID: the id goes in the query.
// Reconnects send the header, which the server prefers.
const source = new EventSource("/feed/events?lastEventId=" + encodeURIComponent(state.lastId));
source.onopen = () => { $("feed-status").textContent = "live"; };
source.onerror = () => { $("feed-status").textContent = "reconnecting..."; };
source.addEventListener("chat", (e) => {
  const item = { ...JSON.parse(e.data), id: e.lastEventId };
  show(item);
  state.items.push(item);
  state.items = state.items.slice(-100);
  state.lastId = e.lastEventId;
  save();
});
// History no longer reaches back to our last message (trimmed, expired, a
// broker restart): say so; the stream goes on from the current top.
source.addEventListener("stream-reset", (e) => {
  $("feed-notice").textContent = "Some messages could not be replayed: "
    + "the server no longer has them. The feed continues from here.";
  state.lastId = e.lastEventId;
  save();
});
$("feed-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("feed-error").textContent = "";
  try {
    const response = await fetch("/feed", {
      method: "POST", body: new FormData($("feed-form")),
      headers: { Accept: "application/json" } });
    if (response.ok) {
      $("feed-text").value = "";
    } else {
      $("feed-error").textContent = (await response.json()).error;
    }
  } catch (error) {
    $("feed-error").textContent = "not sent: the server cannot be reached";
  }
});
</script>
</body></html>
"""
