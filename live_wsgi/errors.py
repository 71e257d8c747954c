"""Every exception live_wsgi raises.

The names tell *who* ended a stream, so a producer can react to each:

- ``StreamClosed``: your side closed (or aborted) the stream; writing again
  is a bug in the producer.
- ``ClientDisconnected``: the other side went away (or can no longer be
  reached); stop producing.
- ``WriteTimeout``: the client stopped reading for longer than
  ``write_timeout``. It is a ``ClientDisconnected`` *and* a ``TimeoutError``.
- ``CommitTimeout``: the app did not commit within ``commit_timeout``; the
  server thread already answered 504.
- ``HeadersAlreadySent``: status or headers changed after the commit.
- ``ContentLengthError``: a response that declared its length wrote more or
  less than that.
- ``BrokerUnavailable``: the broadcast broker cannot be reached; the publish
  did not happen (or, after a timeout, may or may not have).
"""

from __future__ import annotations


class LiveError(Exception):
    """Base class of every live_wsgi exception."""


class StreamClosed(LiveError):
    """The stream was closed or aborted by the producer's own side."""


class ClientDisconnected(LiveError):
    """The client went away; nothing written now can reach it."""


class WriteTimeout(ClientDisconnected, TimeoutError):
    """A write stayed blocked on a full queue for longer than ``write_timeout``.

    The client stopped reading; the stream is aborted.
    """


class CommitTimeout(ClientDisconnected, TimeoutError):
    """The app did not commit within ``commit_timeout``.

    The server thread has answered ``504 Gateway Timeout`` instead, so this
    response can no longer reach the client.
    """


class HeadersAlreadySent(LiveError, RuntimeError):
    """Status or headers were changed after the response was committed."""


class ContentLengthError(LiveError, ValueError):
    """The body did not match the length the response declared."""


class ResponseAborted(LiveError):
    """Raised *to the server* from the body iterator to cut the connection.

    After the commit the status line is gone, so an error can only be shown
    by ending the body without its final chunk. Where live_wsgi can reach the
    client socket it shuts it down itself; elsewhere it raises this so the
    server drops the connection. The cause was logged on the ``live_wsgi``
    logger already.
    """


class BrokerUnavailable(LiveError):
    """The broadcast broker cannot be reached: the publish did not happen."""
