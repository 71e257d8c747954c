"""The demo ``make run`` serves on http://127.0.0.1:8000/ (Flask + live_wsgi).

    gunicorn -c python:live_wsgi.gunicorn examples.demo:app

The page has a panel per feature, each saying which part of live_wsgi it
uses: a live clock in the server's time zone and a live log, both over
server-sent events (``EventSource``); a counter of open streams; and a CSV
export via ``send_stream`` with a declared size, paced over a few seconds so
its progress bar visibly fills, downloadable in the page (``fetch``, with the
bar) or natively (a plain ``<a download>`` link, the browser's own progress).
``/?rows=20000&seconds=1`` makes the export smaller or faster (``seconds=0``:
unpaced). The docs links lead into the documentation site under ``/docs/``,
served from ``docs/_build/html`` once ``make docs`` has built it.

``/feed`` is a small chat fed by the broker (``live_wsgi.broadcast``): the
form POSTs a message, which ``broker.publish`` sends to every open feed, in
every worker that shares the broker. The feed is a *fan-out* response: no
producer code and no pool thread, the server thread drains the channel.
Pick the broker by URL (the in-process one by default)::

    LIVE_WSGI_BROKER=memory:// gunicorn -c python:live_wsgi.gunicorn examples.demo:app

With several workers, share a Redis (``memory://`` would give each worker a
feed of its own); every feed response names its worker in ``X-Worker-PID``::

    LIVE_WSGI_BROKER=redis://127.0.0.1:6379/0 \
        gunicorn -w 2 -c python:live_wsgi.gunicorn examples.demo:app
"""

from __future__ import annotations

import collections
import math
import os
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, redirect, request, send_from_directory

from examples.csv_export import HEADER, ROW_SIZE, row
from live_wsgi import SSE, current_response, send_stream, signals
from live_wsgi.broadcast import BrokerUnavailable, FanOutApp, broker_from_url
from live_wsgi.flask import Live, live

app = Flask(__name__)
live_ext = Live(app, max_workers=64)

#: The default export: 200,000 rows (8.8 MB) paced over 4 seconds, so the
#: progress bar is seen to fill even on loopback, where it would take a blink.
DEFAULT_ROWS = 200_000
DEFAULT_SECONDS = 4.0
MAX_ROWS = 5_000_000
MAX_SECONDS = 60.0
#: Rows per write: ~22 KiB, fewer and larger writes.
BATCH = 512

#: The documentation site once ``make docs`` has built it; served under /docs/
#: so the page's links work as they are.
DOCS_HTML = Path(__file__).resolve().parent.parent / "docs" / "_build" / "html"

#: One broker per process; every worker that shares its URL shares the feed.
broker = broker_from_url(os.environ.get("LIVE_WSGI_BROKER", "memory://"))
FEED = "demo-feed"
#: The fan-out response for the feed: the browser comes back 2 s after a drop.
feed_stream = broker.sse_app(FEED, retry=2000)
MAX_NAME = 40
MAX_TEXT = 500


def zone_key() -> str | None:
    """The server's IANA time zone name (``Europe/Paris``), if it has one: ``TZ``,
    else where ``/etc/localtime`` links into the zoneinfo tree."""
    where = os.environ.get("TZ", "").lstrip(":") or os.path.realpath("/etc/localtime")
    _, found, key = where.rpartition("zoneinfo/")
    if found:
        return key or None
    return None if where.startswith("/") else where


def zone_label(now: datetime, key: str | None) -> str:
    """``now``'s zone spelt out, with its offset: ``Asia/Kolkata (IST, UTC+05:30)``."""
    offset = now.strftime("%z")  # "+0530"
    utc = f"UTC{offset[:3]}:{offset[3:5]}"
    key = key or now.tzname() or utc
    others = [name for name in (now.tzname(), utc) if name and name != key]
    return f"{key} ({', '.join(others)})" if others else key


#: Read once: the zone's name does not change while the server runs (its
#: abbreviation and offset may, at a DST change: those are read per tick).
ZONE_KEY = zone_key()


