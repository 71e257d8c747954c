"""Flask integration: mark single views live.

::

    from flask import Flask
    from live_wsgi import SSE, current_response
    from live_wsgi.flask import Live, live

    app = Flask(__name__)
    Live(app, max_workers=32)

    @app.get("/events")
    @live
    def events():
        sse = SSE(current_response().stream)
        for n in range(10):
            sse.write({"n": n, "user": g.user})
        # nothing to return: the response was streamed

Only requests routed to a ``@live`` view hop to a worker; every other request
runs as before, with no hop. On the worker, a live request runs through
``app.wsgi_app`` as it was when ``Live`` was installed: the WSGI middleware
wrapped around it before (``ProxyFix``, Sentry's, a dispatcher), then Flask's
own ``wsgi_app``, as every other request does. ``request``, ``g``,
``session``, ``url_for`` and the loggers work in the view, and the request
context of a live view stays open until the stream has ended, so a returned
generator needs no ``stream_with_context`` and ``teardown_request`` /
``teardown_appcontext`` functions run after the last byte, on the worker.

Flask's own URL adapter decides which view a request goes to (SERVER_NAME,
TRUSTED_HOSTS, subdomain and host matching apply as in Flask's dispatch).
It decides before that middleware runs: a host or path it rewrites
(``ProxyFix(x_host=1)``, a dispatcher's prefix) is not seen by the decision.
Wrap such middleware around ``app.wsgi_app`` *after* ``Live(app)`` if
live-ness depends on what it rewrites.

What a live view returns:

- Nothing written yet: its return value is an ordinary Flask response
  (``after_request`` applies as usual) whose body is streamed item by item.
- Something written already (the response is committed): status and headers
  are gone. A returned body (``str``, ``bytes`` or an iterable) is appended to
  the stream; returning ``None`` is fine. A status or headers set after the
  first write (returned with the body, ``("tail", 200, {"X-Late": "1"})``,
  set on a returned ``make_response()`` object, or by an ``after_request``
  function, which still run) cannot be sent: live_wsgi logs a warning naming
  them. Set them before the first write.
- An exception in the view after the first write skips Flask's error
  handlers (no error page can be sent mid-stream): live_wsgi logs it, reports
  it and cuts the body, and teardown functions receive it. An exception in an
  ``after_request`` function after the first write goes through Flask's
  ``handle_exception`` as usual (``got_request_exception``, Flask's log, its
  500 handler), but the error page is not sent: live_wsgi logs and reports
  the exception, cuts the body, and teardown functions receive it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

from flask import Flask, Response, current_app, got_request_exception, request
from flask.globals import request_ctx
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from .middleware import LiveMiddleware
from .options import check_route_options
from .response import LiveResponse, current_response

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from flask.ctx import RequestContext
    from werkzeug.routing import MapAdapter

log = logging.getLogger("live_wsgi")

F = TypeVar("F", bound=Callable[..., Any])
_MARK = "_live_wsgi_options"
#: What Flask's ``create_url_adapter`` reads of a request besides its path
#: and method (through Werkzeug's ``get_host`` and ``bind_to_environ``):
#: requests that agree on these get the same URL adapter.
_ADAPTER_KEYS = (
    "wsgi.url_scheme", "HTTP_HOST", "SERVER_NAME", "SERVER_PORT", "SCRIPT_NAME",
    "HTTP_UPGRADE", "HTTP_CONNECTION",
)  # fmt: skip
#: URL adapters kept per app, one per host seen; all are dropped at once
#: beyond this (a client may send any Host).
ADAPTERS_KEPT = 64
_UNKNOWN = object()
#: Headers Flask adds on its own after a view; not worth a warning.
_QUIET = frozenset({"content-length", "vary", "content-type"})


class _LiveRequest:
    """What the extension keeps about the live request running on this worker."""

    __slots__ = ("ctx", "error")

    def __init__(self) -> None:
        #: Flask's request context, held open by the live view until the
        #: stream has ended (``Live._run_live`` pops it).
        self.ctx: RequestContext | None = None
        #: An error after the commit, raised when Flask hands its response
        #: over: the view's (past Flask's error handlers), or one Flask
        #: handled itself (an ``after_request`` function's) instead of its
        #: error page.
        self.error: BaseException | None = None


#: Set on the worker while ``Live`` runs a live request; the job's own Context
#: keeps it from any other request.
_live_request: ContextVar[_LiveRequest] = ContextVar("live_wsgi.flask.live_request")


def live(view: F | None = None, **options: Any) -> Any:
    """Mark a view live. ``@live`` or ``@live(heartbeat=5, excluded_keys=[...])``.

    ``options`` override the extension's for this view (see
    ``live_wsgi.middleware.ROUTE_OPTIONS``); they are checked here, where
    the view is declared.
    """
    check_route_options(options)

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            state = _live_request.get(None)
            if state is None:  # not run live by Live (called by another view, say)
                return view(*args, **kwargs)
            if state.ctx is None:
                # Push Flask's request context once more: when Flask's
                # wsgi_app pops it on its way out, it stays open (no teardown
                # yet) until the stream has ended and _run_live pops it.
                state.ctx = request_ctx._get_current_object()  # type: ignore[attr-defined]
                state.ctx.push()
            response = current_response()
            try:
                rv = view(*args, **kwargs)
                if response.committed:
                    return _after_commit(response, rv)
            except Exception as exc:
                if not response.committed:
                    raise  # Flask's error handlers answer it, as usual
                # No error page can follow the first write: skip Flask's
                # error handlers. after_request runs on this stand-in, then
                # _run_live raises the error when Flask hands it over.
                state.error = exc
                return current_app.response_class(status=response.status)
            return rv

        setattr(wrapper, _MARK, options)
        return wrapper  # type: ignore[return-value]

    if view is not None:
        return decorate(view)
    return decorate


def _after_commit(live_response: LiveResponse, rv: Any) -> Response:
    """What a live view returned after its first write: only its body can follow.

    Flask reads a tuple or a response as usual (``make_response``); the
    status stays the committed one, and a different one is named in a
    warning. Headers are compared with the committed ones when Flask hands
    the response over (``_warn_unsent``), after ``after_request``.
    """
    body = rv[0] if isinstance(rv, tuple) else rv
    if isinstance(body, (dict, list)):
        raise TypeError("a live view that streamed cannot return JSON as well")
    if isinstance(rv, (tuple, BaseResponse)):
        response = current_app.make_response(rv)
        if response.status_code != live_response.status_code:
            log.warning(
                "live_wsgi: %s %s: status %r was set after the live response was "
                "committed as %r and was not sent; set it before the first write",
                request.method, request.path, response.status, live_response.status,
            )
    else:
        response = current_app.response_class(() if rv is None else rv)
    response.status = live_response.status
    return response


def _warn_unsent(
    environ: WSGIEnvironment, live_response: LiveResponse, headers: list[tuple[str, str]]
) -> None:
    """Name the headers Flask hands over after the commit that were not sent."""
    unsent = live_response.unsent_headers(headers, _QUIET)
    if unsent:
        log.warning(
            "live_wsgi: %s %s: header(s) %s were set after the live response was "
            "committed (in the view after its first write, or in an after_request "
            "function) and were not sent; set them before the first write",
            environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"), ", ".join(unsent),
        )


class Live:
    """The Flask extension: ``Live(app, **options)`` or ``Live().init_app(app)``.

    ``options`` go to ``LiveMiddleware`` (``max_workers``, ``heartbeat``,
    ``excluded_keys``...). The middleware is ``app.extensions["live_wsgi"].middleware``.
    """

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        self.options = options
        self.middleware: LiveMiddleware | None = None
        self.app: Flask | None = None
        self._adapters: dict[tuple[Any, ...], MapAdapter | None] | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        if "live_wsgi" in app.extensions:
            raise RuntimeError("live_wsgi.flask.Live is already installed on this app")
        self.app = app
        # Keep URL adapters unless the app makes them from more than Flask
        # does (an overridden create_url_adapter may read any header).
        own_adapter = getattr(app.create_url_adapter, "__func__", None)
        self._adapters = {} if own_adapter is Flask.create_url_adapter else None
        # Flask's wsgi_app, or the middleware already wrapped around it
        # (ProxyFix, Sentry...): every request, live or not, runs through it.
        self._stack: WSGIApplication = app.wsgi_app
        self.middleware = LiveMiddleware(self._wsgi, when=self._live_options, **self.options)
        app.wsgi_app = self.middleware  # type: ignore[method-assign]
        app.extensions["live_wsgi"] = self
        got_request_exception.connect(self._got_request_exception, app)

    def shutdown(self, grace: float = 0.0) -> bool:
        """``LiveMiddleware.shutdown`` for this app."""
        assert self.middleware is not None
        return self.middleware.shutdown(grace)

    def _live_options(self, environ: WSGIEnvironment) -> Any:
        """Live-ness of a request: the options of the ``@live`` view Flask routes it to.

        Flask's own URL adapter for the request decides, so SERVER_NAME,
        TRUSTED_HOSTS, subdomain and host matching apply as in Flask's
        dispatch. It runs on every request: the adapter is kept per host
        (``_ADAPTER_KEYS``), and matching the path is the one step left.
        """
        app = self.app
        assert app is not None
        adapter = self._url_adapter(environ)
        if adapter is None:
            return False  # an untrusted host: Flask answers 400 as usual
        try:
            # Text, as Werkzeug's bind_to_environ makes it of the WSGI string.
            path = environ.get("PATH_INFO", "/").encode("latin-1").decode(errors="replace")
            endpoint, _ = adapter.match(path, environ.get("REQUEST_METHOD") or "GET")
        except (HTTPException, UnicodeError):
            return False  # 404, 405, redirects: Flask answers them as usual
        options = getattr(app.view_functions.get(str(endpoint)), _MARK, None)
        if options is None:
            return False
        return options or True

    def _url_adapter(self, environ: WSGIEnvironment) -> MapAdapter | None:
        adapters = self._adapters
        if adapters is None:
            return self._create_url_adapter(environ)
        key = tuple(map(environ.get, _ADAPTER_KEYS))
        adapter = adapters.get(key, _UNKNOWN)
        if adapter is _UNKNOWN:
            adapter = self._create_url_adapter(environ)
            if len(adapters) >= ADAPTERS_KEPT:
                adapters.clear()
            adapters[key] = adapter
        return adapter  # type: ignore[return-value]

    def _create_url_adapter(self, environ: WSGIEnvironment) -> MapAdapter | None:
        app = self.app
        assert app is not None
        try:
            return app.create_url_adapter(
                app.request_class(environ, populate_request=False, shallow=True)
            )
        except HTTPException:  # SecurityError: the host is not in TRUSTED_HOSTS
            return None

    def _got_request_exception(
        self, sender: Flask, exception: BaseException, **extra: Any
    ) -> None:
        """Flask handles an error after the first write (an ``after_request`` failed).

        Its error page cannot follow the streamed body: when Flask hands that
        page over, the error itself is raised instead, so it is the one
        logged, reported and given to teardown, and the body is cut.
        """
        state = _live_request.get(None)
        if state is not None and current_response().committed:
            state.error = exception

    def _wsgi(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if "live_wsgi.response" not in environ:
            return self._stack(environ, start_response)  # not live: Flask as usual
        return self._run_live(environ, start_response)

    def _run_live(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        """Run the stack on this worker and stream its body; end the request context last.

        Flask's own ``wsgi_app`` dispatches, handles errors before the commit
        and pops its request context on its way out; a live view pushed that
        context once more (see ``live``), so it stays open while the body
        streams and its teardown runs here, after the last byte, with the
        error that ended the stream.
        """
        app = self.app
        assert app is not None
        live_response = current_response()
        stream = live_response.stream
        # Flask's test client (``with client:``) and Werkzeug's debugger would
        # push the request's contexts again on their own thread while this
        # worker still holds them: a live request keeps its contexts here.
        environ.pop("werkzeug.debug.preserve_context", None)
        state = _LiveRequest()
        token = _live_request.set(state)

        def handed_over(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            # Flask hands its response over: after the commit only a body can follow.
            if live_response.committed:
                failed, state.error = state.error, None
                if failed is not None:
                    raise failed
                if exc_info is None and status[:3] == live_response.status[:3]:
                    _warn_unsent(environ, live_response, headers)
            return start_response(status, headers, exc_info)

        error: BaseException | None = None
        try:
            body = self._stack(environ, handed_over)
            try:
                for chunk in body:
                    stream.write(chunk)
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()
            stream.close()
        except BaseException as exc:
            error = exc
            raise
        finally:
            _live_request.reset(token)
            ctx = state.ctx
            if ctx is not None:
                if error is not None and app.should_ignore_error(error):
                    error = None
                ctx.pop(error)
            error = None  # no traceback cycle through this frame
        return []
