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
runs as before, with no hop. A live request runs the *whole* Flask dispatch
on the worker: ``request``, ``g``, ``session``, ``url_for`` and the loggers
work in the view, and the request context stays open until the stream has
ended, so a returned generator needs no ``stream_with_context`` and
``teardown_request`` / ``teardown_appcontext`` functions run after the last
byte, on the worker thread.

What a live view returns:

- Nothing written yet: its return value is an ordinary Flask response
  (``after_request`` applies as usual) whose body is streamed item by item.
- Something written already (the response is committed): status and headers
  are gone. A returned body (``str``, ``bytes`` or an iterable) is appended to
  the stream; returning ``None`` is fine. ``after_request`` functions still
  run, but header changes they make cannot be sent: live_wsgi logs a warning
  naming the headers. Set headers before the first write.
- An exception after the first write skips Flask's error handlers (no error
  page can be sent mid-stream): live_wsgi logs it, reports it and cuts the
  body, and teardown functions receive it.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from .middleware import LiveMiddleware
from .response import LiveResponse, current_response

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

log = logging.getLogger("live_wsgi")

F = TypeVar("F", bound=Callable[..., Any])
_MARK = "_live_wsgi_options"
#: Headers Flask adds on its own after a view; not worth a warning.
_QUIET = frozenset({"content-length", "vary", "content-type"})


def live(view: F | None = None, **options: Any) -> Any:
    """Mark a view live. ``@live`` or ``@live(heartbeat=5, excluded_keys=[...])``.

    ``options`` override the extension's for this view (see
    ``live_wsgi.middleware.ROUTE_OPTIONS``).
    """

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            response = current_response()
            try:
                rv = view(*args, **kwargs)
            except Exception as exc:
                if response.committed:
                    return _Streamed(response, error=exc)
                raise
            if response.committed:
                return _Streamed(response, body=rv)
            return rv

        setattr(wrapper, _MARK, options)
        return wrapper  # type: ignore[return-value]

    if view is not None:
        return decorate(view)
    return decorate


class _Streamed(Response):
    """What a live view returns once it has committed: only a body can follow."""

    def __init__(
        self,
        live_response: LiveResponse,
        body: Any = None,
        error: BaseException | None = None,
    ) -> None:
        super().__init__(response=[], status=live_response.status,
                         headers=list(live_response.headers.items()))
        self._sent = {(k.lower(), v) for k, v in live_response.headers.items()}
        self._body = body
        self._error = error

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        unsent = sorted({
            name for name, value in self.headers.items()
            if (name.lower(), value) not in self._sent and name.lower() not in _QUIET
        })  # fmt: skip
        if unsent:
            log.warning(
                "live_wsgi: %s %s: header(s) %s were set after the live response "
                "was committed (in the view after its first write, or in an "
                "after_request function) and were not sent; set them before "
                "the first write",
                environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"), ", ".join(unsent),
            )
        body = self._body
        if isinstance(body, tuple):
            log.warning("live_wsgi: a live view returned a status or headers after "
                        "streaming; only its body is sent")
            body = body[0]
        if body is None:
            return []
        if isinstance(body, Response):
            return body.iter_encoded()
        if isinstance(body, str):
            return [body.encode("utf-8")]
        if isinstance(body, (bytes, bytearray)):
            return [bytes(body)]
        if isinstance(body, dict | list):
            raise TypeError("a live view that streamed cannot return JSON as well")
        return body  # type: ignore[no-any-return]


class Live:
    """The Flask extension: ``Live(app, **options)`` or ``Live().init_app(app)``.

    ``options`` go to ``LiveMiddleware`` (``max_workers``, ``heartbeat``,
    ``excluded_keys``...). The middleware is ``app.extensions["live_wsgi"].middleware``.
    """

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        self.options = options
        self.middleware: LiveMiddleware | None = None
        self.app: Flask | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        if "live_wsgi" in app.extensions:
            raise RuntimeError("live_wsgi.flask.Live is already installed on this app")
        self.app = app
        self._plain = app.wsgi_app
        self.middleware = LiveMiddleware(self._wsgi, when=self._live_options, **self.options)
        app.wsgi_app = self.middleware  # type: ignore[method-assign]
        app.extensions["live_wsgi"] = self

    def shutdown(self, grace: float = 0.0) -> bool:
        """``LiveMiddleware.shutdown`` for this app."""
        assert self.middleware is not None
        return self.middleware.shutdown(grace)

    def _live_options(self, environ: WSGIEnvironment) -> Any:
        app = self.app
        assert app is not None
        adapter = app.url_map.bind_to_environ(
            environ, server_name=app.config["SERVER_NAME"], subdomain=None
        )
        try:
            endpoint, _ = adapter.match()
        except HTTPException:
            return False  # 404, 405, redirects: Flask answers them as usual
        options = getattr(app.view_functions.get(str(endpoint)), _MARK, None)
        if options is None:
            return False
        return options or True

    def _wsgi(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if "live_wsgi.response" not in environ:
            return self._plain(environ, start_response)  # not live: Flask as usual
        return self._dispatch_live(environ, start_response)

    def _dispatch_live(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        """Flask's ``wsgi_app``, keeping the request context open until the end."""
        app = self.app
        assert app is not None
        stream = current_response().stream
        ctx = app.request_context(environ)
        error: BaseException | None = None
        try:
            try:
                ctx.push()
                response = app.full_dispatch_request()
            except Exception as exc:
                error = exc
                response = app.handle_exception(exc)
            except BaseException:
                error = sys.exc_info()[1]
                raise
            try:
                body = response(environ, start_response)
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
            return []
        finally:
            if error is not None and app.should_ignore_error(error):
                error = None
            ctx.pop(error)
