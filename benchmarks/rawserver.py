"""A trivial raw-socket HTTP server: the client's own ceiling.

It answers the benchmark paths with the same bytes the apps send, from
pre-built buffers, on one asyncio loop (no thread to start per connection),
with no framework and no per-chunk work, so what the
client measures against it is what the *client* can do. When that is far
above what the apps reach, the client is not the bottleneck.

    python -m benchmarks.rawserver FD     # serve on an inherited listening socket
"""

from __future__ import annotations

import asyncio
import socket
import sys

from .apps import SHORT

CHUNKED_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
SHORT_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                  % (len(SHORT), SHORT))
#: Bytes handed to sendall() at once when streaming a long body.
BLOCK = 1 << 20


def frame(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def send_chunks(writer: asyncio.StreamWriter, size: int, count: int) -> None:
    framed = frame(b"x" * size)
    per_block = max(1, BLOCK // len(framed))
    block = framed * per_block
    writer.write(CHUNKED_HEAD % b"application/octet-stream")
    full, rest = divmod(count, per_block)
    for _ in range(full):
        writer.write(block)
        await writer.drain()
    writer.write(framed * rest + b"0\r\n\r\n")


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            if path.startswith("/short"):
                writer.write(SHORT_RESPONSE)
            elif path.startswith("/chunks/"):
                _, _, size, count = path.split("/")
                await send_chunks(writer, int(size), int(count))
            elif path.startswith("/sse"):
                writer.write(CHUNKED_HEAD % b"text/event-stream" + frame(b"data: 0\n\n")
                             + b"0\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            if b"connection: close" in head.lower():
                return
    except (OSError, asyncio.IncompleteReadError):
        pass  # the client hung up (wrk does, mid-request, when its time is up)
    finally:
        writer.close()


async def main(fd: int) -> None:
    listener = socket.socket(fileno=fd)
    server = await asyncio.start_server(serve_connection, sock=listener, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