def server_zone() -> str:
    return zone_label(datetime.now().astimezone(), ZONE_KEY)


def export_args() -> tuple[int, float]:
    """The export's ``rows`` and ``seconds`` from the query, within bounds."""
    rows = request.args.get("rows", DEFAULT_ROWS, type=int)
    seconds = request.args.get("seconds", DEFAULT_SECONDS, type=float)
    if math.isnan(seconds):
        seconds = DEFAULT_SECONDS
    return max(0, min(rows, MAX_ROWS)), max(0.0, min(seconds, MAX_SECONDS))


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
    rows, seconds = export_args()
    size = len(HEADER) + rows * ROW_SIZE
    page = PAGE.replace("{css}", CSS)
    for name, value in {
        "export_url": f"/export.csv?rows={rows}&amp;seconds={seconds:g}",
        "rows": f"{rows:,}",
        "size": f"{size / 1e6:.1f} MB",
        "seconds": f"{seconds:g}",
        "zone": server_zone(),
    }.items():
        page = page.replace("{" + name + "}", value)
    return page


@app.get("/docs/")
@app.get("/docs/<path:path>")
def docs(path: str = "index.html") -> Any:
    # send_from_directory answers 404 for a path outside the directory.
    if not DOCS_HTML.is_dir():
        return DOCS_MISSING.replace("{css}", CSS), 404
    return send_from_directory(DOCS_HTML, path)


@app.after_request
def _name_the_worker(response: Response) -> Response:
    # Which gunicorn worker answered a feed request: with several workers (and
    # a shared broker) a page's stream and a post may each land on any of
    # them, and this shows it (the cross-worker browser test relies on it).
    if request.path.startswith("/feed"):
        response.headers["X-Worker-PID"] = str(os.getpid())
    return response


