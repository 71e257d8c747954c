"""Django integration: wrap the project's WSGI application, mark single views live.

In ``wsgi.py``::

    from django.core.wsgi import get_wsgi_application
    from live_wsgi.django import Live

    application = Live(get_wsgi_application(), max_workers=32)

In a views module::

    from live_wsgi import SSE, current_response
    from live_wsgi.django import live

    @live
    def events(request):
        sse = SSE(current_response().stream)
        for order in Order.objects.filter(customer=request.user):
            sse.write({"id": order.pk, "status": order.status})

Only requests that Django's URL resolver routes to a ``@live`` view hop to a
worker; every other request runs on the server thread as before. Live-ness
is decided before Django's middleware runs, as Django's handler would
resolve the request: ``ROOT_URLCONF``, the path Django computes from the
environ (``PATH_INFO`` as Django decodes it; ``SCRIPT_NAME`` and
``FORCE_SCRIPT_NAME`` are not part of it), and ``i18n_patterns`` with the
language of the path's prefix, as ``LocaleMiddleware`` activates it. A
urlconf that middleware sets per request (``request.urlconf``, as
django-hosts does) is out of reach at that point: the decision uses
``ROOT_URLCONF``.

On the worker a live request runs through the whole application that
``Live`` wraps: WSGI middleware around it (WhiteNoise, Sentry's), then
Django's handler with its middleware (sessions, auth, ``request.user``,
CSRF, locale), the ORM, templates and ``reverse()`` (with the request's
script prefix), as every other request does.

What a live view returns:

- Nothing written yet: an ``HttpResponse`` goes out as Django made it (its
  middleware applies as usual); a ``StreamingHttpResponse`` streams from the
  worker, its iterator running there after Django's middleware shaped the
  response, and may also write to ``current_response().stream``.
- ``None``: the response is ``current_response()`` as the view left it:
  what it wrote (closed for it), or an empty body with the status and
  headers set on it.
- Something written already (the response is committed): status and headers
  are gone. A returned ``HttpResponse``'s body is appended to the stream;
  its status, and headers set after the first write (on it, or by response
  middleware: ``SecurityMiddleware``, ``XFrameOptionsMiddleware``, a
  session or CSRF cookie), cannot be sent: live_wsgi logs a warning naming
  them, once per view. Set them on ``current_response()`` before the first write, or
  return a ``StreamingHttpResponse``. A body that response middleware
  encoded (``GZipMiddleware``) is not appended: that is an error.
- An exception before the first write is Django's, as usual: exception
  middleware, the 500 page, ``got_request_exception``, the
  ``django.request`` log. After the first write no page can be sent: the
  view's exception skips Django's exception handling (open
  ``transaction.atomic`` blocks, ``ATOMIC_REQUESTS`` too, are marked for
  rollback), response middleware runs on an empty 500 that is not sent (so
  the session is not saved, as after Django's 500), then live_wsgi
  logs and reports the exception (``on_error``, the ``stream_error``
  signal) and cuts the body. An exception that response middleware raises
  after the first write is handled by Django first, then reported the same
  way instead of its error page.

When a live stream ends, on the worker and whatever ended it, Django's
``request_finished`` signal has been sent once (by the response's
``close()``, or by live_wsgi when the response never got that far) and every
database connection the worker opened is closed, whatever
``CONN_MAX_AGE`` says: pool threads are not Django's request threads, and
one that goes idle exits, which would leave a persistent connection to the
garbage collector.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.conf.urls.i18n import is_language_prefix_patterns_used
from django.core.handlers.wsgi import WSGIHandler, get_path_info
from django.core.signals import got_request_exception, request_finished
from django.db import connections, transaction
from django.http import HttpResponse, HttpResponseBase
from django.urls import get_resolver
from django.utils import translation

from .middleware import LiveMiddleware
from .options import TeardownHook, make_options
from .response import LiveResponse, current_response

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("live_wsgi")

F = TypeVar("F", bound=Callable[..., Any])
_MARK = "_live_wsgi_options"
#: Headers Django adds on its own to any response (the stand-in too, or an
#: appended body): not worth a warning.
_QUIET = frozenset({"content-length", "content-type", "vary", "etag"})
#: Any valid options: ``live()`` checks a view's own against them when the
#: view is declared, not at its first request.
_CHECK_BASE = make_options(
    None, queue_size=None, queue_timeout=1.0, commit_timeout=None, write_timeout=None,
    excluded_keys=(), setup=None, teardown=None, heartbeat=None,
)  # fmt: skip


class _LiveRequest:
    """What the integration keeps about the live request running on this worker."""

    __slots__ = ("error", "failed", "finished", "in_view", "view")

    def __init__(self) -> None:
        #: An error after the commit: the live view's (past Django's
        #: exception handling), or one Django handled itself (response
        #: middleware's) instead of sending its error page.
        self.error: BaseException | None = None
        #: That error once Django handed its response over: raised by
        #: ``Live._run_live`` after Django's response is closed.
        self.failed: BaseException | None = None
        #: Django's ``request_finished`` was sent for this request.
        self.finished = False
        #: A live view of this request is running (one nested in it is plain).
        self.in_view = False
        #: The live view's name, once it ran (warnings are logged once per view).
        self.view = ""


#: Set on the worker while ``Live`` runs a live request. Never reset: the job
#: runs in its own Context, so it is gone with the job, and the teardown
#: hook still reads it after the body ended.
_live_request: ContextVar[_LiveRequest] = ContextVar("live_wsgi.django.live_request")


def live(view: F | None = None, **options: Any) -> Any:
    """Mark a view live. ``@live`` or ``@live(heartbeat=5, excluded_keys=[...])``.

    ``options`` override ``Live``'s for this view (see
    ``live_wsgi.middleware.ROUTE_OPTIONS``); they are checked here, when the
    view is declared. A class-based view is marked as it is routed:
    ``path("feed/", live(FeedView.as_view()))``. Live views are sync: they
    run on a worker thread of a WSGI server.

    Called outside a request ``Live`` runs live (Django's test client, or
    from another view), the view runs as it is.
    """
    make_options(_CHECK_BASE, **options)  # ValueError / TypeError now, not at a request
    checked = _finishing(options)

    def decorate(view: F) -> F:
        if inspect.isclass(view):
            raise TypeError(
                f"@live decorates a view function, not the class {view.__name__}: "
                f"mark the view as it is routed, live({view.__name__}.as_view())"
            )
        if not callable(view):
            raise TypeError(f"@live decorates a view function, not {view!r}")
        if iscoroutinefunction(view):  # asgiref's: also as_view() of an async view
            raise TypeError(
                f"@live views run on a worker thread of a WSGI server and must be "
                f"sync; {getattr(view, '__qualname__', view)!r} is async"
            )

        name = f"{getattr(view, '__module__', '')}.{getattr(view, '__qualname__', view)}"

        @functools.wraps(view)
        def wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
            state = _live_request.get(None)
            if state is None or state.in_view:
                return view(request, *args, **kwargs)
            state.in_view = True
            state.view = name
            response = current_response()
            try:
                rv = view(request, *args, **kwargs)
                return _returned(response, rv, request, state.view)
            except Exception as exc:
                if not response.committed:
                    raise  # Django's exception handling answers it, as usual
                # No error page can follow the first write: skip Django's
                # exception handling, but let no transaction around the view
                # commit what it did. Response middleware runs on a stand-in,
                # then Live._run_live raises the error.
                _mark_rollback()
                if state.error is None:
                    state.error = exc
                return _failure_stand_in()
            finally:
                state.in_view = False

        setattr(wrapper, _MARK, checked)
        return wrapper  # type: ignore[return-value]

    if view is not None:
        return decorate(view)
    return decorate


def _finishing(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` whose teardown hook (if they have one) also ends the Django request.

    ``LiveMiddleware`` runs it on the worker last in each job.
    """
    hooked = dict(options)
    if "teardown" in hooked:
        hooked["teardown"] = functools.partial(_teardown_then_finish, hooked["teardown"])
    return hooked


