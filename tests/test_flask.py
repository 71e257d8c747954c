"""Flask integration: SPEC 1.3 (single views live), 6.4 (teardown), 8.1."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, g, make_response, request, session, url_for
from werkzeug.middleware.proxy_fix import ProxyFix

from live_wsgi import SSE, ResponseAborted, current_response, send_stream
from live_wsgi.flask import Live, live

from .support import chunks, open_stream, webtest_app

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def flask_app() -> Iterator[tuple[Flask, Live, list[Any]]]:
    app = Flask(__name__)
    app.secret_key = "test"
    events: list[Any] = []

    @app.before_request
    def load_user() -> None:
        g.user = request.headers.get("X-User", "anonymous")

    @app.teardown_request
    def teardown(error: BaseException | None) -> None:
        events.append(("teardown", threading.current_thread().name,
                       type(error).__name__ if error else None))

    @app.get("/plain")
    def plain() -> str:
        events.append(("plain", threading.current_thread().name))
        return "plain"

    @app.get("/events")
    @live
    def events_view() -> None:
        sse = SSE(current_response().stream, event="hello")
        session["seen"] = True
        app.logger.info("streaming to %s", g.user)
        sse.write({"user": g.user, "path": request.path, "url": url_for("plain")})
        sse.write({"n": 2})
        events.append(("view done", threading.current_thread().name))

    @app.get("/generator")
    @live
    def generator() -> Any:
        def rows() -> Iterator[str]:
            for i in range(3):
                yield f"{request.path} row {i} for {g.user}\n"  # no stream_with_context
            events.append(("generator done", threading.current_thread().name))

        return app.response_class(rows(), mimetype="text/csv")

    @app.get("/download")
    @live(heartbeat=None)
    def download() -> None:
        with send_stream("report.csv") as stream:
            stream.write("a,b\n")

    @app.get("/returns-after-write")
    @live
    def returns_after_write() -> str:
        current_response().stream.write("streamed;")
        return "appended"

    @app.get("/late-header")
    @live
    def late_header() -> None:
        current_response().stream.write("x")

    @app.after_request
    def add_header(response: Any) -> Any:
        if request.path == "/late-header" or request.path == "/generator":
            response.headers["X-After"] = "1"
        return response

    @app.get("/fails-after-commit")
    @live
    def fails_after_commit() -> None:
        current_response().stream.write("part")
        raise RuntimeError("broke mid-stream")

    @app.get("/fails-before-commit")
    @live
    def fails_before_commit() -> None:
        raise LookupError("nothing streamed yet")

    @app.errorhandler(LookupError)
    def lookup_error(exc: Exception) -> Any:
        events.append(("error handler", type(exc).__name__))
        return "not here", 404

    @app.errorhandler(RuntimeError)
    def runtime_error(exc: Exception) -> Any:
        events.append(("error handler", type(exc).__name__))
        return "error page", 500

    ext = Live(app, max_workers=4)
    yield app, ext, events
    ext.shutdown()


def test_only_live_views_hop(flask_app: Any) -> None:
    """SPEC 1.3: a @live view runs on a worker; other views stay on the server thread."""
    app, ext, events = flask_app
    client = webtest_app(app)
    assert client.get("/plain").text == "plain"
    assert events[0] == ("plain", threading.current_thread().name)
    assert ext.middleware.options_for({"PATH_INFO": "/plain", "REQUEST_METHOD": "GET",
                                       "SERVER_NAME": "x", "SERVER_PORT": "80",
                                       "wsgi.url_scheme": "http"}) is None
    client.get("/missing", status=404)


def test_request_g_session_url_for_and_teardown(flask_app: Any, caplog: Any) -> None:
    """SPEC 6.4: request, g, session, url_for, logger work; teardown after the stream, on W."""
    app, ext, events = flask_app
    caplog.set_level(logging.INFO)
    response = webtest_app(app, lint=True).get("/events", headers={"X-User": "ada"})
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.text == (
        ":\n"  # the opening comment of every live event stream
        'event: hello\ndata: {"user":"ada","path":"/events","url":"/plain"}\n\n'
        'event: hello\ndata: {"n":2}\n\n'
    )
    assert ext.middleware.wait_idle(10)
    view_done = events.index(next(e for e in events if e[0] == "view done"))
    teardown = events[view_done + 1]
    assert teardown[0] == "teardown" and teardown[1].startswith("live_wsgi")
    assert any("streaming to ada" in r.getMessage() for r in caplog.records)


def test_returned_generator_streams_in_request_context(flask_app: Any) -> None:
    """SPEC 1.2: a returned generator streams item by item with the request context open."""
    app, ext, events = flask_app
    started = open_stream(app, "/generator", headers={"X-User": "bo"})
    assert started.headers["Content-Type"].startswith("text/csv")
    assert started.headers["X-After"] == "1"  # nothing written yet: after_request applies
    body = b"".join(chunks(started))
    started.close()
    assert body == b"".join(b"/generator row %d for bo\n" % i for i in range(3))
    assert ext.middleware.wait_idle(10)
    names = [e[0] for e in events]
    assert names.index("generator done") < names.index("teardown")


def test_send_stream_in_a_view(flask_app: Any) -> None:
    """SPEC 7.2: a live view may use send_stream directly."""
    app, _, _ = flask_app
    response = webtest_app(app, lint=True).get("/download")
    assert response.headers["Content-Disposition"] == "attachment; filename=report.csv"
    assert response.body == b"a,b\n"


def test_value_returned_after_write_is_appended(flask_app: Any) -> None:
    """SPEC 2.2: after the commit a returned body is appended to the stream."""
    app, _, _ = flask_app
    assert webtest_app(app, lint=True).get("/returns-after-write").text == "streamed;appended"


def test_after_request_header_after_commit_is_not_sent_and_warned(
    flask_app: Any, caplog: Any
) -> None:
    """SPEC 2.2: headers set after the commit never go out; live_wsgi says so."""
    app, _, _ = flask_app
    response = webtest_app(app).get("/late-header")
    assert "X-After" not in response.headers
    assert response.text == "x"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("X-After" in w and "not sent" in w for w in warnings)


def test_error_after_commit_skips_error_handlers(flask_app: Any) -> None:
    """SPEC 5.2: mid-stream errors cut the body; teardown receives the error."""
    app, ext, events = flask_app
    started = open_stream(app, "/fails-after-commit")
    with pytest.raises(ResponseAborted):
        b"".join(chunks(started))
    started.close()
    assert ext.middleware.wait_idle(10)
    assert ("error handler", "RuntimeError") not in events
    assert ("teardown", events[-1][1], "RuntimeError") == events[-1]


def test_error_before_commit_uses_flask_error_handlers(flask_app: Any) -> None:
    """SPEC 5.1: before the commit Flask's own error handling applies."""
    app, _ext, events = flask_app
    response = webtest_app(app).get("/fails-before-commit", status=404)
    assert response.text == "not here"
    assert ("error handler", "LookupError") in events


