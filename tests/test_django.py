"""Django integration: SPEC 1.3 (single views live), 5.1/5.2 (errors), 6.4 (the
request's end on the worker), 8.1 (a real server).

A real small project (``tests/django_project``: sessions, auth, locale,
security middleware, templates, the ORM on sqlite in a temporary directory)
runs in this process for the fast tests and under gunicorn gthread, mounted
at ``SCRIPT_NAME=/app``, for the real-server tier.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
import textwrap
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from live_wsgi import ResponseAborted
from live_wsgi.testing import open_stream

from .realserver import Server, gunicorn
from .support import WAIT, webtest_app

pytestmark = pytest.mark.timeout(45)

SETTINGS = "tests.django_project.settings"
README = (Path(__file__).resolve().parent.parent / "README.rst").read_text()
PASSWORD = "correct horse"


@pytest.fixture(scope="module")
def project(tmp_path_factory: Any) -> Iterator[SimpleNamespace]:
    """The test project, set up in this process on a fresh sqlite database."""
    database = tmp_path_factory.mktemp("django") / "db.sqlite3"
    saved = {name: os.environ.get(name)
             for name in ("LIVE_WSGI_DJANGO_DB", "DJANGO_SETTINGS_MODULE")}
    os.environ["LIVE_WSGI_DJANGO_DB"] = str(database)
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connections

    from .django_project import views

    call_command("migrate", verbosity=0)
    User.objects.create_user("ada", password=PASSWORD)
    connections.close_all()
    try:
        yield SimpleNamespace(database=database, views=views)
    finally:
        connections.close_all()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def app(project: SimpleNamespace) -> Iterator[Any]:
    """``Live(get_wsgi_application())`` with an error reporter, shut down after the test."""
    from django.core.wsgi import get_wsgi_application

    from live_wsgi.django import Live

    reported: list[BaseException] = []
    application = Live(get_wsgi_application(), max_workers=4,
                       on_error=lambda environ, exc: reported.append(exc))
    application.reported = reported  # type: ignore[attr-defined]
    yield application
    application.shutdown()


def environ_for(path: str) -> dict[str, Any]:
    from werkzeug.test import EnvironBuilder

    return EnvironBuilder(path).get_environ()


def closed(project: SimpleNamespace, key: str) -> bool:
    """The worker's database connections of ``key`` were all closed (and there were some)."""
    used = project.views.used_connections[key]
    return bool(used) and all(connection.connection is None for connection in used)


def finished_on_workers(project: SimpleNamespace) -> int:
    return sum(name.startswith("live_wsgi") for name in project.views.finished)


# -- declaring live views -----------------------------------------------------


def test_options_are_checked_when_the_view_is_declared() -> None:
    """SPEC 1.3: bad per-view options fail at declaration, not as a 500 at the first request."""
    from django.views import View

    from live_wsgi.django import live

    def view(request: Any) -> None:
        pass

    async def async_view(request: Any) -> None:
        pass

    with pytest.raises(ValueError, match="heartbeat"):
        live(heartbeat=-1)
    with pytest.raises(ValueError, match="unknown live option"):
        live(heartbet=5)
    with pytest.raises(TypeError, match="teardown"):
        live(teardown="not callable")
    with pytest.raises(TypeError, match=r"live\(Feed.as_view\(\)\)"):
        live(type("Feed", (View,), {}))
    with pytest.raises(TypeError, match="must be sync"):
        live(async_view)
    assert asyncio.iscoroutinefunction(async_view)
    assert callable(live(heartbeat=5)(view))


# -- in this process ------------------------------------------------------------


def test_only_live_views_hop(project: SimpleNamespace, app: Any) -> None:
    """SPEC 1.3: Django's resolver decides; only @live views (also under other
    decorators, and class-based ones) run on a worker."""
    decide = app.middleware.options_for
    assert decide(environ_for("/plain/")) is None
    assert decide(environ_for("/missing/")) is None
    for path in ("/where/", "/private/", "/clock/"):
        assert decide(environ_for(path)) is not None, path
    client = webtest_app(app)
    assert client.get("/plain/").json["thread"] == threading.current_thread().name
    assert json.loads(client.get("/where/").text)["thread"].startswith("live_wsgi")
    assert client.get("/clock/").text.startswith("class-based on live_wsgi")


