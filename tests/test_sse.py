"""Server-sent events: SPEC 7.1, exact bytes, and a round trip through a real parser."""

from __future__ import annotations

import json
from enum import IntEnum
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sseclient import SSEClient

from live_wsgi import SSE, current_response, last_event_id
from live_wsgi.sse import encode_comment, encode_event

from .support import Recorder, chunks, open_stream, webtest_app

pytestmark = pytest.mark.timeout(60)


class Seq(IntEnum):
    NEXT = 7


# (data, options, exact bytes)
ENCODING_TABLE: list[tuple[Any, dict[str, Any], bytes]] = [
    ("hello", {}, b"data: hello\n\n"),
    ("", {}, b"data: \n\n"),
    ("a\nb", {}, b"data: a\ndata: b\n\n"),
    ("a\r\nb", {}, b"data: a\ndata: b\n\n"),
    ("a\rb", {}, b"data: a\ndata: b\n\n"),
    ("a\n", {}, b"data: a\ndata: \n\n"),
    ("\r\n\r", {}, b"data: \ndata: \ndata: \n\n"),
    (" lead", {}, b"data:  lead\n\n"),
    ("caf\u00e9", {}, "data: caf\u00e9\n\n".encode()),
    ("x", {"event": "tick"}, b"event: tick\ndata: x\n\n"),
    ("x", {"id": "42"}, b"id: 42\ndata: x\n\n"),
    ("x", {"retry": 1500}, b"retry: 1500\ndata: x\n\n"),
    ("x", {"retry": 0, "event": "e", "id": "7"}, b"retry: 0\nevent: e\nid: 7\ndata: x\n\n"),
    # An int id (a database key) is written in decimal.
    ("x", {"id": 42}, b"id: 42\ndata: x\n\n"),
    ("x", {"id": 0}, b"id: 0\ndata: x\n\n"),
    ("x", {"id": -3}, b"id: -3\ndata: x\n\n"),
    ("x", {"id": 2**64}, b"id: 18446744073709551616\ndata: x\n\n"),
    ("x", {"id": Seq.NEXT}, b"id: 7\ndata: x\n\n"),
    ("x", {"retry": 5, "event": "e", "id": 9}, b"retry: 5\nevent: e\nid: 9\ndata: x\n\n"),
    ({"b": 1, "a": [1, 2]}, {}, b'data: {"b":1,"a":[1,2]}\n\n'),
    ([1, "\u00e9"], {}, 'data: [1,"\u00e9"]\n\n'.encode()),
    (None, {}, b"data: null\n\n"),
    (3.5, {}, b"data: 3.5\n\n"),
    ({"text": "a\nb"}, {}, b'data: {"text":"a\\nb"}\n\n'),
]


@pytest.mark.parametrize(("data", "options", "expected"), ENCODING_TABLE)
def test_exact_bytes(data: Any, options: dict[str, Any], expected: bytes) -> None:
    """SPEC 7.1: field order retry, event, id, data; line breaks; JSON for non-str."""
    assert encode_event(data, **options) == expected


@pytest.mark.parametrize(("field", "value"), [
    ("event", "a\nb"), ("event", "a\rb"), ("event", "a\x00b"),
    ("id", "1\n2"), ("id", "1\r"), ("id", "\x00"),
])  # fmt: skip
def test_line_breaks_in_event_or_id_are_refused(field: str, value: str) -> None:
    """SPEC 7.1: CR, LF or NUL in event or id raise ValueError naming the field."""
    with pytest.raises(ValueError, match=field):
        encode_event("x", **{field: value})


@pytest.mark.parametrize("retry", [-1, 1.5, "100", True])
def test_retry_must_be_an_int(retry: Any) -> None:
    """SPEC 7.1: retry is an int (milliseconds)."""
    with pytest.raises(ValueError, match="retry"):
        encode_event("x", retry=retry)


@pytest.mark.parametrize("data", [
    float("nan"), float("inf"), float("-inf"), {"price": [1.0, float("nan")]},
])  # fmt: skip
def test_nan_and_infinity_are_a_value_error(data: Any) -> None:
    """SPEC 7.1: JSON is strict: NaN/Infinity raise ValueError, as json.dumps(allow_nan=False)."""
    with pytest.raises(ValueError, match="JSON") as caught:
        encode_event(data)
    assert not isinstance(caught.value, TypeError)


@pytest.mark.parametrize("data", [{"x": object()}, b"raw", {1j}, {(1, 2): "tuple key"}])
def test_unserializable_data_is_a_type_error(data: Any) -> None:
    """SPEC 7.1: an object JSON cannot encode raises TypeError, as json.dumps does."""
    with pytest.raises(TypeError, match="JSON"):
        encode_event(data)


@pytest.mark.parametrize("value", [1.0, b"1", ["1"], object()])
def test_id_must_be_a_str_or_an_int(value: Any) -> None:
    """SPEC 7.1: an id of another type is a TypeError."""
    with pytest.raises(TypeError, match="str or an int"):
        encode_event("x", id=value)


@pytest.mark.parametrize("value", [True, False])
def test_bool_id_is_refused(value: bool, live: Any) -> None:
    """SPEC 7.1: a bool is no id (True would read as 1): TypeError, per write and as default."""
    with pytest.raises(TypeError, match="bool"):
        encode_event("x", id=value)
    seen = Recorder()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        stream = current_response().stream
        for name, attempt in [("default", lambda: SSE(stream, id=value)),
                              ("write", lambda: SSE(stream).write("x", id=value))]:
            try:
                attempt()
            except TypeError as exc:
                seen[name] = exc
        return []

    response = webtest_app(live(app)).get("/")
    assert response.body == b""  # nothing was written
    assert "bool" in str(seen["default"]) and "bool" in str(seen["write"])


