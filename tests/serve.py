"""Run a WSGI app on an inherited listening socket: ``python -m tests.serve KIND FD APP``.

KIND is ``waitress`` or ``werkzeug``; gunicorn takes ``fd://`` itself.
"""

from __future__ import annotations

import importlib
import socket
import sys


def main() -> None:
    kind, fd, target = sys.argv[1], int(sys.argv[2]), sys.argv[3]
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