def test_i18n_prefixes_decide_as_django_resolves(project: SimpleNamespace, app: Any) -> None:
    """SPEC 1.3: i18n_patterns resolve with the path's language, as LocaleMiddleware has it."""
    decide = app.middleware.options_for
    assert decide(environ_for("/de/localized/")) is None  # not a language of the project
    client = webtest_app(app)
    assert client.get("/localized/").text.startswith("en live_wsgi")
    assert client.get("/fr/localized/").text.startswith("fr live_wsgi")
    client.get("/de/localized/", status=404)


def test_reverse_follows_script_name_and_force_script_name(
    project: SimpleNamespace, app: Any
) -> None:
    """SPEC 1.3: a live view sees the script prefix Django's handler sets (SCRIPT_NAME or
    FORCE_SCRIPT_NAME), while live-ness is decided on PATH_INFO as Django routes it."""
    from django.test import override_settings
    from django.urls import get_script_prefix

    with open_stream(app, "/where/", SCRIPT_NAME="/mount") as response:
        seen = json.loads(response.read_all())
    assert seen["reverse"] == "/mount/where/" and seen["script_prefix"] == "/mount/"
    assert (seen["path"], seen["path_info"]) == ("/mount/where/", "/where/")
    with override_settings(FORCE_SCRIPT_NAME="/forced"), open_stream(
        app, "/where/", SCRIPT_NAME="/mount"
    ) as response:
        seen = json.loads(response.read_all())
    assert seen["reverse"] == "/forced/where/" and seen["path"] == "/forced/where/"
    assert get_script_prefix() == "/"  # the deciding thread's own is left alone


def test_streaming_response_streams_from_the_worker(project: SimpleNamespace, app: Any) -> None:
    """SPEC 1.2, 6.4: a returned StreamingHttpResponse, shaped by Django's middleware, is
    produced on the worker as it is sent (ORM, templates); its end closes the connection."""
    views = project.views
    before = finished_on_workers(project)
    with open_stream(app, "/streaming/s1/") as response:
        assert response.headers["Content-Type"] == "text/csv"
        assert response.headers["X-Frame-Options"] == "DENY"  # response middleware ran
        for n in range(3):
            # Row n arrives while the producer waits for it to be acknowledged.
            assert response.next_chunk() == f"{n}: ada at /plain/\n".encode()
            views.event(f"s1:ack:{n}").set()
        assert response.read_all() == b""
    assert app.middleware.wait_idle(WAIT)
    assert views.result_of("s1")["thread"].startswith("live_wsgi")
    assert closed(project, "s1")
    assert finished_on_workers(project) == before + 1  # request_finished, once


def test_returning_none_sends_the_response_as_the_view_left_it(
    project: SimpleNamespace, app: Any
) -> None:
    """SPEC 2.1: a live view returning None without writing: its status and headers go out,
    through Django's response middleware, with an empty body."""
    response = webtest_app(app).get("/forbidden/", status=403)
    assert response.headers["X-Reason"] == "closed for today"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.body == b""


def test_response_returned_before_writing_leaves_as_django_made_it(
    project: SimpleNamespace, app: Any
) -> None:
    """SPEC 2.3: an ordinary HttpResponse a live view returns before writing (here
    login_required's redirect) leaves whole, with the length Django gave it."""
    response = webtest_app(app, lint=True).get("/private/", status=302)
    assert response.headers["Location"] == "/accounts/login/?next=/private/"
    assert response.headers["Content-Length"] == "0"


def test_response_returned_after_writing_is_appended_and_named_once(
    project: SimpleNamespace, app: Any, caplog: Any
) -> None:
    """SPEC 2.2: after the first write a returned HttpResponse's body is appended; its
    status and the headers set after the commit (response middleware's too) are not sent,
    and a warning names them, once per view."""
    from live_wsgi import django as glue

    glue._warned.clear()
    client = webtest_app(app, lint=True)
    for _ in range(2):
        response = client.get("/returns-after-write/")
        assert response.status_code == 200 and response.text == "streamed;appended"
        assert "X-Late" not in response.headers
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "status 201" in warnings[0] and "not sent" in warnings[0]
    assert "X-Frame-Options" in warnings[1] and "X-Late" in warnings[1]