def test_comments() -> None:
    """SPEC 7.1: comments are ': text' lines."""
    assert encode_comment("ping") == b": ping\n"
    assert encode_comment("a\nb") == b": a\n: b\n"
    assert encode_comment() == b": \n"


def test_defaults_and_overrides_one_write_per_event(live: Any) -> None:
    """SPEC 7.1: per-call options override the constructor's; None counts as not given."""
    writes: list[bytes] = []

    def app(environ: Any, start_response: Any) -> list[bytes]:
        stream = current_response().stream
        original = stream.write

        def counting(data: Any) -> int:
            writes.append(data)
            return original(data)

        stream.write = counting  # type: ignore[method-assign]
        sse = SSE(stream, retry=3000, event="update", id="1")
        sse.write("a")
        sse.write("b", event="other", id="2", retry=10)
        sse.write("c", event=None, id=None, retry=None)
        sse.write({"multi": "line\nvalue"}, event="json")
        sse.comment("keepalive")
        sse.close()
        return []

    response = webtest_app(live(app), lint=True).get("/")
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.body == (
        b":\n"  # the opening comment of every live event stream (not a write)
        b"retry: 3000\nevent: update\nid: 1\ndata: a\n\n"
        b"retry: 10\nevent: other\nid: 2\ndata: b\n\n"
        b"retry: 3000\nevent: update\nid: 1\ndata: c\n\n"
        b'retry: 3000\nevent: json\nid: 1\ndata: {"multi":"line\\nvalue"}\n\n'
        b": keepalive\n"
    )
    assert len(writes) == 5  # one stream write per event


def test_sse_on_committed_response_keeps_headers(live: Any) -> None:
    """SPEC 7.1: the Content-Type is set only while pending."""
    seen = Recorder()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        stream = current_response().stream
        stream.write("")
        SSE(stream).write("late")
        seen["type"] = current_response().headers["Content-Type"]
        return []

    webtest_app(live(app)).get("/")
    assert seen["type"].startswith("text/plain")


def test_last_event_id() -> None:
    """SPEC 7.1: Last-Event-ID header, else the lastEventId query parameter."""
    assert last_event_id({"HTTP_LAST_EVENT_ID": "41"}) == "41"
    assert last_event_id({"QUERY_STRING": "lastEventId=7&x=1"}) == "7"
    assert last_event_id({"HTTP_LAST_EVENT_ID": "9", "QUERY_STRING": "lastEventId=7"}) == "9"
    assert last_event_id({}) is None
    utf8_as_latin1 = "caf\u00e9".encode().decode("latin-1")  # as WSGI hands it over
    assert last_event_id({"HTTP_LAST_EVENT_ID": utf8_as_latin1}) == "caf\u00e9"


def test_int_ids_reach_the_client_in_decimal(live: Any) -> None:
    """SPEC 7.1: int ids, as default and per write, parse back from the streamed body."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        sse = SSE(current_response().stream, id=0)
        sse.write("default")
        for row_id in (41, 42, 10**20):
            sse.write({"row": row_id}, id=row_id)  # sse.write(row, id=row.id)
        return []

    response = open_stream(live(app))
    events = list(SSEClient(chunks(response)).events())
    response.close()
    assert [(e.id, e.data) for e in events] == [
        ("0", "default"),
        ("41", '{"row":41}'),
        ("42", '{"row":42}'),
        ("100000000000000000000", '{"row":100000000000000000000}'),
    ]


# -- round trip through an independent WHATWG parser (sseclient-py) ----------

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
field = st.none() | st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=12
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | text,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(text, children, max_size=4),
    max_leaves=10,
)


@given(
    data=text | json_values,
    event=field,
    event_id=field | st.integers(),
    retry=st.none() | st.integers(0, 10**9),
    split=st.integers(1, 7),
)
def test_parser_reads_back_what_we_encode(data: Any, event: str | None,
                                          event_id: str | int | None, retry: int | None,
                                          split: int) -> None:
    """SPEC 7.1: any accepted event parses back to the same event (any TCP split)."""
    encoded = encode_event(data, event=event, id=event_id, retry=retry)
    pieces = [encoded[i:i + split] for i in range(0, len(encoded), split)]
    events = list(SSEClient(pieces).events())
    assert len(events) == 1
    parsed = events[0]
    if isinstance(data, str):
        assert parsed.data == data.replace("\r\n", "\n").replace("\r", "\n")
    else:
        assert json.loads(parsed.data) == data
    assert parsed.event == (event or "message")
    assert parsed.id == (None if event_id is None else str(event_id))
    assert parsed.retry == (None if retry is None else str(retry))


def test_sse_stream_reaches_the_parser_live(live: Any) -> None:
    """SPEC 7.1: events written by the app are parsed back from the streamed body."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        sse = SSE(current_response().stream, event="n")
        for i in range(3):
            sse.write({"i": i}, id=str(i))
        return []

    response = open_stream(live(app))
    events = list(SSEClient(chunks(response)).events())
    response.close()
    assert [(e.event, e.id, json.loads(e.data)) for e in events] == [
        ("n", "0", {"i": 0}), ("n", "1", {"i": 1}), ("n", "2", {"i": 2})]
