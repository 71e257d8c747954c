"""A trivial raw-socket HTTP server: the client's own ceiling.

It answers the benchmark paths with the same bytes the apps send, from
pre-built buffers, with no framework and no per-chunk work, so what the
client measures against it is what the *client* can do. When that is far
above what the apps reach, the client is not the bottleneck.

    python -m benchmarks.rawserver FD     # serve on an inherited listening socket
"""

from __future__ import annotations

import socket
import sys
import threading

from .apps import SHORT

CHUNKED_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
SHORT_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                  % (len(SHORT), SHORT))
#: Bytes handed to sendall() at once when streaming a long body.
BLOCK = 1 << 20


def frame(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def send_chunks(sock: socket.socket, size: int, count: int) -> None:
    framed = frame(b"x" * size)
    per_block = max(1, BLOCK // len(framed))
    block = framed * per_block
    sock.sendall(CHUNKED_HEAD % b"application/octet-stream")
    full, rest = divmod(count, per_block)
    for _ in range(full):
        sock.sendall(block)
    sock.sendall(framed * rest + b"0\r\n\r\n")


def serve_connection(sock: socket.socket) -> None:
    try:
        respond(sock)
    except OSError:
        pass  # the client hung up (wrk does, mid-request, when its time is up)
    finally:
        sock.close()


def respond(sock: socket.socket) -> None:
    buffer = b""
    if True:
        while True:
            while b"\r\n\r\n" not in buffer:
                data = sock.recv(65536)
                if not data:
                    return
                buffer += data
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            close = b"connection: close" in head.lower()
            if path.startswith("/short"):
                sock.sendall(SHORT_RESPONSE)
            elif path.startswith("/chunks/"):
                _, _, size, count = path.split("/")
                send_chunks(sock, int(size), int(count))
            elif path.startswith("/sse"):
                sock.sendall(CHUNKED_HEAD % b"text/event-stream" + frame(b"data: 0\n\n")
                             + b"0\r\n\r\n")
            else:
                sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            if close:
                return


def main() -> None:
    listener = socket.socket(fileno=int(sys.argv[1]))
    while True:
        sock, _ = listener.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve_connection, args=(sock,), daemon=True).start()


if __name__ == "__main__":
    main()