def test_body_compressed_after_writing_is_not_appended(project: SimpleNamespace) -> None:
    """SPEC 5.2: a body GZipMiddleware compressed after the first write would corrupt the
    stream: it is an error that cuts the body, never appended."""
    from django.conf import settings
    from django.core.wsgi import get_wsgi_application
    from django.test import override_settings

    from live_wsgi.django import Live

    reported: list[BaseException] = []
    gzip = ["django.middleware.gzip.GZipMiddleware", *settings.MIDDLEWARE]
    with override_settings(MIDDLEWARE=gzip):
        application = Live(get_wsgi_application(), max_workers=2,
                           on_error=lambda environ, exc: reported.append(exc))
    try:
        with open_stream(application, "/long-tail-after-write/",
                         headers={"Accept-Encoding": "gzip"}) as response:
            with pytest.raises(ResponseAborted):
                response.read_all()
            assert b"".join(response.received) == b"streamed;"
        assert application.middleware.wait_idle(WAIT)
    finally:
        application.shutdown()
    assert len(reported) == 1 and "GZipMiddleware" in str(reported[0])


def test_errors_before_the_commit_reach_djangos_handling(
    project: SimpleNamespace, app: Any, caplog: Any
) -> None:
    """SPEC 5.1: before the first write an error is Django's: its 500 page, exception
    middleware, got_request_exception and the django.request log."""
    from django.core.signals import got_request_exception

    got: list[str] = []

    def receiver(sender: Any, request: Any, **extra: Any) -> None:
        got.append(request.path)

    got_request_exception.connect(receiver)
    try:
        client = webtest_app(app)
        response = client.get("/fails-before/", status=500)
        assert "Server Error (500)" in response.text
        assert client.get("/teapot/", status=418).text == "teapot: short and stout"
    finally:
        got_request_exception.disconnect(receiver)
    assert got == ["/fails-before/"]
    logged = [r for r in caplog.records if r.name == "django.request" and r.levelno >= 40]
    assert len(logged) == 1 and "nothing streamed yet" in str(logged[0].exc_info[1])
    assert app.reported == []


def test_error_after_the_commit_cuts_the_body_and_rolls_back(
    project: SimpleNamespace, app: Any, caplog: Any
) -> None:
    """SPEC 5.2, 6.4: a view's error after its first write skips Django's error page: it is
    logged once, reported, cuts the body; the transaction around the view rolls back, the
    session it changed is not saved (as after Django's 500), and request_finished and the
    connection close still run on the worker."""
    from django.contrib.auth.models import Group
    from django.contrib.sessions.models import Session
    from django.core.signals import got_request_exception

    got: list[Any] = []
    got_request_exception.connect(lambda sender, **extra: got.append(sender), weak=False,
                                  dispatch_uid="test_django")
    before = finished_on_workers(project)
    sessions = Session.objects.count()
    try:
        with open_stream(app, "/creates-then-fails/late-group/") as response:
            with pytest.raises(ResponseAborted):
                response.read_all()
            assert b"".join(response.received) == b"created;"
        assert app.middleware.wait_idle(WAIT)
    finally:
        got_request_exception.disconnect(dispatch_uid="test_django")
    assert [str(exc) for exc in app.reported] == ["failed after creating the group"]
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(logged) == 1 and logged[0].name == "live_wsgi"
    assert logged[0].exc_info and logged[0].exc_info[1] is app.reported[0]
    assert got == []  # Django's exception handling was skipped
    assert not Group.objects.filter(name="late-group").exists()
    assert Session.objects.count() == sessions
    assert finished_on_workers(project) == before + 1