def _returned(
    live_response: LiveResponse, rv: Any, request: Any, view_name: str
) -> HttpResponseBase:
    """What a live view returned, as the response Django's middleware gets."""
    if rv is None:
        # The view's response is current_response(), as it left it.
        if live_response.committed:
            return _stand_in(live_response)
        # Nothing written: its status and headers go out through Django's
        # middleware, as an empty response (whole, as Django makes it).
        response = HttpResponse(status=live_response.status_code)
        response.reason_phrase = live_response.status[4:]
        for name, value in live_response.headers.items():
            response.headers[name] = value
        live_response.headers.clear()
        return response
    if not isinstance(rv, HttpResponseBase):
        raise TypeError(
            f"a live view must return an HttpResponse or None, not {type(rv).__name__}"
        )
    if live_response.committed and rv.status_code != live_response.status_code:
        _warn_once(
            (view_name, "status", rv.status_code),
            "live_wsgi: %s %s: status %d was set after the live response was "
            "committed as %r and was not sent; set it before the first write "
            "(logged once per view)",
            request.method, request.path, rv.status_code, live_response.status,
        )
        rv.status_code = live_response.status_code
        rv.reason_phrase = live_response.status[4:]
    return rv


def _stand_in(live_response: LiveResponse) -> HttpResponse:
    """An empty response with the committed status, for Django's response middleware.

    Not a streaming one: ``GZipMiddleware`` leaves a short body alone.
    """
    stand_in = HttpResponse(status=live_response.status_code)
    stand_in.reason_phrase = live_response.status[4:]
    return stand_in


