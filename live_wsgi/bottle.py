"""Bottle integration: a plugin that marks routes live.

::

    import bottle
    from live_wsgi import current_response
    from live_wsgi.bottle import LivePlugin

    app = bottle.Bottle()
    app.install(LivePlugin(max_workers=32))

    @app.route("/ticks", live=True)            # or live={"heartbeat": 5}
    def ticks():
        bottle.response.content_type = "text/plain"   # before the first yield
        for i in range(10):
            yield f"tick {i} for {bottle.request.query.name}\\n"

Only requests routed to a live route hop to a worker (decided on the path
Bottle routes, decoded as UTF-8). Bottle keeps ``bottle.request`` and
``bottle.response`` in thread-locals, so the whole Bottle app runs on the
worker for those requests and binds them there: both are correct in the
callback. Each job on a pool thread starts with them unbound and leaves them
unbound: a ``setup`` hook finds them unbound (it gets the environ), and
nothing of one request reaches the next. A callback may return a body (a
generator streams item by item) or write to ``current_response().stream``.
A callback that writes sets its status and headers on ``current_response()``
before its first write; those on ``bottle.response`` are sent only with a
returned body. Once it has written, an exception, ``abort()`` or a status
other than 200 left on ``bottle.response`` (other than the one sent) is an
error: the body is cut, since Bottle's error page cannot follow it, and
live_wsgi logs and reports the exception (on Bottle 0.12 too, which passes
no ``exc_info``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import bottle

from .middleware import LiveMiddleware
from .options import SetupHook, TeardownHook, check_route_options
from .response import current_response

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

#: What unbinds Bottle's thread-locals: the deleters of the properties of
#: ``bottle.request`` and ``bottle.response`` that hold a value per thread
#: (called directly: Bottle's ``__delattr__`` means something else). Bottle
#: binds them when a request starts and never unbinds them, so a pool thread
#: would hand one request's to the next job's hooks and signal receivers.
_UNBINDERS = [
    functools.partial(attribute.fdel, local)
    for local in (bottle.request, bottle.response)
    for attribute in vars(type(local)).values()
    if isinstance(attribute, property) and attribute.fdel is not None
]


def _unbind() -> None:
    """Leave ``bottle.request`` and ``bottle.response`` unbound on this thread."""
    for unbind in _UNBINDERS:
        with contextlib.suppress(AttributeError):  # not bound on this thread
            unbind()


def _unbind_then_setup(setup: SetupHook | None, environ: WSGIEnvironment) -> None:
    _unbind()  # the job starts with nothing of an earlier request
    if setup is not None:
        setup(environ)


def _teardown_then_unbind(
    teardown: TeardownHook | None, environ: WSGIEnvironment, error: BaseException | None
) -> None:
    try:
        if teardown is not None:
            teardown(environ, error)
    finally:
        _unbind()  # the job leaves nothing for the next one on this thread


def _unbinding(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` whose setup and teardown hooks also unbind Bottle's thread-locals.

    LiveMiddleware runs them on the worker first and last in each job.
    """
    hooked = dict(options)
    setup = hooked.get("setup", ())
    if setup is None or callable(setup):  # else LiveMiddleware refuses it
        hooked["setup"] = functools.partial(_unbind_then_setup, setup)
    teardown = hooked.get("teardown", ())
    if teardown is None or callable(teardown):
        hooked["teardown"] = functools.partial(_teardown_then_unbind, teardown)
    return hooked


class _Failure:
    """The error a live route raised after its first write."""

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: BaseException | None = None


#: Set on the worker while Bottle runs a live request.
_failure: ContextVar[_Failure] = ContextVar("live_wsgi.bottle.failure")


def _route_options(route: Any) -> Any:
    """A route's ``live`` option: False, True or a dict of options."""
    config = route.config
    option = config.get("live")
    if option is None:
        # Bottle's ConfigDict flattens live={"heartbeat": 5} into keys like
        # "live.heartbeat".
        option = {key[5:]: value for key, value in config.items()
                  if key.startswith("live.")}  # fmt: skip
        if not option:
            return False
    if isinstance(option, Mapping):  # a dict; on Bottle 0.12, a ConfigDict.Namespace
        return dict(option) or True
    return bool(option)


