"""Throwaway TLS for loopback tests: a CA made in memory (trustme), a cert for 127.0.0.1.

The client side verifies the server's certificate against that CA, so a test
talks real, verified TLS without touching the machine's trust store.
"""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import trustme

from .support import WAIT

HOST = "127.0.0.1"


class LoopbackTLS:
    def __init__(self) -> None:
        self.ca = trustme.CA()
        self.cert = self.ca.issue_cert(HOST)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def write_files(self, directory: Path) -> tuple[str, str]:
        """(certfile, keyfile) for a server that reads them from disk (gunicorn)."""
        certfile, keyfile = directory / "cert.pem", directory / "key.pem"
        self.cert.cert_chain_pems[0].write_to_path(str(certfile))
        self.cert.private_key_pem.write_to_path(str(keyfile))
        return str(certfile), str(keyfile)

    def wrap_client(self, sock: socket.socket) -> ssl.SSLSocket:
        return self.client_context().wrap_socket(sock, server_hostname=HOST)

    def connected_pair(self) -> tuple[ssl.SSLSocket, ssl.SSLSocket]:
        """A (server side, client side) TLS connection over loopback TCP, handshake done."""
        server_raw, client_raw = tcp_pair()
        server_context = self.server_context()
        # No TLS 1.3 session tickets: the client would never read them, and a
        # socket closed with unread bytes sends a reset instead of a FIN.
        server_context.num_tickets = 0
        server = server_context.wrap_socket(server_raw, server_side=True,
                                            do_handshake_on_connect=False)
        client = self.client_context().wrap_socket(client_raw, server_hostname=HOST,
                                                   do_handshake_on_connect=False)
        failures: list[BaseException] = []

        def handshake() -> None:
            try:
                server.do_handshake()
            except BaseException as exc:  # reported by the caller
                failures.append(exc)

        thread = threading.Thread(target=handshake, name="tls-handshake")
        thread.start()
        client.do_handshake()
        thread.join(WAIT)
        assert not thread.is_alive() and not failures, failures
        return server, client


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A (server side, client side) TCP connection over loopback."""
    with socket.create_server((HOST, 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=WAIT)
        server, _ = listener.accept()
    server.settimeout(WAIT)
    return server, client
