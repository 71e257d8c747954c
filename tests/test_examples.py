"""The examples run as they are."""

from __future__ import annotations

import pytest

from .realserver import gunicorn

pytestmark = pytest.mark.timeout(60)


def test_demo_index_names_streaming_routes() -> None:
    """SPEC 8.1: the demo serves its index and streams /count under gunicorn."""
    with gunicorn("examples.demo:app") as server:
        index = server.get("/")
        assert index.status == 200
        text = index.read_all().decode()
        index.close()
        assert "/clock" in text and "/count" in text
        count = server.get("/count?to=1000")
        body = count.read_all()
        count.close()
        assert body.splitlines() == [b"%d" % i for i in range(1, 1001)]
        clock = server.get("/clock")
        first = clock.next_chunk()
        assert first is not None and first.count(b":") == 2
        clock.close()


def test_demo_module_is_importable() -> None:
    """SPEC 1.3: the demo passes its index straight through, without a hop."""
    from examples import demo

    assert demo.app.options_for({"PATH_INFO": "/"}) is None
    assert demo.app.options_for({"PATH_INFO": "/clock"}) is not None
