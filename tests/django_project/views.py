"""Views of the test project.

Producers and the test coordinate through events instead of sleeps: the
test (or its ``/ack/`` requests, over a real server) releases a producer
waiting for a chunk to be acknowledged, and ``/result/`` blocks until a
producer finished and every live job has ended, then reports what it saw.
Every wait here is bounded.
"""

from __future__ import annotations

import json
import os
import threading
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import Group, User
from django.core.signals import request_finished
from django.db import connections, transaction
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.template.loader import render_to_string
from django.urls import get_script_prefix, reverse
from django.utils import translation
from django.views import View

from live_wsgi import current_response
from live_wsgi.django import live

from .middleware import Teapot

WAIT = 10.0
#: Bound for producers that write until something stops them.
MAX_WRITES = 20_000

_lock = threading.Lock()
_events: defaultdict[str, threading.Event] = defaultdict(threading.Event)
_results: dict[str, dict[str, Any]] = {}
#: The database connection objects live producers used, per key.
used_connections: defaultdict[str, list[Any]] = defaultdict(list)
#: The threads that sent Django's request_finished, in order.
finished: list[str] = []


def event(name: str) -> threading.Event:
    with _lock:
        return _events[name]


def finish(key: str, **facts: Any) -> None:
    with _lock:
        _results[key] = facts
    event(f"{key}:done").set()


def result_of(key: str) -> dict[str, Any]:
    with _lock:
        return _results[key]


def note_connection(key: str) -> None:
    """Keep this thread's connection object, to check it is closed after the stream."""
    with _lock:
        used_connections[key].append(connections["default"])


def open_database_files() -> int:
    """How many file descriptors of this process are open on the sqlite database.

    sqlite's own view of its connections: each holds the file open.
    """
    database = os.path.realpath(settings.DATABASES["default"]["NAME"])
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(database):  # the database and its journal
            count += 1
    return count


def _on_request_finished(sender: Any, **extra: Any) -> None:
    with _lock:
        finished.append(threading.current_thread().name)


request_finished.connect(_on_request_finished, dispatch_uid="tests.django_project")


def plain(request: Any) -> HttpResponse:
    return JsonResponse({"thread": threading.current_thread().name,
                         "url": reverse("plain")})


def ack(request: Any, key: str, n: int) -> HttpResponse:
    event(f"{key}:ack:{n}").set()
    return HttpResponse("ok")


def result(request: Any, key: str) -> HttpResponse:
    from .wsgi import application

    if not event(f"{key}:done").wait(WAIT):
        return HttpResponse("no result", status=504)
    idle = application.middleware.wait_idle(WAIT)  # every teardown has run
    with _lock:
        used = list(used_connections[key])
    return JsonResponse({
        **result_of(key),
        "idle": idle,
        "connections": len(used),
        "connections_closed": all(c.connection is None for c in used),
        "open_database_files": open_database_files(),
    })


def _wait_for_ack(key: str, n: int) -> None:
    if not event(f"{key}:ack:{n}").wait(WAIT):
        raise TimeoutError(f"chunk {n} of {key} was never acknowledged")


@live
def feed(request: Any, key: str) -> None:
    """Rows rendered from the ORM and a template, one at a time."""
    response = current_response()
    response.headers["Content-Type"] = "text/plain; charset=utf-8"
    note_connection(key)
    try:
        for n in range(3):
            user = User.objects.get(username="ada")  # a query per chunk
            response.stream.write(render_to_string("row.txt", {"n": n, "user": user}))
            _wait_for_ack(key, n)
    finally:
        finish(key, thread=threading.current_thread().name)


@live
def endless(request: Any, key: str) -> None:
    """Writes (with a query each) until the client goes away."""
    note_connection(key)
    writes = 0
    try:
        for writes in range(MAX_WRITES):  # noqa: B007
            current_response().stream.write(f"users: {User.objects.count()}\n")
    except BaseException as exc:
        finish(key, stopped_by=type(exc).__name__, writes=writes)
        raise
    finish(key, stopped_by=None, writes=writes)


@login_required
@live
def private(request: Any) -> None:
    stream = current_response().stream
    stream.write(f"hello {request.user.username} ")
    stream.write(f"session {bool(request.session.session_key)} "
                 f"on {threading.current_thread().name}")


@live
def forbidden(request: Any) -> None:
    """Returns None without writing: the status and headers it set go out."""
    current_response().status = 403
    current_response().headers["X-Reason"] = "closed for today"


@live
def middleware_fails(request: Any, key: str) -> None:
    note_connection(key)
    current_response().stream.write(f"users: {User.objects.count()}")


@live
def fails_before(request: Any) -> None:
    raise ValueError("nothing streamed yet")


@live
def teapot(request: Any) -> None:
    raise Teapot("short and stout")


@live
def fails_after(request: Any) -> None:
    current_response().stream.write("part")
    raise RuntimeError("broke mid-stream")


@live
def where(request: Any) -> None:
    current_response().stream.write(json.dumps({
        "reverse": reverse("where"),
        "script_prefix": get_script_prefix(),
        "path": request.path,
        "path_info": request.path_info,
        "thread": threading.current_thread().name,
    }))


@live
def streaming(request: Any, key: str) -> StreamingHttpResponse:
    """A StreamingHttpResponse: its rows are produced on the worker as they are sent."""
    note_connection(key)

    def rows() -> Iterator[str]:
        for n in range(3):
            user = User.objects.get(username="ada")
            yield render_to_string("row.txt", {"n": n, "user": user})
            _wait_for_ack(key, n)
        finish(key, thread=threading.current_thread().name)

    return StreamingHttpResponse(rows(), content_type="text/csv")


@live
def returns_after_write(request: Any) -> HttpResponse:
    current_response().stream.write("streamed;")
    return HttpResponse("appended", status=201, headers={"X-Late": "1"})


@live
def long_tail_after_write(request: Any) -> HttpResponse:
    current_response().stream.write("streamed;")
    return HttpResponse("tail " * 100)  # long enough for GZipMiddleware


@transaction.atomic
@live
def creates_then_fails(request: Any, name: str) -> None:
    Group.objects.create(name=name)
    request.session["group"] = name  # a new session, saved only if the view succeeds
    current_response().stream.write("created;")
    raise RuntimeError("failed after creating the group")


@live
def localized(request: Any) -> None:
    current_response().stream.write(f"{translation.get_language()} "
                                    f"{threading.current_thread().name}")


class Clock(View):
    def get(self, request: Any) -> None:
        current_response().stream.write(f"class-based on {threading.current_thread().name}")
