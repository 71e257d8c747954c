"""What the docs promise, and SPEC 8.4 (buffering middleware)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from live_wsgi import current_response

from .support import chunks, open_stream, wait

pytestmark = pytest.mark.timeout(30)

README = (Path(__file__).resolve().parent.parent / "README.rst").read_text()


def buffering(app: Any) -> Any:
    """A gzip-like middleware: collects the whole body before sending it."""

    def middleware(environ: Any, start_response: Any) -> list[bytes]:
        body = app(environ, start_response)
        try:
            return [b"".join(body)]
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    return middleware


def test_buffering_middleware_defeats_streaming_and_how_to_exempt(live: Any) -> None:
    """SPEC 8.4: buffering middleware holds the body; routing live paths around it streams."""
    gate = threading.Event()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        current_response().stream.write(b"first")
        wait(gate, "gate")
        return [b" last"]

    mw = live(app)
    buffered = buffering(mw)
    # Behind the buffer nothing reaches the client until the producer is done:
    result: list[bytes] = []
    t = threading.Thread(target=lambda: result.append(b"".join(chunks(open_stream(buffered)))))
    t.start()
    gate.set()
    t.join(10)
    assert result == [b"first last"]
    # Exempted (live paths skip the buffering middleware), the first chunk
    # arrives while the producer still waits.
    gate.clear()

    def exempting(environ: Any, start_response: Any) -> Any:
        target = mw if environ["PATH_INFO"].startswith("/live") else buffered
        return target(environ, start_response)

    started = open_stream(exempting, "/live/feed")
    body = chunks(started)
    assert next(body) == b"first"
    gate.set()
    assert b"".join(body) == b" last"
    started.close()


@pytest.mark.parametrize("name", ["gzip", "ETag", "debug toolbar", "X-Accel-Buffering",
                                  "proxy_buffering off", "make run", "make test"])
def test_readme_names_the_pitfalls(name: str) -> None:
    """SPEC 8.4: the docs name buffering middleware, nginx settings and the commands."""
    assert name in README
