"""The live response: status and headers until the commit, then the stream.

``current_response()`` returns it on the worker thread running the request
(and in any thread started with a copy of that thread's context); it is also
at ``environ["live_wsgi.response"]``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from werkzeug.datastructures import Headers
from werkzeug.http import HTTP_STATUS_CODES, is_hop_by_hop_header

from .channel import CUT
from .errors import ContentLengthError, HeadersAlreadySent, StreamClosed
from .stream import Stream

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from .channel import Channel

_current: ContextVar[LiveResponse] = ContextVar("live_wsgi.response")

_STATUS_RE = re.compile(r"([1-9][0-9]{2}) ([^\x00-\x08\x0a-\x1f\x7f]*)")
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def current_response() -> LiveResponse:
    """The live response of the request this thread is producing.

    :raises RuntimeError: outside a live request (for example on the server
        thread, or in a request ``LiveMiddleware`` passed straight through).
    """
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError(
            "current_response() was called outside a live request. It works in "
            "an app running under LiveMiddleware, on the worker thread (or in a "
            "thread started with contextvars.copy_context() from there). Likely "
            "causes: LiveMiddleware's when= returned false for this path, or "
            "the view is not marked live (@live in Flask, live=True in Bottle, "
            "@live in Django), or the code runs on the server thread."
        ) from None


def no_body_status(code: int) -> bool:
    """True for status codes that never carry a body (1xx, 204, 304)."""
    return code < 200 or code in (204, 304)


def normalize_status(status: object) -> str:
    """Check a WSGI status line and return it, adding a reason if missing.

    ``"404"`` and ``404`` become ``"404 Not Found"``; CR, LF and other
    control characters are refused, so a status can never inject a header.
    """
    if type(status) is str:
        known = _CHECKED_STATUS.get(status)
        if known is not None:
            return known
    elif isinstance(status, int) and not isinstance(status, bool):
        return _status_line(status)
    if not isinstance(status, str):
        raise TypeError(
            f"status must be a str like '200 OK' or an int, not {type(status).__name__}"
        )
    if status.isdigit() and len(status) == 3:
        return _status_line(int(status))
    match = _STATUS_RE.fullmatch(status)
    if match is None:
        raise ValueError(
            f"invalid status line {status!r}: it must be three digits, a space "
            "and a reason phrase without control characters, like '200 OK'"
        )
    try:
        status.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(
            f"invalid status line {status!r}: the reason phrase must be latin-1"
        ) from None
    if type(status) is str:
        _remember(_CHECKED_STATUS, status, status)
    return status


def _status_line(code: int) -> str:
    if not 100 <= code <= 999:
        raise ValueError(f"invalid status code {code}: it must be in 100..999")
    return f"{code} {HTTP_STATUS_CODES.get(code, 'Unknown')}"


def check_header(name: object, value: object) -> tuple[str, str]:
    """Return ``(name, value)`` if both are safe to send, else raise.

    The name must be an RFC 9110 token; the value must be latin-1 without
    control characters (no CR, LF or NUL: no header injection).
    """
    if type(name) is str and type(value) is str:
        header = (name, value)
        if header in _CHECKED_HEADERS:
            return header
    elif not isinstance(name, str) or not isinstance(value, str):
        raise TypeError(
            f"header names and values must be str, got {name!r}: {value!r}"
        )
    if not _TOKEN_RE.fullmatch(name):
        raise ValueError(f"invalid header name {name!r}: it must be an HTTP token")
    if _BAD_VALUE_RE.search(value):
        raise ValueError(
            f"invalid value for header {name!r}: it contains a control "
            "character (CR, LF, NUL...), which could inject a header"
        )
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(
            f"invalid value for header {name!r}: WSGI header values must be "
            "latin-1; encode other text (RFC 8187) first"
        ) from None
    if type(name) is str and type(value) is str:
        _remember(_CHECKED_HEADERS, (name, value), True)
    return name, value


#: Status lines and headers that passed the checks, so the same ones (most
#: responses repeat a few) cost a dict lookup the next time. Only exact
#: ``str`` is remembered (a subclass could compare equal and encode
#: otherwise); each is emptied when it reaches ``_CHECKED_MAX`` entries, so
#: varying values (cookies, ETags) cannot grow it.
_CHECKED_STATUS: dict[str, str] = {}
_CHECKED_HEADERS: dict[tuple[str, str], bool] = {}
_CHECKED_MAX = 2048


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= _CHECKED_MAX:
        cache.clear()
    cache[key] = value


def _guard(method_name: str) -> Callable[..., Any]:
    parent = getattr(Headers, method_name)

    def guarded(self: ResponseHeaders, *args: Any, **kwargs: Any) -> Any:
        if self.frozen:
            raise HeadersAlreadySent(
                f"headers.{method_name}() after the response was committed: "
                "set every header before the first write or close"
            )
        return parent(self, *args, **kwargs)

    guarded.__name__ = method_name
    guarded.__doc__ = parent.__doc__
    return guarded


class ResponseHeaders(Headers):
    """Werkzeug ``Headers`` that refuse every change once the response committed."""

    frozen = False

    for _name in (
        "__setitem__", "__delitem__", "__ior__", "add", "add_header", "clear",
        "extend", "pop", "popitem", "remove", "set", "setdefault", "setlist",
        "setlistdefault", "update",
    ):  # fmt: skip
        locals()[_name] = _guard(_name)
    del _name


class LiveResponse:
    """Status, headers and stream of one live request.

    ``status`` is the WSGI status line (``"404 Not Found"``), ``status_code``
    the int; either may be assigned until the commit. ``content_length`` set
    to an int declares a known body length: the header is then sent, and the
    body must match it exactly.
    """

    # Defaults on the class: a response is built per request, and most of
    # these stay as they are (set on the instance when they change).
    # Headers live in a plain list until somebody asks for ``headers`` (a
    # plain WSGI app never does: its start_response fills the list), then in
    # a Werkzeug Headers object made from it.
    _headers: ResponseHeaders | None = None
    _wsgi_headers: list[tuple[str, str]] = []  # never mutated: replaced at the commit
    _status = "200 OK"
    _code = 200
    _content_length: int | None = None
    _stream: Stream | None = None
    #: True once status and headers were handed to the server thread.
    committed = False
    #: True when the committed response carries no body (HEAD, 1xx/204/304).
    bodiless = False
    #: True when the app handed its response back whole (a list, a file
    #: wrapper, an iterable of a declared length) before any write: the
    #: commit keeps status and headers exactly as the app made them
    #: (SPEC 2.3); the defaults are for responses streamed live.
    whole = False
    #: True when the committed Content-Type is ``text/event-stream``.
    event_stream = False

    def __init__(
        self,
        environ: WSGIEnvironment,
        channel: Channel,
        on_commit: Callable[[LiveResponse], None],
        write_timeout: float | None,
        default_content_type: str,
        error_callbacks: list[Callable[[BaseException], object]],
        heartbeat: float | None = None,
        middleware: Any = None,
    ) -> None:
        self.environ = environ
        self._channel = channel
        self._header_list: list[tuple[str, str]] = []
        self._on_commit = on_commit
        self._commit_lock = threading.Lock()
        self._default_content_type = default_content_type
        self._write_timeout = write_timeout
        self._error_callbacks = error_callbacks
        #: Seconds of silence before a ``text/event-stream`` heartbeat; None
        #: for none. Defaults to the middleware's ``heartbeat``; set it
        #: before the commit to change it for this response.
        self.heartbeat = heartbeat
        #: The LiveMiddleware serving this response (the signals' sender).
        self.middleware = middleware

    @property
    def stream(self) -> Stream:
        """The producer's side of this response: ``write``, ``close``, ``wait``."""
        stream = self._stream
        if stream is None:
            # Made on first use: a response the app returns whole needs none.
            # No lock (a stream_committed receiver may ask for it during the
            # commit): two threads asking at once both get the one stored
            # first, by setdefault's one step.
            stream = Stream(self, self._channel, self._write_timeout, self._error_callbacks)
            stream = self.__dict__.setdefault("_stream", stream)
        return stream

    def __repr__(self) -> str:
        state = "committed" if self.committed else "pending"
        return f"<LiveResponse {self._status!r} {state}>"

    def _check_pending(self, what: str) -> None:
        if self.committed:
            raise HeadersAlreadySent(
                f"cannot set {what} after the response was committed: set it "
                "before the first write or close"
            )

    @property
    def headers(self) -> ResponseHeaders:
        """The response headers (Werkzeug ``Headers``), frozen at the commit."""
        headers = self._headers
        if headers is None:
            headers = self._headers = ResponseHeaders(self._header_list)
            headers.frozen = self.committed
        return headers

    def _add_headers(self, headers: list[tuple[str, str]]) -> None:
        """Add the headers an app gave ``start_response`` (checked at the commit)."""
        fast = self._headers is None
        for header in headers:
            if not (isinstance(header, tuple) and len(header) == 2):
                raise TypeError(
                    f"start_response() headers must be (name, value) tuples, not {header!r}"
                )
            # Exact types only in the plain list: _keep_headers looks its
            # tuples up in the cache of checked headers.
            if fast and type(header) is tuple and type(header[0]) is str \
                    and type(header[1]) is str:
                self._header_list.append(header)
            else:  # let Werkzeug convert or refuse it, as response.headers would
                fast = False
                self.headers.add(*header)

    def _pending_headers(self) -> Iterable[tuple[str, str]]:
        return self._header_list if self._headers is None else self._headers.items()

    def declared_length(self) -> int | None:
        """The Content-Length header set so far (before the commit), as an int."""
        kinds = _HEADER_KINDS
        for name, value in self._pending_headers():
            kind = kinds.get(name)
            if kind is None:
                kind = _header_kind(name)
            if kind is _LENGTH:
                return _int_or_none(value)
        return None

    def header(self, name: str, default: str = "") -> str:
        """The value of a committed header (case-insensitive), or ``default``."""
        lower = name.lower()
        for key, value in self._wsgi_headers:
            if key.lower() == lower:
                return value
        return default

    @property
    def is_download(self) -> bool:
        """True when an early end must look incomplete: the response declared
        its length, or is an attachment (SPEC 8.3: shutdown cuts downloads)."""
        if self._content_length is not None:
            return True
        disposition = self.header("Content-Disposition")
        return disposition.partition(";")[0].strip().lower() == "attachment"

    @property
    def status(self) -> str:
        return self._status

    @status.setter
    def status(self, value: str | int) -> None:
        self._check_pending("the status")
        self._status = status = normalize_status(value)
        self._code = int(status[:3])

    @property
    def status_code(self) -> int:
        return self._code

    @status_code.setter
    def status_code(self, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"status_code must be an int, not {type(value).__name__}")
        self._check_pending("the status")
        self._status = _status_line(value)
        self._code = value

    @property
    def content_length(self) -> int | None:
        return self._content_length

    @content_length.setter
    def content_length(self, value: int | None) -> None:
        self._check_pending("content_length")
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            raise ValueError(f"content_length must be an int >= 0 or None, not {value!r}")
        self._content_length = value

    def commit(self) -> None:
        """Hand status and headers to the server thread, once.

        Called by the first write, ``stream.close()``, or the end of the app.
        Raises ``ValueError``/``TypeError`` for unsafe headers (the request
        then fails before commit, as a 500), ``CommitTimeout`` when the
        server thread has given up waiting.
        """
        with self._commit_lock:
            if self.committed:
                return
            self._finalize_headers()
            self.committed = True
            if self._headers is not None:
                self._headers.frozen = True
            code = self._code
            self.bodiless = code < 200 or code == 204 or code == 304 or self.environ.get(
                "REQUEST_METHOD"
            ) == "HEAD"
            if not self.bodiless:
                self._channel.limit = self._content_length
            self._on_commit(self)

    def end_body(self) -> None:
        """End the body (``stream.close()``): commit first if nothing was
        written. Never blocks.

        :raises ContentLengthError: the response declared a length that the
            body did not reach; the client sees an incomplete body.
        """
        channel = self._channel
        try:
            if not self.committed:
                self.commit()  # also after a disconnect: S waits for it
        except BaseException:
            # Could not commit (bad headers, commit timeout): the body can
            # never start; end the queue so nothing waits on it.
            channel.end(CUT)
            raise
        short = channel.finish()
        if short:  # only the first closer learns it
            limit = channel.limit
            assert limit is not None
            raise ContentLengthError(
                f"the body ended after {limit - short} of its declared "
                f"{limit} bytes (Content-Length); the client sees it incomplete"
            )

    def _finalize_headers(self) -> None:
        # One pass over a plain list: this runs for every live request, and
        # Werkzeug's Headers makes each lookup of a missing name cost an
        # exception.
        if self.whole:
            self._keep_headers()
            return
        code = self._code
        bodiless = code < 200 or code == 204 or code == 304
        final: list[tuple[str, str]] = []
        has_cache_control = has_accel = has_type = False
        checked = _CHECKED_HEADERS
        kinds = _HEADER_KINDS
        for header in self._pending_headers():
            if header not in checked:  # exact (str, str) tuples, see _add_headers
                header = check_header(*header)
            name = header[0]
            kind = kinds.get(name)
            if kind is None:
                kind = _header_kind(name)
            if kind is _KEEP:
                final.append(header)
            elif kind is _DROP or kind is _LENGTH:
                continue  # the server's own, or set below if the length is known
            else:
                final.append(header)
                if kind is _CACHE_CONTROL:
                    has_cache_control = True
                elif kind is _ACCEL:
                    has_accel = True
                else:
                    has_type = True
                    self.event_stream = _is_event_stream(header[1])
        if not has_cache_control:
            final.append(("Cache-Control", "no-cache"))
        if not has_accel:
            final.append(("X-Accel-Buffering", "no"))
        if not bodiless:
            if self._content_length is not None:
                final.append(("Content-Length", str(self._content_length)))
            if not has_type:
                final.append(("Content-Type", self._default_content_type))
                self.event_stream = _is_event_stream(self._default_content_type)
        self._store_headers(final)

    def _store_headers(self, final: list[tuple[str, str]]) -> None:
        self._wsgi_headers = final
        if self._headers is None:
            self._header_list = final
        else:
            # The same object, refilled: code holding it must see it frozen.
            self._headers.clear()
            self._headers.extend(final)

    def _keep_headers(self) -> None:
        """A whole response: its headers as the app made them (checked, so
        nothing can inject a header), its declared length enforced."""
        final = []
        declared: int | None = None
        has_length = False
        checked = _CHECKED_HEADERS
        for header in self._pending_headers():
            if header not in checked:  # exact (str, str) tuples, see _add_headers
                header = check_header(*header)
            final.append(header)
            name, value = header
            lower = name.lower()
            if lower == "content-length":
                if not has_length:
                    has_length = True
                    declared = _int_or_none(value)
            elif lower == "content-type":
                self.event_stream = _is_event_stream(value)
        if self._content_length is None:
            self._content_length = declared
        elif not has_length:
            final.append(("Content-Length", str(self._content_length)))
        self._store_headers(final)

    def unsent_headers(
        self, headers: Iterable[tuple[str, str]], quiet: Iterable[str] = ()
    ) -> list[str]:
        """The names among ``headers`` (handed over after the commit) that did
        not go out with the committed ones, except the ``quiet`` names (those
        a framework adds on its own): for the warning framework glue logs."""
        sent = {(name.lower(), value) for name, value in self._wsgi_headers}
        skip = {name.lower() for name in quiet}
        return sorted({
            name for name, value in headers
            if name.lower() not in skip and (name.lower(), value) not in sent
        })  # fmt: skip

    def detach(self) -> None:
        """The request is over (live_wsgi calls this when the app is done).

        Cuts the links the request's objects hold to each other, so
        reference counting frees it the moment the server lets go: a late
        commit raises ``StreamClosed`` instead of reaching the job, and
        ``environ`` stays as it was, minus its ``live_wsgi.response`` link
        back (that key stays in the server's environ for the outer stack).
        """
        self._on_commit = _request_over
        environ = dict(self.environ)
        environ.pop("live_wsgi.response", None)
        self.environ = environ

    def wsgi_headers(self) -> list[tuple[str, str]]:
        """The committed header list, as ``start_response`` wants it."""
        return list(self._wsgi_headers)


# What _finalize_headers does with a header, by name: remembered per name
# (an app sends the same few), so a name is lowered and classified once.
_KEEP = "keep"
_DROP = "drop"  # hop-by-hop headers (the server's own)
_LENGTH = "content-length"  # set from content_length when the length is known
_CACHE_CONTROL = "cache-control"
_ACCEL = "x-accel-buffering"
_TYPE = "content-type"
_HEADER_KINDS: dict[str, str] = {}
_NAMED_KINDS = {kind: kind for kind in (_LENGTH, _CACHE_CONTROL, _ACCEL, _TYPE)}


def _header_kind(name: str) -> str:
    lower = name.lower()
    kind = _NAMED_KINDS.get(lower)
    if kind is None:
        kind = _DROP if is_hop_by_hop_header(lower) else _KEEP
    if type(name) is str:
        _remember(_HEADER_KINDS, name, kind)
    return kind


def _is_event_stream(content_type: str) -> bool:
    return content_type[:17].lower() == "text/event-stream"


def _int_or_none(value: str) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _request_over(response: LiveResponse) -> None:
    raise StreamClosed(
        "the live request is over (its app has returned): this response can "
        "no longer be committed"
    )