def _failure_stand_in() -> HttpResponse:
    """An empty 500, for Django's response middleware after a view failed past its first write.

    Never sent: it lets middleware act as after a failure (``SessionMiddleware``
    does not save the session of a 500), and Django does not log it (live_wsgi
    logs the error itself, once).
    """
    stand_in = HttpResponse(status=500)
    stand_in._has_been_logged = True  # django.utils.log.log_response skips it
    return stand_in


def _mark_rollback() -> None:
    """Roll back every transaction still open around the failed view, on exit.

    ``ATOMIC_REQUESTS`` and ``transaction.atomic`` decorators outside
    ``@live`` would otherwise commit: the view's exception does not reach them.
    """
    for connection in connections.all(initialized_only=True):
        if connection.in_atomic_block:
            transaction.set_rollback(True, using=connection.alias)


#: What was warned about already: ``(view, what)`` keys. Dropped all at once
#: beyond ``WARNINGS_KEPT`` entries.
_warned: set[tuple[Any, ...]] = set()
_warned_lock = threading.Lock()
WARNINGS_KEPT = 1024


def _warn_once(key: tuple[Any, ...], message: str, *args: Any) -> None:
    """Log a warning about something a view does, once per view and kind of thing.

    Response middleware (``SecurityMiddleware``...) adds the same headers to
    every response: once is enough to say they were not sent.
    """
    with _warned_lock:
        if key in _warned:
            return
        if len(_warned) >= WARNINGS_KEPT:
            _warned.clear()
        _warned.add(key)
    log.warning(message, *args)


def _warn_unsent(
    environ: WSGIEnvironment,
    live_response: LiveResponse,
    headers: list[tuple[str, str]],
    view_name: str,
) -> None:
    """Name the headers Django hands over after the commit that were not sent."""
    unsent = live_response.unsent_headers(headers, _QUIET)
    if unsent:
        _warn_once(
            (view_name or environ.get("PATH_INFO"), "headers", *unsent),
            "live_wsgi: %s %s: header(s) %s were set after the live response was "
            "committed (in the view after its first write, or by response "
            "middleware) and were not sent; set them on current_response() before "
            "the first write, or return a StreamingHttpResponse (logged once per view)",
            environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"), ", ".join(unsent),
        )


def _encoding_changed(
    live_response: LiveResponse, headers: list[tuple[str, str]]
) -> BaseException | None:
    """An error if the body Django hands over is encoded unlike the one streaming."""
    sent = live_response.header("Content-Encoding")
    encoding = next((value for name, value in headers
                     if name.lower() == "content-encoding"), "")  # fmt: skip
    if encoding == sent:
        return None
    return ValueError(
        f"the body returned after the first write is encoded {encoding!r} (by "
        f"GZipMiddleware?) but the stream went out as {sent or 'identity'!r}: it "
        "cannot be appended; the body is cut"
    )


def _discard(data: bytes) -> None:
    """The ``write`` callable of a response that is not sent."""


def _got_request_exception(sender: Any, **extra: Any) -> None:
    """Django handles an error after the first write (response middleware failed).

    Its error page cannot follow the streamed body: the error itself is
    raised instead once Django hands the page over, so it is the one logged,
    reported and cutting the body.
    """
    state = _live_request.get(None)
    if state is None or state.error is not None or not current_response().committed:
        return
    state.error = sys.exc_info()[1]


def _request_finished(sender: Any, **extra: Any) -> None:
    state = _live_request.get(None)
    if state is not None:
        state.finished = True


got_request_exception.connect(_got_request_exception, dispatch_uid="live_wsgi.django")
request_finished.connect(_request_finished, dispatch_uid="live_wsgi.django")


