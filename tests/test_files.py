"""send_stream: SPEC 7.2."""

from __future__ import annotations

import email.message
import email.policy
import email.utils
import unicodedata
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.http import parse_options_header

from live_wsgi import (
    ContentLengthError,
    HeadersAlreadySent,
    ResponseAborted,
    current_response,
    send_stream,
)
from live_wsgi.files import content_disposition, content_type_for

from .support import Recorder, chunks, open_stream, webtest_app

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(("filename", "type", "expected"), [
    ("export.csv", None, "text/csv"),
    ("EXPORT.CSV", None, "text/csv"),
    ("data.bin", "json", "application/json"),
    ("data", "csv", "text/csv"),
    ("report.csv", "text/csv; charset=latin-1", "text/csv; charset=latin-1"),
    ("report.xyzzy", None, "application/octet-stream"),
    ("noextension", None, "application/octet-stream"),
    ("archive.csv.gz", None, "application/gzip"),
    ("page.html", None, "text/html"),
])  # fmt: skip
def test_content_type_precedence(filename: str, type: str | None, expected: str) -> None:
    """SPEC 7.2: type as given, a short name, the extension, else octet-stream."""
    assert content_type_for(filename, type) == expected


def test_unknown_short_type_is_refused() -> None:
    """SPEC 7.2: an unknown short name is a clear error."""
    with pytest.raises(ValueError, match="unknown short type"):
        content_type_for("x", "notatype")


def read_back(header: str) -> str:
    """The filename a standards parser (the email package, RFC 2231) reads."""
    message = email.message.Message()
    message["Content-Disposition"] = header
    name = message.get_filename()
    assert name is not None, header
    return name


def client_names(header: str) -> tuple[str, str]:
    """``(fallback, preferred)``: the name a client without RFC 5987 support reads
    (``filename=``) and the one an RFC 6266 client reads (``filename*`` when present).

    Read by the email package (RFC 2231 decoding), cross-checked with Werkzeug.
    """
    assert header.isascii() and header.isprintable(), header  # one latin-1 header line
    parsed = email.policy.default.header_factory("Content-Disposition", header)
    assert parsed.content_disposition in ("attachment", "inline"), header
    message = email.message.Message()
    message["Content-Disposition"] = header
    params = message.get_params(header="content-disposition") or []
    names = [value for key, value in params if key == "filename"]
    plain = [value for value in names if isinstance(value, str)]
    extended = [email.utils.collapse_rfc2231_value(v) for v in names if isinstance(v, tuple)]
    assert len(plain) == 1 and len(extended) <= 1, header
    fallback, preferred = plain[0], (extended or plain)[0]
    assert read_back(header) == fallback  # the email package's own choice: the first
    assert parse_options_header(header)[1]["filename"] == preferred  # RFC 6266: filename*
    return fallback, preferred


#: Bidi classes of the embedding, override and isolate controls.
BIDI_CONTROLS = {"LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI"}


def assert_safe(name: str, original: str) -> None:
    """The invariants of SPEC 7.2 for a name a client read back.

    Also once normalised (NFKC), as a client or Windows' best-fit code pages
    may do: FULLWIDTH SOLIDUS must not come back as a separator.
    """
    assert name, original
    for form in (name, unicodedata.normalize("NFKC", name)):
        for char in form:
            assert char not in "/\\", (original, name)
            assert unicodedata.category(char) not in ("Cc", "Zl", "Zp"), (original, name)
            assert unicodedata.bidirectional(char) not in BIDI_CONTROLS, (original, name)
        assert not form.startswith("."), (original, name)


