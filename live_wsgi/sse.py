"""Server-sent events on a live stream.

::

    sse = SSE(current_response().stream, retry=2000)
    sse.write({"price": 12.5}, event="tick", id="41")

Each event is encoded to the exact bytes of the WHATWG event-stream format
and handed to the stream in one write, so the server thread never sends
half an event (and a heartbeat can never land inside one).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from .stream import Stream

CONTENT_TYPE = "text/event-stream"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_FORBIDDEN = re.compile(r"[\r\n\x00]")


def _check_field(name: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"SSE {name} must be a str, not {type(value).__name__}")
    if _FORBIDDEN.search(value):
        raise ValueError(f"SSE {name} must not contain CR, LF or NUL: {value!r}")
    return value


def _check_id(value: object) -> str | None:
    """An event id: a str, or an int written in decimal (a ``bool`` is no id)."""
    if isinstance(value, bool):
        raise TypeError(f"SSE id must be a str or an int, not a bool ({value!r})")
    if isinstance(value, int):
        return str(int(value))  # decimal, also for an IntEnum
    if value is not None and not isinstance(value, str):
        raise TypeError(f"SSE id must be a str or an int, not {type(value).__name__}")
    return _check_field("id", value)


def _check_retry(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"SSE retry must be an int >= 0 (milliseconds), not {value!r}")
    return value


def encode_event(
    data: object,
    *,
    event: str | None = None,
    id: str | int | None = None,
    retry: int | None = None,
) -> bytes:
    """The exact bytes of one event: ``retry``, ``event``, ``id``, then data.

    ``str`` data is sent as is; anything else as compact JSON (UTF-8). Data
    is split on CR LF, CR and LF into one ``data:`` line each. An ``int`` id
    is written in decimal.

    :raises ValueError: CR, LF or NUL in ``event`` or ``id``; NaN or
        Infinity in the data (as ``json.dumps(allow_nan=False)``).
    :raises TypeError: data JSON cannot encode; an id that is neither a
        ``str`` nor an ``int`` (a ``bool`` included).
    """
    event = _check_field("event", event)
    id = _check_id(id)
    retry = _check_retry(retry)
    if isinstance(data, str):
        text = data
    else:
        try:
            text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except ValueError as exc:  # NaN, Infinity (or a circular reference)
            raise ValueError(f"SSE data is not valid JSON: {exc}") from exc
        except TypeError as exc:
            raise TypeError(f"SSE data must be a str or JSON-serializable: {exc}") from exc
    parts = []
    if retry is not None:
        parts.append(f"retry: {retry}\n")
    if event is not None:
        parts.append(f"event: {event}\n")
    if id is not None:
        parts.append(f"id: {id}\n")
    for line in _LINE_BREAK.split(text):
        parts.append(f"data: {line}\n")
    parts.append("\n")
    return "".join(parts).encode("utf-8")


def encode_comment(text: str = "") -> bytes:
    """A comment (ignored by clients, keeps proxies and connections alive)."""
    if not isinstance(text, str):
        raise TypeError(f"SSE comment must be a str, not {type(text).__name__}")
    if "\x00" in text:
        raise ValueError("SSE comment must not contain NUL")
    return "".join(f": {line}\n" for line in _LINE_BREAK.split(text)).encode("utf-8")


class SSE:
    """Write server-sent events to ``stream``.

    :param stream: a live stream, usually ``current_response().stream``.
    :param retry: default reconnection time in milliseconds for every event.
    :param event: default event type.
    :param id: default event id (a ``str``, or an ``int`` written in decimal).

    While the response is pending, sets ``Content-Type: text/event-stream``.
    Options given to ``write`` override these; ``None`` means not given.
    """

    def __init__(
        self,
        stream: Stream,
        retry: int | None = None,
        event: str | None = None,
        id: str | int | None = None,
    ) -> None:
        self.stream = stream
        self.retry = _check_retry(retry)
        self.event = _check_field("event", event)
        self.id = _check_id(id)
        response = stream._response
        if not response.committed:
            response.headers["Content-Type"] = CONTENT_TYPE

    def write(
        self,
        data: Any,
        *,
        event: str | None = None,
        id: str | int | None = None,
        retry: int | None = None,
    ) -> int:
        """Send one event in one stream write; return the bytes written."""
        return self.stream.write(
            encode_event(
                data,
                event=self.event if event is None else event,
                id=self.id if id is None else id,
                retry=self.retry if retry is None else retry,
            )
        )

    def comment(self, text: str = "") -> int:
        """Send a comment line (``: text``)."""
        return self.stream.write(encode_comment(text))

    def close(self) -> None:
        """End the event stream."""
        self.stream.close()


def last_event_id(environ: WSGIEnvironment) -> str | None:
    """The ``Last-Event-ID`` a reconnecting client sent, or None.

    Reads the header, else a ``lastEventId`` query parameter (for clients that
    cannot set headers, such as a first ``EventSource`` connection).
    """
    value = environ.get("HTTP_LAST_EVENT_ID")
    if value is not None:
        # WSGI hands header bytes over decoded as latin-1; browsers send UTF-8.
        return str(value).encode("latin-1").decode("utf-8", "replace")
    else:
        values = parse_qs(environ.get("QUERY_STRING", "")).get("lastEventId")
        value = values[0] if values else None
    return value
