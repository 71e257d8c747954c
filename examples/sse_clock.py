"""A server-sent events clock, with heartbeats.

    gunicorn --worker-class gthread --threads 16 examples.sse_clock:app
    python -m examples.sse_clock        # Werkzeug's server on 127.0.0.1:8000

Open http://127.0.0.1:8000/ in a browser: the page subscribes with
``EventSource`` to ``/clock``, which sends the time every second and resumes
counting from ``Last-Event-ID`` after a reconnect.
"""

from __future__ import annotations

import time
from typing import Any

from live_wsgi import SSE, LiveMiddleware, current_response, last_event_id

PAGE = b"""<!doctype html>
<meta charset="utf-8"><title>live_wsgi clock</title>
<h1 id="clock">connecting...</h1>
<script>
  const source = new EventSource("/clock");
  source.addEventListener("tick", (e) => {
    document.getElementById("clock").textContent = JSON.parse(e.data).time;
  });
</script>
"""


def clock(environ: Any, start_response: Any) -> list[bytes]:
    response = current_response()
    sse = SSE(response.stream, retry=2000, event="tick")
    ticks = int(environ.get("live_wsgi.example.ticks", 3600))
    start = int(last_event_id(environ) or 0) + 1
    for n in range(start, start + ticks):
        sse.write({"time": time.strftime("%H:%M:%S"), "n": n}, id=str(n))
        if response.stream.wait(1.0):  # the client left, or the server stops
            break
    return []


def router(environ: Any, start_response: Any) -> Any:
    if environ.get("PATH_INFO") == "/clock":
        return clock(environ, start_response)
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
    return [PAGE]


# Heartbeats every 15 s keep proxies from closing a quiet stream.
app = LiveMiddleware(router, heartbeat=15.0,
                     when=lambda environ: environ.get("PATH_INFO") == "/clock")

if __name__ == "__main__":
    from werkzeug.serving import run_simple

    run_simple("127.0.0.1", 8000, app, threaded=True)