def test_installing_twice_is_refused() -> None:
    """SPEC 1.3: one extension per app."""
    app = Flask(__name__)
    ext = Live(app)
    with pytest.raises(RuntimeError, match="already installed"):
        Live(app)
    ext.shutdown()


def recording(wsgi_app: Any, seen: list[Any]) -> Any:
    """A WSGI middleware like Sentry's: sees each call and the errors that leave the app."""

    def middleware(environ: Any, start_response: Any) -> Any:
        seen.append(("called", environ["PATH_INFO"], threading.current_thread().name))
        try:
            return wsgi_app(environ, start_response)
        except Exception as exc:
            seen.append(("raised", type(exc).__name__))
            raise

    return middleware


def test_middleware_around_wsgi_app_runs_for_live_views() -> None:
    """SPEC 1.2: middleware wrapped around app.wsgi_app (ProxyFix, Sentry) runs for live views."""
    app = Flask(__name__)
    seen: list[Any] = []
    app.wsgi_app = recording(app.wsgi_app, seen)  # type: ignore[method-assign]
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1)  # type: ignore[method-assign]

    @app.get("/plain")
    def plain() -> str:
        return f"{request.remote_addr} {request.scheme}"

    @app.get("/live")
    @live
    def live_view() -> None:
        current_response().stream.write(f"{request.remote_addr} {request.scheme}")

    @app.get("/live-fails")
    @live
    def live_fails() -> None:
        current_response().stream.write("part")
        raise RuntimeError("broke mid-stream")

    ext = Live(app, max_workers=2)
    try:
        client = webtest_app(app)
        forwarded = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
        assert client.get("/plain", headers=forwarded).text == "203.0.113.7 https"
        assert client.get("/live", headers=forwarded).text == "203.0.113.7 https"
        assert seen[1][:2] == ("called", "/live") and seen[1][2].startswith("live_wsgi")
        started = open_stream(app, "/live-fails")
        with pytest.raises(ResponseAborted):
            started.read_all()
        started.close()
        assert ext.middleware.wait_idle(10)
        assert seen[-1] == ("raised", "RuntimeError")  # the stack saw the error leave
    finally:
        ext.shutdown()


def late_tuple() -> Any:
    current_response().stream.write("x")
    return "tail", 200, {"X-Late": "1"}


def late_make_response() -> Any:
    current_response().stream.write("x")
    response = make_response("tail")
    response.headers["X-Late"] = "1"
    return response


def late_after_request() -> Any:
    current_response().stream.write("x")
    return "tail"


