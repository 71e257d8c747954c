"""The public surface."""

from __future__ import annotations

import live_wsgi
from live_wsgi import errors


def test_public_api_is_pinned() -> None:
    """SPEC 1.2: the flat public API and nothing else."""
    assert sorted(live_wsgi.__all__) == sorted([
        "BrokerUnavailable", "ClientDisconnected", "CommitTimeout", "ContentLengthError",
        "HeadersAlreadySent", "LiveError", "LiveMiddleware", "LiveResponse",
        "ResponseAborted", "SSE", "Stream", "StreamClosed", "WriteTimeout",
        "current_response", "last_event_id", "send_stream", "share_local",
        "unshare_local",
    ])  # fmt: skip
    for name in live_wsgi.__all__:
        assert getattr(live_wsgi, name) is not None


def test_error_vocabulary() -> None:
    """SPEC 3.2: one base class; WriteTimeout is a ClientDisconnected and a TimeoutError."""
    for name in ("ClientDisconnected", "WriteTimeout", "StreamClosed",
                 "HeadersAlreadySent", "CommitTimeout", "ContentLengthError",
                 "BrokerUnavailable"):
        assert issubclass(getattr(errors, name), errors.LiveError)
    assert issubclass(errors.WriteTimeout, errors.ClientDisconnected)
    assert issubclass(errors.WriteTimeout, TimeoutError)
    assert not issubclass(errors.StreamClosed, errors.ClientDisconnected)
    assert str(errors.WriteTimeout("slow")) == "slow"


def test_current_response_outside_a_live_request() -> None:
    """SPEC 1.2: current_response() outside a live request says where it works."""
    import pytest

    with pytest.raises(RuntimeError, match="outside a live request"):
        live_wsgi.current_response()
