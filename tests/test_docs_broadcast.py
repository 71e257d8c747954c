"""The README's broadcast section: its Python examples run as they are, and do what it says."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from live_wsgi.broadcast import RESET_EVENT, BrokerUnavailable
from live_wsgi.testing import open_stream

from .support import WAIT

pytestmark = pytest.mark.timeout(30)

README = (Path(__file__).resolve().parent.parent / "README.rst").read_text()
TITLE = "Broadcasting across workers and hosts\n"


def section() -> str:
    start = README.index(TITLE)
    end = README.index("\n-----", start + len(TITLE) * 2)  # the next section's underline
    return README[start:README.rindex("\n\n", start, end)]


def literal_blocks(text: str) -> list[str]:
    """The reStructuredText literal blocks (after ``::``) of ``text``, dedented."""
    blocks = []
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if not line.rstrip().endswith("::"):
            continue
        indent = len(line) - len(line.lstrip())
        body = []
        for following in lines[index + 1:]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            body.append(following)
        blocks.append(textwrap.dedent("\n".join(body)).strip("\n") + "\n")
    return blocks


def is_python(block: str) -> bool:
    """Code, not output: it starts with an import, after a ``# name.py`` line if any."""
    return re.match(r"(?:# [\w.-]+\.py\n)?(?:import|from) ", block) is not None


PYTHON = [block for block in literal_blocks(section()) if is_python(block)]


@pytest.fixture
def run_example(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``run_example(source)``: the namespace it leaves; its app and broker end after."""
    monkeypatch.delenv("LIVE_WSGI_BROKER", raising=False)
    ran: list[dict[str, Any]] = []

    def run(source: str) -> dict[str, Any]:
        namespace: dict[str, Any] = {"__name__": "readme_example"}
        exec(compile(source, "README.rst", "exec"), namespace)
        ran.append(namespace)
        return namespace

    yield run
    for namespace in ran:
        app = namespace.get("app")
        if app is not None and "live_wsgi" in getattr(app, "extensions", {}):
            app.extensions["live_wsgi"].shutdown()
        if "broker" in namespace:
            namespace["broker"].shutdown()


def example(needle: str) -> str:
    (found,) = [block for block in PYTHON if needle in block]
    return found


def test_every_python_example_of_the_section_runs(run_example: Any) -> None:
    """SPEC 9.1: each Python block of the broadcast section is self-contained."""
    assert len(PYTHON) >= 3
    for block in PYTHON:
        namespace = run_example(block)
        assert "broker" in namespace


def test_the_fan_out_example_publishes_and_streams(run_example: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """SPEC 9.3, 9.6, 9.7: the page embeds current_id, a POST reaches a fan-out stream
    opened from it, with its id; a broker outage is a 503."""
    namespace = run_example(example("sse_app("))
    app, broker = namespace["app"], namespace["broker"]
    web = Client(app)
    since = broker.current_id("news")
    assert f"lastEventId={since}" in web.get("/news").get_data(as_text=True)
    posted = web.post("/news", data={"title": "hello"})
    assert posted.status_code == 201
    with open_stream(app, f"/news/events?lastEventId={since}") as stream:
        assert stream.next_chunk(WAIT) == b":\nretry: 2000\n\n"
        (event,) = stream.read_events(1, WAIT)
        assert (event.event, event.id, event.json()) == ("headline", posted.json["id"],
                                                         {"title": "hello"})
        assert app.extensions["live_wsgi"].middleware.active_streams == 0

    def down(*args: Any, **kwargs: Any) -> str:
        raise BrokerUnavailable("connection refused")

    monkeypatch.setattr(broker, "publish", down)
    assert web.post("/news", data={"title": "lost"}).status_code == 503


def test_the_producer_example_streams_resets_and_ends(run_example: Any) -> None:
    """SPEC 9.3, 3.4: the producer view forwards events with their ids, sends
    stream-reset for a lost id, and ends its stream with the order."""
    namespace = run_example(example("broker.subscribe("))
    app, broker = namespace["app"], namespace["broker"]
    with open_stream(app, "/orders/7/events", headers={"Last-Event-ID": "1-0"}) as stream:
        (reset,) = stream.read_events(1, WAIT)
        assert reset.event == RESET_EVENT
        shipped = broker.publish("order:7", {"status": "shipped"}, event="status")
        broker.publish("order:8", "another order", event="status")
        delivered = broker.publish("order:7", {"status": "delivered"}, event="delivered")
        events = stream.read_events(2, WAIT)
        assert [(e.event, e.id) for e in events] == [("status", shipped),
                                                     ("delivered", delivered)]
        assert stream.read_all(WAIT).strip(b"\n:") == b""  # then the body ends
    assert broker.subscriptions() == 0
