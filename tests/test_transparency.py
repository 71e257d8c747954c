"""Wrapping a whole app changes none of its ordinary responses (SPEC 2.3).

The same Flask app is served with and without ``LiveMiddleware`` (no
``when=``, so every request hops to a worker) and must answer every request
of a corpus of ordinary responses with the same status, headers and bytes.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from flask import Flask, jsonify, make_response, redirect, send_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.http import parse_date
from werkzeug.test import Client
from werkzeug.wsgi import FileWrapper

from live_wsgi import LiveMiddleware

pytestmark = pytest.mark.timeout(60)

PAYLOAD = bytes(range(256)) * 64


def make_app() -> Flask:
    app = Flask(__name__)

    @app.get("/redirect")
    def to_elsewhere() -> Any:
        return redirect("/json", code=302)

    @app.get("/json")
    def as_json() -> Any:
        return jsonify(items=[1, 2, 3], name="caf\u00e9")

    @app.get("/file")
    def a_file() -> Any:
        return send_file(io.BytesIO(PAYLOAD), mimetype="application/octet-stream",
                         download_name="data.bin", etag="v1", last_modified=1_700_000_000,
                         max_age=60)

    @app.get("/cookies")
    def cookies() -> Any:
        response = make_response("cookies set")
        response.set_cookie("a", "1", httponly=True)
        response.set_cookie("b", "2", samesite="Lax")
        response.headers.add("Link", "</style.css>; rel=preload")
        response.headers.add("Link", "</app.js>; rel=preload")
        response.vary.add("Accept-Encoding")
        response.vary.add("Cookie")
        return response

    @app.get("/empty")
    def empty() -> Any:
        return "", 204

    @app.get("/text")
    def text() -> Any:
        return "plain text\n", 200, {"Content-Type": "text/plain; charset=utf-8",
                                     "X-Extra": "1"}

    return app


REQUESTS: list[tuple[str, str, dict[str, str]]] = [
    ("GET", "/redirect", {}),
    ("GET", "/missing", {}),  # Flask's 404 page
    ("GET", "/json", {}),
    ("HEAD", "/json", {}),
    ("GET", "/file", {}),
    ("HEAD", "/file", {}),
    ("GET", "/file", {"If-None-Match": '"v1"'}),  # conditional: 304
    ("GET", "/file", {"Range": "bytes=10-99"}),  # partial: 206
    ("GET", "/cookies", {}),
    ("GET", "/empty", {}),
    ("GET", "/text", {}),
    ("POST", "/json", {}),  # 405 with Allow
]

ENVIRON = {"wsgi.multithread": True, "wsgi.file_wrapper": FileWrapper}

#: Headers whose values Werkzeug reads off the clock for each response (Date;
#: send_file's Expires): two answers made across a second's boundary differ
#: there whoever serves them, so only their place and form are compared.
CLOCK_HEADERS = {"Date", "Expires"}


def answer(app: Any, method: str, path: str, headers: dict[str, str]) -> tuple[Any, ...]:
    response = Client(app).open(path, method=method, headers=headers,
                                environ_overrides=ENVIRON)
    try:
        items = [(name, "<an HTTP date>" if name in CLOCK_HEADERS and parse_date(value) else value)
                 for name, value in response.headers.items()]  # fmt: skip
        return response.status, items, response.get_data()
    finally:
        response.close()


@pytest.fixture
def apps() -> Any:
    plain = make_app()
    wrapped = make_app()
    wrapped.wsgi_app = LiveMiddleware(wrapped.wsgi_app)  # type: ignore[method-assign]
    yield plain, wrapped
    wrapped.wsgi_app.shutdown()  # type: ignore[attr-defined]


@pytest.mark.parametrize(("method", "path", "headers"), REQUESTS)
def test_ordinary_responses_are_unchanged(apps: Any, method: str, path: str,
                                          headers: dict[str, str]) -> None:
    """SPEC 2.3: the same status, headers and bytes with and without live_wsgi."""
    plain, wrapped = apps
    assert answer(wrapped, method, path, headers) == answer(plain, method, path, headers)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # stateless apps
@given(
    method=st.sampled_from(["GET", "HEAD"]),
    path=st.sampled_from([path for _, path, _ in REQUESTS]),
    headers=st.dictionaries(
        st.sampled_from(["If-None-Match", "If-Modified-Since", "Range", "Accept",
                         "Cookie"]),
        st.sampled_from(['"v1"', '"v2"', "*", "Tue, 14 Nov 2023 22:13:20 GMT",
                         "bytes=0-0", "bytes=5-", "bytes=-3", "text/html", "a=1"]),
        max_size=3,
    ),
)
def test_any_ordinary_request_is_unchanged(apps: Any, method: str, path: str,
                                           headers: dict[str, str]) -> None:
    """SPEC 2.3: as a property over methods, paths and conditional headers."""
    plain, wrapped = apps
    assert answer(wrapped, method, path, headers) == answer(plain, method, path, headers)


def test_a_file_wrapper_goes_back_to_the_server(apps: Any) -> None:
    """SPEC 2.3: a wsgi.file_wrapper response is handed back to the server as is,
    so the server can use sendfile."""
    from werkzeug.test import EnvironBuilder

    _, wrapped = apps
    environ = EnvironBuilder("/file").get_environ()
    environ.update(ENVIRON)
    seen: list[Any] = []
    body = wrapped.wsgi_app(environ, lambda status, headers, exc_info=None: seen.append(
        (status, headers)))
    try:
        assert isinstance(body, FileWrapper)  # the very object, for the server
        assert seen[0][0] == "200 OK"
        assert ("Content-Length", str(len(PAYLOAD))) in seen[0][1]
        assert b"".join(body) == PAYLOAD
    finally:
        body.close()
