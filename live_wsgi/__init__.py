"""live_wsgi: stream WSGI responses live from a worker thread.

The Rails ``ActionController::Live`` model for any WSGI app: the app runs on
a pool thread and writes its body while the server thread sends it.
"""

from __future__ import annotations

from .context import share_local, unshare_local
from .errors import (
    BrokerUnavailable,
    ClientDisconnected,
    CommitTimeout,
    ContentLengthError,
    HeadersAlreadySent,
    LiveError,
    ResponseAborted,
    StreamClosed,
    WriteTimeout,
)
from .files import send_stream
from .middleware import LiveMiddleware
from .response import LiveResponse, current_response
from .sse import SSE, last_event_id
from .stream import Stream

__all__ = [
    "SSE",
    "BrokerUnavailable",
    "ClientDisconnected",
    "CommitTimeout",
    "ContentLengthError",
    "HeadersAlreadySent",
    "LiveError",
    "LiveMiddleware",
    "LiveResponse",
    "ResponseAborted",
    "Stream",
    "StreamClosed",
    "WriteTimeout",
    "current_response",
    "last_event_id",
    "send_stream",
    "share_local",
    "unshare_local",
]