@pytest.mark.parametrize("view", [late_tuple, late_make_response, late_after_request])
def test_headers_set_after_the_first_write_are_named(view: Any, caplog: Any) -> None:
    """SPEC 2.2: headers set after the first write, in any form, are not sent and are named."""
    app = Flask(__name__)
    app.add_url_rule("/late", view_func=live(view))

    @app.after_request
    def late_header(response: Any) -> Any:
        if view is late_after_request:
            response.headers["X-Late"] = "1"
        return response

    ext = Live(app, max_workers=2)
    try:
        response = webtest_app(app, lint=True).get("/late")
    finally:
        ext.shutdown()
    assert response.text == "xtail"
    assert "X-Late" not in response.headers
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "X-Late" in warnings[0] and "not sent" in warnings[0]


def test_status_returned_after_the_first_write_is_named(caplog: Any) -> None:
    """SPEC 2.2: a status a live view returns after its first write is not sent, and named."""
    app = Flask(__name__)

    @app.get("/late-status")
    @live
    def late_status() -> Any:
        current_response().stream.write("x")
        return "tail", 201

    ext = Live(app, max_workers=2)
    try:
        response = webtest_app(app, lint=True).get("/late-status")
    finally:
        ext.shutdown()
    assert response.status_code == 200 and response.text == "xtail"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "201" in warnings[0] and "not sent" in warnings[0]


def test_after_request_error_after_the_first_write_cuts_the_body(caplog: Any) -> None:
    """SPEC 5.2: after_request failing once a live view wrote: body cut, error logged, reported."""
    app = Flask(__name__)
    reported: list[BaseException] = []
    torn_down: list[BaseException | None] = []

    @app.get("/live")
    @live
    def live_view() -> None:
        current_response().stream.write("part")

    @app.after_request
    def fails(response: Any) -> Any:
        raise RuntimeError("after_request broke")

    @app.teardown_request
    def teardown(error: BaseException | None) -> None:
        torn_down.append(error)

    ext = Live(app, max_workers=2, on_error=lambda environ, exc: reported.append(exc))
    try:
        started = open_stream(app, "/live")
        with pytest.raises(ResponseAborted):  # no clean end, no error page appended
            started.read_all()
        started.close()
        assert ext.middleware.wait_idle(10)
    finally:
        ext.shutdown()
    assert b"".join(started.received) == b"part"
    assert [str(exc) for exc in reported] == ["after_request broke"]
    assert torn_down == reported
    logged = [r for r in caplog.records if r.name == "live_wsgi" and r.levelno == logging.ERROR]
    assert len(logged) == 1 and logged[0].exc_info and logged[0].exc_info[1] is reported[0]


@pytest.mark.parametrize("trusted_hosts", [None, ["example.test"]])
def test_server_name_with_another_host_is_live_as_flask_routes_it(
    trusted_hosts: list[str] | None,
) -> None:
    """SPEC 1.3: with SERVER_NAME set, a live view is live for any Host Flask routes to it."""
    app = Flask(__name__)
    app.config["SERVER_NAME"] = "example.test"
    app.config["TRUSTED_HOSTS"] = trusted_hosts

    @app.get("/plain")
    def plain() -> str:
        return threading.current_thread().name

    @app.get("/live")
    @live
    def live_view() -> None:
        current_response().stream.write(threading.current_thread().name)

    ext = Live(app, max_workers=2)
    try:
        client = webtest_app(app)
        for host in ("example.test", "other.test", "www.example.test"):
            headers = {"Host": host}
            flask_says = client.get("/plain", headers=headers, expect_errors=True)
            response = client.get("/live", headers=headers, expect_errors=True)
            assert response.status_code == flask_says.status_code, host
            if response.status_code == 200:
                assert response.text.startswith("live_wsgi"), host
    finally:
        ext.shutdown()


@pytest.mark.parametrize("matching", ["host", "subdomain"])
def test_host_and_subdomain_matching_decide_live_ness(matching: str) -> None:
    """SPEC 1.3: the same path is live on one host and not on another, as Flask routes them."""
    if matching == "host":
        app = Flask(__name__, host_matching=True, static_folder=None)
        live_host, plain_host = "live.test", "plain.test"
        live_rule, plain_rule = {"host": live_host}, {"host": plain_host}
    else:
        app = Flask(__name__, subdomain_matching=True, static_folder=None)
        live_host, plain_host = "api.example.test", "example.test"
        live_rule, plain_rule = {"subdomain": "api"}, {}
    app.config["SERVER_NAME"] = "example.test"

    @app.get("/feed", **live_rule)
    @live
    def live_feed() -> None:
        current_response().stream.write("live " + threading.current_thread().name)

    @app.get("/feed", endpoint="plain_feed", **plain_rule)
    def plain_feed() -> str:
        return "plain " + threading.current_thread().name

    ext = Live(app, max_workers=2)
    try:
        client = webtest_app(app)
        for _ in range(2):  # the same path, alternately live and not
            assert client.get("/feed", headers={"Host": live_host}).text.startswith(
                "live live_wsgi")
            assert client.get("/feed", headers={"Host": plain_host}).text == (
                "plain " + threading.current_thread().name)
    finally:
        ext.shutdown()
