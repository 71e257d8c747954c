"""``send_stream``: a download produced live, like Rails' ``send_stream``.

::

    with send_stream("subscribers.csv") as stream:
        stream.write("email,updated_at\\n")
        for row in rows():
            stream.write(f"{row.email},{row.updated_at}\\n")

The body never looks complete when it is not: an exception inside the
``with`` block ends the download without its final chunk, and with a
declared ``size`` a body of any other length is an error.
"""

from __future__ import annotations

import mimetypes
import re
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

from werkzeug.http import dump_options_header

from . import signals
from .errors import HeadersAlreadySent
from .response import current_response
from .stream import Stream

DEFAULT_TYPE = "application/octet-stream"
# The standard library's own table only: the machine's /etc/mime.types must
# not change what a download is called.
_MIME = mimetypes.MimeTypes(filenames=())
_ENCODING_TYPES = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "compress": "application/x-compress",
    "br": "application/x-brotli",
}
# Bidi controls (Cf): "invoice\u202ecod.exe" displays as "invoiceexe.doc".
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                           "\u2066\u2067\u2068\u2069")
_LINE_BREAKING = ("Cc", "Zl", "Zp")  # control characters, LINE and PARAGRAPH SEPARATOR
_MADE_UP = re.compile(r"[./\\]")


def content_type_for(filename: str, type: str | None = None) -> str:
    """Content-Type from ``type`` (a MIME string or a short name), else the extension."""
    if type is not None:
        if not isinstance(type, str) or not type:
            raise TypeError(f"type must be a MIME type or a short name like 'csv', not {type!r}")
        if "/" in type:
            return type  # as given; header validation refuses CR/LF at commit
        guessed = _MIME.types_map[True].get("." + type.lower().lstrip("."))
        if guessed is None:
            raise ValueError(
                f"unknown short type {type!r}: give a MIME type like 'text/csv' instead"
            )
        return guessed
    guessed, encoding = _MIME.guess_type(filename, strict=False)
    if encoding is not None:
        return _ENCODING_TYPES.get(encoding, DEFAULT_TYPE)
    return guessed or DEFAULT_TYPE


def _unsafe(char: str) -> bool:
    """A control character or path separator, as is or once normalised.

    Compatibility normalisation (NFKD, NFKC, Windows' "best fit" code pages)
    turns FULLWIDTH SOLIDUS into ``/`` and CARE OF into ``c/o``.
    """
    if char in _BIDI_CONTROLS:
        return True
    return any(
        part in "/\\" or unicodedata.category(part) in _LINE_BREAKING
        for part in unicodedata.normalize("NFKD", char)
    )


def _leading_junk(char: str) -> bool:
    """Whitespace, or a dot once normalised (FULLWIDTH FULL STOP, ONE DOT LEADER)."""
    return char.isspace() or unicodedata.normalize("NFKD", char).startswith(".")


def _clean(text: str) -> str:
    """``text`` with unsafe characters replaced by ``_``, without leading dots or
    surrounding whitespace."""
    text = "".join("_" if _unsafe(char) else char for char in text)
    start = 0
    while start < len(text) and _leading_junk(text[start]):
        start += 1
    return text[start:].rstrip()


def _split(filename: str) -> tuple[str, str]:
    """``(stem, extension)`` of ``filename``, both clean; the stem is never empty."""
    stem, _, extension = filename.rpartition(".")
    stem = _clean(stem)
    if not stem:  # ".csv", "..", no dot at all: the whole name is the stem
        return _clean(filename) or "download", ""
    return stem, _clean(extension)


def _join(stem: str, extension: str) -> str:
    return stem + "." + extension if extension else stem


def safe_filename(filename: str) -> str:
    """``filename`` without control characters, path separators or a leading dot.

    Control characters, bidi controls and path separators become ``_``, also
    those that only become one once normalised (``"\uff0f"``, FULLWIDTH
    SOLIDUS); leading dots and whitespace go; the extension is kept.
    """
    if not isinstance(filename, str):
        raise TypeError(f"filename must be a str, not {type(filename).__name__}")
    return _join(*_split(filename))


def _ascii_char(char: str) -> str:
    if char.isascii():
        return char
    # NFKD approximates ("\u00e9" is "e"); a dot it makes up ("\u2024" is ".")
    # must not add an extension, nor a slash a directory.
    plain = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode("ascii")
    return _MADE_UP.sub("_", plain)


def _ascii(text: str) -> str:
    """An ASCII approximation, without characters some clients mangle."""
    plain = "".join(_ascii_char(char) for char in text)
    return plain.replace('"', "'").replace("%", "_")


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """An RFC 6266 ``Content-Disposition`` value.

    An ASCII ``filename`` for every client, plus ``filename*`` (RFC 5987,
    UTF-8) whenever the ASCII form had to change the name. Both are made safe
    after every transformation: either name a client reads back has no control
    character, no path separator, no leading dot, and the original extension.
    """
    if disposition not in ("attachment", "inline"):
        raise ValueError(f"disposition must be 'attachment' or 'inline', not {disposition!r}")
    name = safe_filename(filename)
    stem, extension = _split(name)
    ascii_stem = _clean(_ascii(stem)) or "download"
    ascii_name = _join(ascii_stem, _clean(_ascii(extension)))
    options = {"filename": ascii_name}
    if ascii_name != name:
        options["filename*"] = "UTF-8''" + quote(name, safe="!#$&+-.^_`|~")
    return dump_options_header(disposition, options)


@contextmanager
def send_stream(
    filename: str,
    disposition: str = "attachment",
    type: str | None = None,
    size: int | None = None,
) -> Iterator[Stream]:
    """Stream a download to the browser; yields the stream, always ends it.

    :param filename: the name the browser suggests (made safe for the header).
    :param disposition: ``"attachment"`` (download) or ``"inline"``.
    :param type: a MIME type as given, or a short name like ``"csv"`` or
        ``"json"``; by default from the filename's extension, else
        ``application/octet-stream``.
    :param size: the body's exact length, if known: sent as Content-Length so
        browsers show progress. A body of another length is an error.
    """
    response = current_response()
    if response.committed:
        raise HeadersAlreadySent("send_stream() needs a pending response: call it before writing")
    mime = content_type_for(filename, type)
    response.headers["Content-Disposition"] = content_disposition(filename, disposition)
    response.headers["Content-Type"] = mime
    if size is not None:
        response.content_length = size
    signals.emit(signals.send_stream, response.middleware, environ=response.environ,
                 filename=filename, disposition=disposition, type=mime, size=size)
    stream = response.stream
    try:
        yield stream
    except BaseException:
        stream._fail()  # never let a failed download look complete
        raise
    stream.close()