@pytest.mark.parametrize("fail", ["error", "404"])
def test_response_middleware_failing_after_the_commit(
    project: SimpleNamespace, app: Any, caplog: Any, fail: str
) -> None:
    """SPEC 5.2, 6.4: response middleware failing after a live view wrote cuts the body
    instead of appending Django's error page; the request still ends on the worker."""
    key = f"mw-{fail}"
    before = finished_on_workers(project)
    with open_stream(app, f"/middleware-fails/{key}/?fail={fail}") as response:
        with pytest.raises(ResponseAborted):
            response.read_all()
        assert b"".join(response.received) == b"users: 1"
    assert app.middleware.wait_idle(WAIT)
    expected = "response middleware broke" if fail == "error" else "404 Not Found"
    assert len(app.reported) == 1 and expected in str(app.reported[0])
    assert closed(project, key)
    assert finished_on_workers(project) == before + 1


@pytest.mark.parametrize("max_age", [0, 600])
def test_connections_are_closed_whatever_conn_max_age(
    project: SimpleNamespace, app: Any, max_age: int
) -> None:
    """SPEC 6.4: a live request's connections are closed when its stream ends, persistent
    ones too: a pool thread that goes idle exits, which would strand them."""
    from django.db import connections

    key = f"max-age-{max_age}"
    database = connections.settings["default"]
    saved = database["CONN_MAX_AGE"]
    database["CONN_MAX_AGE"] = max_age  # read by each new thread's connection
    try:
        with open_stream(app, f"/middleware-fails/{key}/") as response:
            assert response.read_all() == b"users: 1"
        assert app.middleware.wait_idle(WAIT)
    finally:
        database["CONN_MAX_AGE"] = saved
    assert closed(project, key)


def test_disconnect_frees_the_producer_and_its_connection(
    project: SimpleNamespace, app: Any
) -> None:
    """SPEC 4.1, 6.4: a client leaving stops the producer; its connection is closed."""
    views = project.views
    with open_stream(app, "/endless/d1/") as response:
        assert (response.next_chunk() or b"").startswith(b"users: 1\n")  # then it leaves
    assert views.event("d1:done").wait(WAIT)
    assert views.result_of("d1")["stopped_by"] == "ClientDisconnected"
    assert app.middleware.wait_idle(WAIT)
    assert closed(project, "d1")
    assert app.reported == []  # an expected end, not an error


def session_cookie() -> str:
    """A ``Cookie`` header of a session logged in as ada (saved in the project's database)."""
    from django.conf import settings
    from django.db import connections
    from django.test import Client

    client = Client()
    assert client.login(username="ada", password=PASSWORD)
    connections.close_all()
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}"


def test_readme_example_runs_as_written(project: SimpleNamespace) -> None:
    """SPEC 1.3: the README's Django section (wsgi.py and views) runs as written."""
    from django.test import override_settings
    from django.urls import path

    section = README.split("\nDjango\n------\n", 1)[1].split("\ngunicorn\n--------\n", 1)[0]
    wsgi_code, views_code = (textwrap.dedent(block) for block in
                             re.findall(r"::\n\n((?:    .*\n|\n)+)", section)[:2])
    views = types.ModuleType("readme_views")
    exec(views_code, views.__dict__)
    urls = types.ModuleType("readme_urls")
    urls.urlpatterns = [  # type: ignore[attr-defined]
        path("users/events/", views.user_events), path("users.csv", views.users_csv),
    ]
    sys.modules["readme_urls"] = urls
    wsgi: dict[str, Any] = {}
    exec(wsgi_code, wsgi)
    application = wsgi["application"]
    try:
        with override_settings(ROOT_URLCONF="readme_urls"):
            cookie = {"Cookie": session_cookie()}
            with open_stream(application, "/users/events/", headers=cookie) as response:
                hello, user = response.read_events(2)
                assert response.read_all() == b""
            assert (hello.event, hello.json()) == ("hello", {"hello": "ada"})
            assert user.event == "user" and user.json()["username"] == "ada"
            with open_stream(application, "/users.csv") as response:
                assert response.headers["Content-Type"] == "text/csv"
                assert response.read_all().decode().splitlines() == ["id,username", "1,ada"]
    finally:
        application.shutdown()
        del sys.modules["readme_urls"]


# -- a real server ---------------------------------------------------------------