def _checked_route(route: Any) -> None:
    option = _route_options(route)
    if isinstance(option, dict):
        try:
            check_route_options(option)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"route {route.method} {route.rule!r}: {exc}") from None


class LivePlugin:
    """Run routes declared with ``live=True`` (or a dict of options) live.

    ``options`` go to ``LiveMiddleware``; the middleware is ``plugin.middleware``.
    """

    name = "live_wsgi"
    api = 2

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.middleware: LiveMiddleware | None = None
        self._app: bottle.Bottle | None = None

    def setup(self, app: bottle.Bottle) -> None:
        if self.middleware is not None:
            raise RuntimeError("a LivePlugin can be installed on one Bottle app only")
        self._app = app
        # Bottle.__call__ calls self.wsgi: wrap it on this instance only.
        self._bottle_wsgi: WSGIApplication = app.wsgi
        options = _unbinding({"setup": None, "teardown": None, **self.options})
        self.middleware = LiveMiddleware(self._wsgi, when=self._live_options, **options)
        app.wsgi = self.middleware
        # Check each route's live options where it is declared, not at its
        # first request: the routes so far, and every one added from now on.
        for route in app.routes:
            _checked_route(route)
        add_route = app.add_route

        def checked_add_route(route: Any) -> Any:
            _checked_route(route)
            return add_route(route)

        app.add_route = checked_add_route

    def apply(self, callback: Any, route: Any) -> Any:
        # The decision is made before Bottle dispatches; a live callback only
        # notes an error it raises after its first write (see _wsgi).
        if not _route_options(route):
            return callback

        @functools.wraps(callback)
        def live_callback(*args: Any, **kwargs: Any) -> Any:
            try:
                return callback(*args, **kwargs)
            except bottle.HTTPResponse:
                raise  # abort(), redirect(): Bottle's answers, not errors
            except Exception as exc:
                failure = _failure.get(None)
                if failure is not None and current_response().committed:
                    failure.error = exc
                raise

        return live_callback

    def close(self) -> None:
        if self.middleware is not None:
            self.middleware.shutdown()

    def _live_options(self, environ: WSGIEnvironment) -> Any:
        assert self._app is not None
        path = environ.get("PATH_INFO") or "/"
        if not path.isascii():
            # Bottle routes on PATH_INFO decoded as UTF-8 (Bottle._handle does
            # it before routing; 0.12 answers 400 where 0.13 drops undecodable
            # bytes): decide on the path Bottle will route.
            try:
                path = path.encode("latin-1").decode("utf-8", "ignore")
            except UnicodeError:
                return False  # Bottle fails this request itself
            environ = {**environ, "PATH_INFO": path}
        try:
            route, _ = self._app.router.match(environ)
        except bottle.HTTPError:
            return False
        option = _route_options(route)
        if isinstance(option, dict) and ("setup" in option or "teardown" in option):
            return _unbinding(option)  # the route's own hooks unbind too
        return option

    def _wsgi(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if "live_wsgi.response" not in environ:
            return self._bottle_wsgi(environ, start_response)  # not live: Bottle as usual
        live_response = current_response()
        failure = _Failure()
        token = _failure.set(failure)

        def handed_over(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            # Bottle hands its response over. After the route failed past its
            # first write that is Bottle's error page, which cannot follow the
            # streamed body: raise the route's error instead, so that it is
            # the one logged and reported (Bottle 0.12 passes no exc_info).
            failed, failure.error = failure.error, None
            if live_response.committed:
                if failed is not None:
                    raise failed
                if exc_info is None and status[:3] == "200":
                    # Bottle's own default: the route set its status on
                    # current_response(), which went out with the first write.
                    status = live_response.status
            return start_response(status, headers, exc_info)

        try:
            return self._bottle_wsgi(environ, handed_over)
        finally:
            _failure.reset(token)
