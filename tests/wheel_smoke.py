"""The built wheel, installed alone into a clean venv, imports and streams.

``make dist-check`` runs it as ``VENV/bin/python -I tests/wheel_smoke.py``
from outside the checkout: ``-I`` keeps the checkout (and the user's site)
off ``sys.path``, so every import below comes from the installed wheel and
its dependencies. Not a pytest module: the clean venv has no pytest.
"""

from __future__ import annotations

import sys
import threading
import time
from importlib import metadata, resources
from pathlib import Path

import live_wsgi
from live_wsgi import LiveMiddleware, current_response
from live_wsgi.testing import open_stream

WAIT = 10.0


def main() -> None:
    installed = Path(live_wsgi.__file__).resolve()
    assert Path(sys.prefix).resolve() in installed.parents, (
        f"live_wsgi came from {installed}, not from the venv at {sys.prefix}"
    )
    assert resources.files("live_wsgi").joinpath("py.typed").is_file(), "py.typed is missing"
    version = metadata.version("live_wsgi")
    if len(sys.argv) > 1:
        assert version == sys.argv[1], f"installed {version}, built {sys.argv[1]}"

    # A live stream: the first chunk reaches the reader while the producer
    # still waits for it to arrive; then the rest, then the clean end.
    first_read = threading.Event()

    def app(environ: object, start_response: object) -> list[bytes]:
        stream = current_response().stream
        stream.write(b"first\n")
        if not first_read.wait(WAIT):
            raise AssertionError("the first chunk never reached the reader")
        stream.write(b"second\n")
        return [b"last\n"]

    middleware = LiveMiddleware(app)
    try:
        with open_stream(middleware, "/smoke") as response:
            assert response.status_code == 200, response.status
            assert response.read_chunks(1, timeout=WAIT) == [b"first\n"]
            first_read.set()
            assert response.read_all(timeout=WAIT) == b"second\nlast\n"
        deadline = time.monotonic() + WAIT
        assert middleware.wait_idle(max(0.0, deadline - time.monotonic()))
    finally:
        middleware.shutdown(timeout=WAIT)
    print(f"wheel smoke test: live_wsgi {version} from {installed.parent} streams")


if __name__ == "__main__":
    main()
