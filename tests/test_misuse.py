"""Misuse is caught early and loudly: where it is written, with a message that
names the cause (SPEC 1.3, 2.4, 8.2)."""

from __future__ import annotations

import logging
import subprocess
from typing import Any

import bottle
import pytest
from flask import Flask
from gunicorn.config import Config

from live_wsgi import current_response
from live_wsgi.bottle import LivePlugin
from live_wsgi.flask import Live, live
from live_wsgi.gunicorn import warn_if_single_threaded

from .realserver import gunicorn, read_until_output

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(("options", "match"), [
    ({"heartbeat": 0}, "None disables"),
    ({"queue_timeout": float("inf")}, "queue_timeout"),
    ({"bogus": 1}, "unknown live option"),
    ({"setup": "not callable"}, "setup"),
])  # fmt: skip
def test_flask_view_options_are_checked_where_declared(options: dict[str, Any],
                                                       match: str) -> None:
    """SPEC 1.3: @live(...) options fail at the decorator, not as a 500 later."""
    app = Flask(__name__)
    Live(app)
    with pytest.raises((ValueError, TypeError), match=match):

        @app.get("/events")
        @live(**options)
        def events() -> str:
            return "never served"

    app.extensions["live_wsgi"].shutdown()


@pytest.mark.parametrize("installed_first", [True, False])
def test_bottle_route_options_are_checked_where_declared(installed_first: bool) -> None:
    """SPEC 1.3: Bottle's live={...} fails where the route is declared (or at
    install, for routes declared before the plugin), naming the route."""
    app = bottle.Bottle()
    plugin = LivePlugin()
    if installed_first:
        app.install(plugin)
        with pytest.raises(ValueError, match=r"route GET '/events'.*heartbeat"):
            app.route("/events", live={"heartbeat": -1})(lambda: "x")
    else:
        app.route("/events", live={"heartbeat": -1})(lambda: "x")
        with pytest.raises(ValueError, match=r"route GET '/events'.*heartbeat"):
            app.install(plugin)
    plugin.close()


def test_current_response_outside_a_live_request_names_the_likely_cause() -> None:
    """SPEC 1.3: the error says when= or the missing live mark is the likely cause."""
    with pytest.raises(RuntimeError, match=r"when= returned false.*not marked live"):
        current_response()


def test_the_sync_worker_is_named_by_the_config_helper(caplog: Any) -> None:
    """SPEC 8.2: the gunicorn config helper warns about the sync worker at startup."""
    caplog.set_level(logging.WARNING, logger="live_wsgi")
    config = Config()
    config.set("worker_class", "gthread")
    assert warn_if_single_threaded(config) is False
    config.set("worker_class", "sync")
    assert warn_if_single_threaded(config) is True
    assert "sync worker" in caplog.text
    config.set("threads", 4)  # gunicorn itself runs gthread then
    assert warn_if_single_threaded(config) is False


def test_a_sync_gunicorn_warns_before_any_request() -> None:
    """SPEC 8.2: under a real gunicorn with the helper's config, the warning is
    printed at startup, before any request."""
    with gunicorn("tests.apps.live_app:app", "-k", "sync", "--threads", "1",
                  "-c", "python:live_wsgi.gunicorn",
                  stderr=subprocess.PIPE) as server:
        output = read_until_output(server.proc, "sync worker")
    assert "live_wsgi" in output