@app.get("/feed")
def feed_page() -> str:
    # The broker's newest id as the page is rendered: the first subscribe
    # starts exactly there, so a message posted between this render and the
    # EventSource's first connection is not lost.
    return FEED_PAGE.replace("{css}", CSS).replace("{last_id}", broker.current_id(FEED))


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
        now = datetime.now().astimezone()
        sse.write({"time": now.strftime("%H:%M:%S"), "date": now.strftime("%a %d %b %Y"),
                   "zone": zone_label(now, ZONE_KEY),
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
    rows, seconds = export_args()
    batches = range(0, rows, BATCH)
    with send_stream("export.csv", size=len(HEADER) + rows * ROW_SIZE) as stream:
        stream.write(HEADER)
        started = time.monotonic()
        for n, start in enumerate(batches):
            # Paced: batch n leaves n/len(batches) of the way through. wait()
            # returns early if the client left (the next write then raises
            # ClientDisconnected) or the server shuts down (no more pacing).
            stream.wait(max(0.0, started + seconds * n / len(batches) - time.monotonic()))
            stream.write(b"".join(row(i) for i in range(start, min(start + BATCH, rows))))



#: Shared by the pages: plain CSS, system fonts, light and dark.
CSS = """
  :root { --bg: #f5f6f8; --panel: #fff; --ink: #1b2130; --muted: #5b6577; --line: #dde2ea;
          --accent: #0a6c4f; --accent-soft: #e3f2ec; --code: #eef1f5; --warn: #9a4a00; }
  @media (prefers-color-scheme: dark) {
    :root { --bg: #14171c; --panel: #1c2027; --ink: #e4e8ee; --muted: #98a2b3;
            --line: #2d333d; --accent: #4cc79a; --accent-soft: #1d3a30; --code: #242a33;
            --warn: #f0a35e; }
  }
  * { box-sizing: border-box; }
  body { margin: 0; background: var(--bg); color: var(--ink);
         font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
  .wrap { max-width: 66rem; margin: 0 auto; padding: 1.75rem 1.25rem 2.5rem; }
  a { color: var(--accent); }
  code { font: .86em ui-monospace, "SF Mono", Menlo, Consolas, monospace;
         background: var(--code); padding: .05rem .3rem; border-radius: 4px; }
  header h1 { margin: 0; font-size: 1.75rem; letter-spacing: -.01em; }
  header h1 span { color: var(--muted); font-weight: 400; }
  .lede { color: var(--muted); margin: .4rem 0 .8rem; max-width: 50rem; }
  nav { display: flex; flex-wrap: wrap; gap: .4rem 1.2rem; font-size: .95rem; }
  .grid { display: grid; grid-template-columns: repeat(3, 1fr); gap: 1rem; margin-top: 1.4rem; }
  .span2 { grid-column: span 2; }
  .span3 { grid-column: 1 / -1; }
  @media (max-width: 52rem) { .grid { grid-template-columns: 1fr; }
                              .span2, .span3 { grid-column: auto; } }
  .panel { background: var(--panel); border: 1px solid var(--line); border-radius: 10px;
           padding: 1rem 1.2rem; display: flex; flex-direction: column; gap: .55rem; }
  :where(.panel > p) { margin: 0; }
  .panel h2 { margin: 0; font-size: 1.05rem; display: flex; align-items: center;
              justify-content: space-between; gap: .5rem; }
  .tag { font: 600 .72rem/1 ui-monospace, Menlo, Consolas, monospace; white-space: nowrap;
         color: var(--accent); background: var(--accent-soft); padding: .3rem .5rem;
         border-radius: 999px; }
  .about { color: var(--muted); font-size: .9rem; margin: 0; }
  .docs { font-size: .85rem; margin: auto 0 0; padding-top: .3rem; }
  .docs a::after { content: " \\2192"; }
  .figure { font: 600 3.1rem/1.1 ui-monospace, "SF Mono", Menlo, Consolas, monospace;
            font-variant-numeric: tabular-nums; margin: .1rem 0 0; }
  .meta { color: var(--muted); font-size: .85rem; margin: 0; }
  #clock-zone { color: var(--ink); font-weight: 600; }
  #log { font: .8rem/1.5 ui-monospace, Menlo, Consolas, monospace; list-style: none;
         margin: 0; padding: .5rem .7rem; height: 9rem; overflow: auto;
         background: var(--code); border-radius: 6px; }
  #log li { white-space: pre-wrap; overflow-wrap: anywhere; }
  .actions { display: flex; flex-wrap: wrap; align-items: center; gap: .6rem; }
  .button { font: inherit; font-size: .95rem; font-weight: 600; padding: .45rem .95rem;
            border-radius: 6px; border: 1px solid var(--accent); background: var(--accent);
            color: var(--panel); cursor: pointer; text-decoration: none; display: inline-block; }
  .button.quiet { background: transparent; color: var(--accent); }
  .button:disabled { opacity: .6; cursor: progress; }
  progress { width: 100%; height: .8rem; accent-color: var(--accent); }
  .status { font-size: .9rem; font-variant-numeric: tabular-nums; min-height: 1.4em; margin: 0; }
  footer { color: var(--muted); font-size: .85rem; margin-top: 1.6rem; padding-top: 1rem;
           border-top: 1px solid var(--line); }
  input { font: inherit; padding: .4rem .6rem; border: 1px solid var(--line); border-radius: 6px;
          background: var(--bg); color: var(--ink); }
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>live_wsgi demo</title>
<style>{css}</style></head>
<body><div class="wrap">
<header>
  <h1>live_wsgi <span>demo</span></h1>
  <p class="lede">A Flask app under gunicorn. Each panel is a response streamed
  <em>while it is produced</em>: the view runs on a live_wsgi worker thread, and the
  server thread sends each write as it comes (the browser's network tab shows them).</p>
  <nav>
    <a href="/docs/">Documentation</a>
    <a href="/docs/quickstart.html">Quickstart</a>
    <a href="/docs/how-it-works.html#which-thread-runs-what">Which thread runs what</a>
    <a href="/docs/serving.html#gunicorn">Serving with gunicorn</a>
    <a href="/feed">The feed (a live chat)</a>
  </nav>
</header>
<main class="grid">
<section class="panel span2" id="clock-panel">
  <h2>Clock <span class="tag">@live + SSE</span></h2>
  <p class="about">A <code>@live</code> view on <code>/clock</code> writes a server-sent
  event each second with <code>SSE(stream)</code>; between ticks it sleeps in
  <code>stream.wait(1.0)</code>, which wakes at once when you close the tab.</p>
  <p class="figure" id="clock">--:--:--</p>
  <p class="meta">Server time zone: <span id="clock-zone">{zone}</span>
    &middot; <span id="clock-date"></span></p>
  <p class="meta">Updates received: <span id="ticks">0</span></p>
  <p class="docs"><a href="/docs/toolkit.html#server-sent-events">Server-sent events</a></p>
</section>
<section class="panel" id="streams-panel">
  <h2>Open streams <span class="tag">active_streams</span></h2>
  <p class="figure" id="open-streams">?</p>
  <p class="about">Live requests on the worker pool
  (<code>middleware.active_streams</code>), sent with each tick. This page holds two,
  the clock and the log; a download adds one while it runs.</p>
  <p class="docs"><a href="/docs/how-it-works.html#which-thread-runs-what">Which thread
  runs what</a></p>
</section>
<section class="panel span2" id="log-panel">
  <h2>Live log <span class="tag">signals</span></h2>
  <p class="about">Handlers on the <code>stream_started</code> and
  <code>stream_closed</code> signals note every stream's start and end (status, bytes,
  duration, outcome); a second <code>@live</code> SSE view, <code>/log</code>, streams
  the lines as they are noted. Newest first.</p>
  <ul id="log"></ul>
  <p class="docs"><a href="/docs/toolkit.html#signals">Signals</a></p>
</section>
<section class="panel" id="feed-panel">
  <h2>Feed <span class="tag">broker fan-out</span></h2>
  <p class="about">A chat: a post goes through <code>broker.publish</code> to every
  open feed page, in every worker sharing the broker. Each page's stream is a fan-out
  response, with no pool thread; a reload resumes where the page left off.</p>
  <p><a class="button" id="feed-link" href="/feed">Open the feed</a></p>
  <p class="docs"><a href="/docs/broadcasting.html#the-fan-out-response">The fan-out
  response</a></p>
</section>
<section class="panel span3" id="export-panel">
  <h2>CSV export <span class="tag">send_stream(size=...)</span></h2>
  <p class="about">{rows} rows ({size}), produced on a worker as they are sent and paced
  over {seconds} s so the progress is seen to move. <code>send_stream("export.csv",
  size=...)</code> declares the length up front, so the browser knows how far along it
  is; each write waits while the client is behind, so memory stays flat however large
  the export.</p>
  <div class="actions">
    <button class="button" id="download" data-url="{export_url}">Download in the page</button>
    <a class="button quiet" id="download-link" href="{export_url}" download="export.csv">Download
      natively</a>
  </div>
  <progress id="progress" value="0" max="100"></progress>
  <p class="status" id="download-status"></p>
  <p class="meta">The button reads the response with <code>fetch()</code> and fills the
  bar above; the link is a plain <code>&lt;a download&gt;</code> to the same route, and
  the browser shows its progress in its own downloads list.</p>
  <p class="docs"><a href="/docs/toolkit.html#downloads">Downloads</a></p>
</section>
</main>
<footer>Served by <code>make run</code>: gunicorn's <code>gthread</code> worker with
<code>-c python:live_wsgi.gunicorn</code>, <code>examples/demo.py</code>. The docs links
lead into the documentation site, which this demo serves under <code>/docs/</code> once
<code>make docs</code> has built it; each is also a section of <code>README.rst</code>.
</footer>
</div>
<script>
const $ = (id) => document.getElementById(id);
const clock = new EventSource("/clock");
clock.addEventListener("tick", (e) => {
  const tick = JSON.parse(e.data);
  $("clock").textContent = tick.time;
  $("clock-date").textContent = tick.date;
  $("clock-zone").textContent = tick.zone;
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
const megabytes = (bytes) => (bytes / 1e6).toFixed(1);
$("download").addEventListener("click", async () => {
  $("download").disabled = true;
  $("progress").value = 0;
  $("download-status").textContent = "downloading...";
  try {
    const response = await fetch($("download").dataset.url);
    if (!response.ok) throw new Error(`the server answered ${response.status}`);
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
      $("download-status").textContent =
        `${megabytes(received)} of ${megabytes(total)} MB (${$("progress").value}%)`;
    }
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob(parts, { type: "text/csv" }));
    link.download = "export.csv";
    link.click();
    $("download-status").textContent =
      `done: ${received.toLocaleString("en")} bytes, saved as export.csv`;
  } catch (error) {
    $("download-status").textContent = `failed: ${error.message}`;
  } finally {
    $("download").disabled = false;
  }
});
</script>
</body></html>
"""

FEED_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>live_wsgi feed</title>
<style>{css}
  .wrap { max-width: 46rem; }
  #feed-form { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; }
  #feed-text { flex: 1; min-width: 12rem; }
  #feed-error { color: var(--warn); font-size: .9rem; }
  #feed-notice { color: var(--warn); margin: 0; }
  #feed-notice:empty { display: none; }
  #feed { list-style: none; padding: 0; margin: 0; }
  #feed li { padding: .4rem 0; border-bottom: 1px solid var(--line); }
  #feed li:last-child { border-bottom: 0; }
  #feed:empty::before { content: "No messages yet: say something."; color: var(--muted); }
  #feed .meta { display: inline; margin-right: .6rem; }
</style></head>
<body><div class="wrap">
<header>
  <h1>live_wsgi <span>feed</span></h1>
  <p class="lede">Every page open on <code>/feed</code> shows each message once, in
  order, live: a fan-out stream of the broker's channel. Open it in a second tab and
  post. Reload: the page resumes from the last message it showed, with nothing missed
  and nothing twice.</p>
  <nav>
    <a href="/">&larr; Back to the demo</a>
    <a href="/docs/broadcasting.html#the-fan-out-response">The fan-out response</a>
    <a href="/docs/broadcasting.html#resume-and-reset">Resume and reset</a>
  </nav>
</header>
<main class="grid">
<section class="panel span3">
  <h2>Post <span class="tag">broker.publish</span></h2>
  <form id="feed-form" method="post" action="/feed">
    <input id="feed-name" name="name" placeholder="name" maxlength="40" size="10">
    <input id="feed-text" name="text" placeholder="message" maxlength="500" size="40" required>
    <button class="button" id="feed-send">Send</button>
    <span id="feed-error"></span>
  </form>
</section>
<section class="panel span3">
  <h2>Messages <span class="tag" id="feed-status">connecting&hellip;</span></h2>
  <p id="feed-notice"></p>
  <ul id="feed" data-last-id="{last_id}"></ul>
</section>
</main>
</div>
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

DOCS_MISSING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>live_wsgi docs: not built</title>
<style>{css}
  .wrap { max-width: 46rem; }
</style></head>
<body><div class="wrap">
<header><h1>live_wsgi <span>docs</span></h1></header>
<main class="grid"><section class="panel span3">
  <h2>The documentation site is not built here yet</h2>
  <p>Run <code>make docs</code> in the checkout, then reload this page: the demo serves
  the site from <code>docs/_build/html</code>.</p>
  <p>Meanwhile the same text is in <code>README.rst</code>:
  <span id="section">the docs index is its table of contents.</span></p>
  <p><a href="/">&larr; Back to the demo</a></p>
</section></main>
</div>
<script>
// The section the link pointed at (the fragment never reaches the server).
if (location.hash.length > 1) {
  const words = decodeURIComponent(location.hash.slice(1)).replace(/-/g, " ");
  document.getElementById("section").textContent =
    `look for the section \\u201c${words}\\u201d.`;
}
</script>
</body></html>
"""