def _teardown_then_finish(
    teardown: TeardownHook | None, environ: WSGIEnvironment, error: BaseException | None
) -> None:
    """The job's teardown, on the worker: the app's hook, then the end of the Django request."""
    try:
        if teardown is not None:
            teardown(environ, error)
    finally:
        _finish()


def _finish() -> None:
    """End the Django request on this worker: ``request_finished`` once, no connection left.

    Django sends ``request_finished`` when its response is closed; a
    response that never got that far (an error while it was handed over,
    the setup hook failing) is finished here.
    """
    state = _live_request.get(None)
    try:
        if state is not None and not state.finished:
            state.finished = True
            request_finished.send(sender=WSGIHandler)
    finally:
        for connection in connections.all(initialized_only=True):
            try:
                connection.close()
            except Exception:
                log.exception("live_wsgi: closing the database connection %r failed",
                              connection.alias)


class Live:
    """The project's WSGI application, with ``@live`` views run live.

    :param application: the project's WSGI application
        (``get_wsgi_application()``), or WSGI middleware wrapped around it.
    :param options: go to ``LiveMiddleware`` (``max_workers``, ``heartbeat``,
        ``on_error``, ``teardown``...); ``@live(...)`` overrides some per view.

    The middleware is ``.middleware``; ``.shutdown(grace)`` stops it.

    ::

        application = Live(get_wsgi_application(), max_workers=32)
    """

    def __init__(self, application: WSGIApplication, **options: Any) -> None:
        if not callable(application):
            raise TypeError(f"Live needs a WSGI application (a callable), not {application!r}")
        self.app = application
        options.setdefault("teardown", None)
        self.middleware = LiveMiddleware(
            self._wsgi, when=self._live_options, **_finishing(options)
        )

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        return self.middleware(environ, start_response)

    def shutdown(self, grace: float = 0.0) -> bool:
        """``LiveMiddleware.shutdown`` for this application."""
        return self.middleware.shutdown(grace)

    def _live_options(self, environ: WSGIEnvironment) -> Any:
        """Live-ness of a request: the options of the ``@live`` view Django resolves it to.

        As Django's handler resolves it: ``ROOT_URLCONF`` (what
        ``get_response`` sets), the path ``WSGIRequest`` computes from the
        environ, and for ``i18n_patterns`` the language ``LocaleMiddleware``
        activates for that path.
        """
        path_info = get_path_info(environ) or "/"
        urlconf = settings.ROOT_URLCONF
        try:
            resolver = get_resolver(urlconf)
            if is_language_prefix_patterns_used(urlconf)[0]:
                # LocalePrefixPattern matches the active language's prefix.
                language = translation.get_language_from_path(path_info)
                with translation.override(language or settings.LANGUAGE_CODE):
                    match = resolver.resolve(path_info)
            else:
                match = resolver.resolve(path_info)
        except Exception:  # Resolver404 mostly: Django answers it as usual
            return False
        options = getattr(match.func, _MARK, None)
        if options is None:
            return False
        return options or True

    def _wsgi(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if "live_wsgi.response" not in environ:
            return self.app(environ, start_response)  # not live: Django as usual
        return self._run_live(environ, start_response)

    def _run_live(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        """Run the application on this worker; hand its body to the job to stream.

        The job iterates the body and closes it on this worker, which sends
        Django's ``request_finished``; the teardown hook then closes this
        worker's database connections (``_finish``).
        """
        live_response = current_response()
        state = _LiveRequest()
        _live_request.set(state)

        def handed_over(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            # Django hands its response over: after the commit only a body can follow.
            if live_response.committed:
                failed, state.error = state.error, None
                if failed is None and status[:3] == live_response.status[:3]:
                    failed = _encoding_changed(live_response, headers)
                if failed is not None:
                    state.failed = failed  # raised once Django's response is closed
                    return _discard
                if exc_info is None and status[:3] == live_response.status[:3]:
                    _warn_unsent(environ, live_response, headers, state.view)
            return start_response(status, headers, exc_info)

        body = self.app(environ, handed_over)
        failed, state.failed = state.failed, None
        if failed is not None:
            try:
                _close(body)
                raise failed
            finally:
                failed = None  # no traceback cycle through this frame
        if not live_response.committed and isinstance(body, HttpResponse):
            # A whole response: hand it back as one (SPEC 2.3), exactly as
            # Django made it (Content-Length kept).
            try:
                return [body.content]
            finally:
                body.close()
        return body


def _close(body: Iterable[bytes]) -> None:
    close = getattr(body, "close", None)
    if close is not None:
        close()