@pytest.mark.parametrize("filename", [
    "plain.csv",
    "r\u00e9sum\u00e9 \u65e5\u672c.csv",
    'quote"d.csv',
    "semi;colon.csv",
    "line\r\nX-Injected: yes.csv",
    "nul\x00byte.csv",
    "../../etc/passwd.csv",
    "dir\\file.csv",
    "\u65e5\u672c\u8a9e.csv",
    "100% done.csv",
    ".hidden.csv",
    # Characters that become separators or dots only once made ASCII (NFKD):
    "\u2105.csv",  # CARE OF: c/o
    "\u2100\u2101\u2106.csv",  # ACCOUNT OF, ADDRESSED TO THE SUBJECT, CADA UNA
    "\uff0fetc\uff0fpasswd.csv",  # FULLWIDTH SOLIDUS
    "\uff0e\uff0e\uff0f\uff0e\uff0e\uff0fx.csv",  # FULLWIDTH FULL STOP
    "\u2024\u2024/x.csv",  # ONE DOT LEADER
    "\u2025\uff3cx.csv",  # TWO DOT LEADER, FULLWIDTH REVERSE SOLIDUS
    "\u2026\ufe68x.csv",  # HORIZONTAL ELLIPSIS, SMALL REVERSE SOLIDUS
    "\ufe52\ufe19\ufe30x.csv",  # SMALL FULL STOP, vertical ellipsis and leader
    "\u65e5.hidden.csv",  # the stem's ASCII form starts with a dot
    "\u3000.x.csv",  # IDEOGRAPHIC SPACE: stripped, then a leading dot
    # Line breaks and controls beyond ASCII:
    "nel\x85c1\x9f.csv",
    "line\u2028para\u2029.csv",
    # Bidi overrides: 'invoice\u202ecod.exe' displays as 'invoiceexe.doc'.
    "invoice\u202ecod.exe",
])  # fmt: skip
def test_filename_is_one_safe_header(filename: str) -> None:
    """SPEC 7.2: any filename yields one valid header and a safe name with its extension.

    Both names a client can read back, the ASCII ``filename=`` and the UTF-8
    ``filename*``, are checked.
    """
    header = content_disposition(filename)
    extension = filename.rpartition(".")[2]
    for name in client_names(header):
        assert_safe(name, filename)
        assert name.endswith("." + extension), (filename, name)


@pytest.mark.parametrize(("filename", "fallback", "preferred"), [
    ("\u2105.csv", "_.csv", "_.csv"),  # CARE OF is 'c/o' once normalised
    ("\uff0fetc\uff0fpasswd", "_etc_passwd", "_etc_passwd"),
    ("\uff0e\uff0e\uff0f\uff0e\uff0e\uff0fx.csv", "____x.csv", "_\uff0e\uff0e_x.csv"),
    ("\u2024\u2024/x", "_x", "_x"),
    ("x.csv\uff0eexe", "x.csv_exe", "x.csv\uff0eexe"),  # NFKD must not make it .exe
    ("\u65e5.hidden.csv", "hidden.csv", "\u65e5.hidden.csv"),
    ("\u65e5\u672c.csv", "download.csv", "\u65e5\u672c.csv"),
    ("...", "download", "download"),
    (" .csv", "csv", "csv"),
    ("invoice\u202ecod.exe", "invoice_cod.exe", "invoice_cod.exe"),
])  # fmt: skip
def test_ascii_fallback_is_sanitised_after_conversion(
    filename: str, fallback: str, preferred: str
) -> None:
    """SPEC 7.2: the ASCII form is made safe after NFKD, which turns '\u2105' into 'c/o'."""
    assert client_names(content_disposition(filename)) == (fallback, preferred)


# -- fuzzing: every name a client can read back, parsed by standards parsers --

# Any code point but the lone surrogates (a str holding one cannot be encoded).
any_char = st.characters(blacklist_categories=("Cs",))
# What is dangerous as is or once normalised, so that the fuzzer meets it often.
tricky = st.sampled_from("/\\.\r\n\x00\x7f\x85\u2028\u2029\u202e \u3000\"%;'"
                         "\u2024\u2025\u2026\u2100\u2105\ufe52\ufe68\uff0e\uff0f\uff3c")
stems = st.text(any_char | tricky, max_size=40) | st.text(any_char, min_size=200, max_size=2000)
extensions = st.none() | st.from_regex(r"[A-Za-z0-9]{1,8}", fullmatch=True)


def has_stem(stem: str) -> bool:
    """Whether ``stem`` is more than whitespace and dots (else there is no extension)."""
    return any(
        not (char.isspace() or unicodedata.normalize("NFKD", char).startswith("."))
        for char in stem
    )


@settings(max_examples=400, deadline=None)
@given(stem=stems, extension=extensions, disposition=st.sampled_from(["attachment", "inline"]))
def test_any_filename_reads_back_safe(stem: str, extension: str | None, disposition: str) -> None:
    """SPEC 7.2: for any Unicode name, both names a client reads are safe and keep the extension.

    The ``filename=`` a client without RFC 5987 reads and the ``filename*`` an
    RFC 6266 client reads: non-empty, no control character, no ``/`` or ``\\``,
    no leading dot; one header line of ASCII.
    """
    filename = stem if extension is None else f"{stem}.{extension}"
    header = content_disposition(filename, disposition)
    assert header.startswith(disposition + ";")
    for name in client_names(header):
        assert_safe(name, filename)
        if extension is not None and has_stem(stem):
            assert name.endswith("." + extension), (filename, name)


