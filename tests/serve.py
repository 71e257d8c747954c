"""Run a WSGI app on an inherited listening socket: ``python -m tests.serve KIND FD APP [LEVEL]``.

KIND is ``waitress`` or ``werkzeug``; gunicorn takes ``fd://`` itself. With
LEVEL (``INFO``, ``DEBUG``…) every logger logs to stderr from that level on,
one ``LEVEL logger: message`` line each (tracebacks follow theirs).
"""

from __future__ import annotations

import importlib
import logging
import socket
import sys


def main() -> None:
    kind, fd, target = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if len(sys.argv) > 4:
        logging.basicConfig(level=sys.argv[4].upper(),
                            format="%(levelname)s %(name)s: %(message)s")
    module, _, name = target.partition(":")
    app = getattr(importlib.import_module(module), name)
    if kind == "waitress":
        import waitress

        listener = socket.socket(fileno=fd)
        waitress.serve(app, sockets=[listener], threads=24, channel_request_lookahead=1,
                       _quiet=True)
    elif kind == "werkzeug":
        from werkzeug.serving import make_server

        make_server("127.0.0.1", 0, app, threaded=True, fd=fd).serve_forever()
    else:
        raise SystemExit(f"unknown server kind {kind!r}")


if __name__ == "__main__":
    main()
