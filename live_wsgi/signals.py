"""Signals (blinker) for APMs, logs and error trackers.

Each is sent with the ``LiveMiddleware`` as sender and keyword arguments:

- ``stream_started``: the job started on its worker (in the request's
  copied context). ``environ``, ``method``, ``path``.
- ``stream_committed``: status and headers were handed to the server.
  ``environ``, ``method``, ``path``, ``status``, ``headers``.
- ``stream_closed``: the body ended, sent on the server thread.
  ``environ``, ``method``, ``path``, ``status``, ``bytes_sent``,
  ``duration`` (seconds since the request reached the middleware), and
  ``outcome``: ``"complete"``, ``"cut"`` (ended incomplete after an error)
  or ``"disconnected"``.
- ``client_disconnected``: the client went away before the body ended.
  ``environ``, ``method``, ``path``, ``status``, ``bytes_sent``, ``duration``.
- ``stream_error``: the app failed after the commit (errors before it are
  raised on the server thread instead). ``environ``, ``method``, ``path``,
  ``status``, ``bytes_sent``, ``duration``, ``error``.
- ``send_stream``: a download started. ``environ``, ``filename``,
  ``disposition``, ``type``, ``size``.
- ``stream_refused``: a live request was turned away before it ran (every
  pool thread busy past ``queue_timeout``, or shutting down). ``environ``,
  ``method``, ``path``, ``answer`` (``"503"``, or ``"retry"`` for an
  ``EventSource``, which gets 200 and a ``retry:`` field), ``reason``
  (``"busy"`` or ``"shutdown"``).

The broker's reader (``live_wsgi.redis_broker``) sends two more, with the
broker as sender, once per outage of a process that has subscriptions:

- ``broker_disconnected``: the broker cannot be reached; open streams stay
  open and the reader reconnects with backoff. ``error``.
- ``broker_reconnected``: it can be reached again; each channel resumed, or
  its subscribers got a reset (SPEC 9.6). ``downtime`` (seconds).

Receivers run on the thread that sends; an exception in one (a
``BaseException`` too) is logged and never breaks the stream.
"""

from __future__ import annotations

import logging
from typing import Any

from blinker import NamedSignal, Namespace

log = logging.getLogger("live_wsgi")

_signals = Namespace()

stream_started = _signals.signal("live_wsgi.stream_started")
stream_committed = _signals.signal("live_wsgi.stream_committed")
stream_closed = _signals.signal("live_wsgi.stream_closed")
client_disconnected = _signals.signal("live_wsgi.client_disconnected")
stream_error = _signals.signal("live_wsgi.stream_error")
send_stream = _signals.signal("live_wsgi.send_stream")
stream_refused = _signals.signal("live_wsgi.stream_refused")
broker_disconnected = _signals.signal("live_wsgi.broker_disconnected")
broker_reconnected = _signals.signal("live_wsgi.broker_reconnected")


def emit(signal: NamedSignal, sender: Any, **facts: Any) -> None:
    """Send ``signal`` if anybody listens; log (never raise) receiver errors."""
    if not signal.receivers:
        return
    try:
        signal.send(sender, **facts)
    except BaseException:  # a receiver never breaks the stream's cleanup
        log.exception("live_wsgi: a receiver of %s failed", signal.name)