def test_send_stream_sends_any_filename_safely(live: Any) -> None:
    """SPEC 7.2: through send_stream and the commit, any name is one valid, safe header."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        with send_stream(environ["test.filename"]) as stream:
            stream.write(b"x")
        return []

    client = webtest_app(live(app), lint=True)

    @settings(max_examples=100, deadline=None)
    @given(filename=stems)
    def check(filename: str) -> None:
        response = client.get("/", extra_environ={"test.filename": filename})
        header = response.headers["Content-Disposition"]
        assert header == content_disposition(filename)
        for name in client_names(header):
            assert_safe(name, filename)
        assert response.body == b"x"

    check()


def test_non_ascii_name_survives_in_filename_star() -> None:
    """SPEC 7.2: RFC 5987 filename* carries the real name; ASCII fallback for others."""
    header = content_disposition("r\u00e9sum\u00e9.csv", "inline")
    assert header.startswith("inline;")
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9.csv" in header
    assert 'filename="resume.csv"' in header or "filename=resume.csv" in header
    # Werkzeug follows RFC 6266 and prefers filename*; the email package
    # (an older client's view) reads the ASCII fallback.
    assert parse_options_header(header)[1]["filename"] == "r\u00e9sum\u00e9.csv"
    assert read_back(header) == "resume.csv"


def test_bad_disposition_is_refused() -> None:
    """SPEC 7.2: disposition is attachment or inline."""
    with pytest.raises(ValueError, match="disposition"):
        content_disposition("x.csv", "evil\r\nX: 1")


def test_send_stream_streams_a_download(live: Any) -> None:
    """SPEC 7.2: headers from send_stream, body streamed, closed at the end."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        with send_stream("export.csv") as stream:
            stream.write("id,name\n")
            for i in range(3):
                stream.write(f"{i},row{i}\n")
        return []

    response = webtest_app(live(app), lint=True).get("/")
    assert response.headers["Content-Type"] == "text/csv"
    assert response.headers["Content-Disposition"] == 'attachment; filename=export.csv'
    assert response.body == b"id,name\n0,row0\n1,row1\n2,row2\n"


def test_size_sets_content_length_and_must_match(live: Any) -> None:
    """SPEC 7.2: a known size is sent; a body of another length never looks complete."""

    def exact(environ: Any, start_response: Any) -> list[bytes]:
        with send_stream("a.bin", size=6) as stream:
            stream.write(b"abc")
            stream.write(b"def")
        return []

    response = webtest_app(live(exact), lint=True).get("/")
    assert response.headers["Content-Length"] == "6"
    assert response.body == b"abcdef"

    seen = Recorder()

    def short(environ: Any, start_response: Any) -> list[bytes]:
        try:
            with send_stream("a.bin", size=10) as stream:
                stream.write(b"abc")
        except ContentLengthError as exc:
            seen["error"] = exc
            raise
        return []

    started = open_stream(live(short))
    assert started.headers["Content-Length"] == "10"
    with pytest.raises(ResponseAborted):
        b"".join(chunks(started))
    started.close()
    assert "3 of its declared 10" in str(seen["error"])


def test_exception_inside_send_stream_cuts_the_download(live: Any) -> None:
    """SPEC 7.2: a failing export ends incomplete, even if the app swallows the error."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        try:
            with send_stream("export.csv") as stream:
                stream.write("id\n1\n")
                raise RuntimeError("database went away")
        except RuntimeError:
            pass  # the app carries on; the download must still look broken
        return []

    started = open_stream(live(app))
    body = chunks(started)
    assert next(body) == b"id\n1\n"
    with pytest.raises(ResponseAborted):
        next(body)
    started.close()


def test_send_stream_needs_a_pending_response(live: Any) -> None:
    """SPEC 7.2: after the commit there are no headers left to set."""
    seen = Recorder()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        current_response().stream.write(b"x")
        try:
            with send_stream("late.csv"):
                pass
        except HeadersAlreadySent as exc:
            seen["error"] = exc
        return []

    webtest_app(live(app)).get("/")
    assert isinstance(seen["error"], HeadersAlreadySent)