@pytest.fixture(scope="module")
def server(project: SimpleNamespace, tmp_path_factory: Any) -> Iterator[Server]:
    """The project under gunicorn gthread, mounted at /app, logging to a file."""
    log_path = tmp_path_factory.mktemp("django-log") / "server.log"
    env = {
        "LIVE_WSGI_DJANGO_DB": str(project.database),
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "LIVE_WSGI_DJANGO_LOG": "1",
        "SCRIPT_NAME": "/app",
    }
    with log_path.open("wb") as log_file, gunicorn(
        "tests.django_project.wsgi:application", env=env, stderr=log_file
    ) as srv:
        srv.log_path = log_path  # type: ignore[attr-defined]
        yield srv


def server_log(server: Server) -> str:
    return Path(server.log_path).read_text()  # type: ignore[attr-defined]


def test_real_server_streams_orm_rows_chunk_by_chunk(server: Server) -> None:
    """SPEC 8.1, 6.4: under gunicorn each row (a query and a template with {% url %}) reaches
    the socket before the next is made; the stream's end closes its database connection."""
    response = server.get("/app/feed/r1/")
    try:
        assert response.status == 200 and response.chunked
        for n in range(3):
            assert response.next_chunk() == f"{n}: ada at /app/plain/\n".encode()
            ack = server.get(f"/app/ack/r1/{n}/")
            assert ack.read_all() == b"ok"
            ack.close()
        assert response.read_all() == b""
    finally:
        response.close()
    result = server.get_json("/app/result/r1/")
    assert str(result["thread"]).startswith("live_wsgi") and result["idle"]
    assert result["connections_closed"] and result["open_database_files"] == 0


def test_real_server_session_protected_live_view(project: SimpleNamespace,
                                                 server: Server) -> None:
    """SPEC 1.2: a login_required live view: anonymous users are redirected (reverse() with
    the script prefix); a session cookie logs in, and request.user works on the worker."""
    response = server.get("/app/private/")
    assert response.status == 302
    assert response.headers["location"] == "/app/accounts/login/?next=/app/private/"
    response.close()
    response = server.get("/app/private/", headers={"Cookie": session_cookie()})
    try:
        assert response.status == 200
        body = response.read_all().decode()
    finally:
        response.close()
    assert body.startswith("hello ada session True on live_wsgi")


def test_real_server_disconnect_frees_the_producer_and_its_connection(server: Server) -> None:
    """SPEC 4.1, 6.4: the client closes its socket: the producer stops at its next write
    and the database connection it held is closed (sqlite holds no file open)."""
    response = server.get("/app/endless/r3/")
    try:
        assert (response.next_chunk() or b"").startswith(b"users: 1\n")
    finally:
        response.close()
    result = server.get_json("/app/result/r3/")
    assert result["stopped_by"] == "ClientDisconnected" and result["idle"]
    assert result["connections_closed"] and result["open_database_files"] == 0


def test_real_server_only_live_views_hop_with_script_name(server: Server) -> None:
    """SPEC 1.3: under SCRIPT_NAME a plain view stays on gunicorn's thread; a live view
    runs on a worker and reverse() carries the script prefix."""
    plain = server.get_json("/app/plain/")
    assert not str(plain["thread"]).startswith("live_wsgi") and plain["url"] == "/app/plain/"
    response = server.get("/app/where/")
    try:
        seen = json.loads(response.read_all())
    finally:
        response.close()
    assert seen["thread"].startswith("live_wsgi")
    assert (seen["reverse"], seen["script_prefix"]) == ("/app/where/", "/app/")
    assert (seen["path"], seen["path_info"]) == ("/app/where/", "/where/")


def test_real_server_errors_before_and_after_the_commit(server: Server) -> None:
    """SPEC 5.1, 5.2: before the first write Django answers its 500 page; after it the
    connection is cut without the last chunk and the error is in the server's log."""
    response = server.get("/app/fails-before/")
    try:
        assert response.status == 500
        assert b"Server Error (500)" in response.read_all()
    finally:
        response.close()
    response = server.get("/app/fails-after/")
    try:
        assert response.status == 200
        assert response.read_to_eof() == (b"part", False)
    finally:
        response.close()
    log = server_log(server)
    assert "Internal Server Error: /app/fails-before/" in log  # django.request
    assert "error after the response was committed (GET /fails-after/)" in log
    assert "RuntimeError: broke mid-stream" in log
