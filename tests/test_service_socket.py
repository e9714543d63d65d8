"""The server's sockets send small answers at once (TCP_NODELAY), whatever accepts them.

uvicorn writes an answer's head and body in two writes; with Nagle's algorithm on, the body waited for
the client's delayed ACK (~40 ms on Linux) on every kept-alive request: the ~50 ms single-client floor of
docs/service.md. No timing here: the socket option itself is checked, on the connection the server sees.
"""

from __future__ import annotations

import asyncio
import socket

from hybridtower.service.server import BackgroundServer, bind_socket


def _nodelay(sock: socket.socket) -> bool:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_listening_socket_is_tcp_with_nodelay():
    sock = bind_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP  # asyncio sets TCP_NODELAY only for these
        assert _nodelay(sock)
        client = socket.create_connection(sock.getsockname()[:2])
        conn, _ = sock.accept()
        try:
            assert _nodelay(conn), "an accepted connection must not delay small writes (Nagle)"
        finally:
            conn.close()
            client.close()
    finally:
        sock.close()


def test_asyncio_server_connections_have_nodelay():
    """What uvicorn does: an asyncio server on the bound socket; the connection's transport socket."""
    seen: list[bool] = []

    async def main():
        sock = bind_socket("127.0.0.1", 0)
        done = asyncio.Event()

        async def handle(reader, writer):
            seen.append(_nodelay(writer.get_extra_info("socket")))
            writer.close()
            done.set()

        server = await asyncio.start_server(handle, sock=sock)
        async with server:
            host, port = sock.getsockname()[:2]
            _, w = await asyncio.open_connection(host, port)
            await asyncio.wait_for(done.wait(), 10)
            w.close()

    asyncio.run(main())
    assert seen == [True]


def test_background_server_socket_is_the_same():
    async def app(scope, receive, send):  # never called
        raise AssertionError

    srv = BackgroundServer(app)
    try:
        assert srv.sock.proto == socket.IPPROTO_TCP and _nodelay(srv.sock)
    finally:
        srv.sock.close()
