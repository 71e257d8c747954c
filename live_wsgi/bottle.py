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

Only requests routed to a live route hop to a worker. Bottle keeps
``bottle.request`` and ``bottle.response`` in thread-locals, so the whole
Bottle app runs on the worker for those requests and binds them there:
both are correct in the callback. A callback may return a body (a generator
streams item by item) or write to ``current_response().stream``; once it has
written, status and headers set on ``bottle.response`` are no longer sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import bottle

from .middleware import LiveMiddleware

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment


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
        self.middleware = LiveMiddleware(app.wsgi, when=self._live_options, **self.options)
        app.wsgi = self.middleware

    def apply(self, callback: Any, route: Any) -> Any:
        return callback  # the decision is made before Bottle dispatches

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
        config = route.config
        option = config.get("live")
        if option is None:
            # Bottle's ConfigDict flattens live={"heartbeat": 5} into keys
            # like "live.heartbeat".
            nested = {key[5:]: value for key, value in config.items()
                      if key.startswith("live.")}  # fmt: skip
            return nested or False
        if isinstance(option, dict):
            return option or True
        return bool(option)
