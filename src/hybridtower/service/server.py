"""Running the app with uvicorn: bind first (clear error when the port is taken), then serve.

- :func:`bind_socket` - a listening TCP socket, or a :class:`ServiceError` naming host and port; its
  connections have Nagle's algorithm off (``TCP_NODELAY``, see below)
- :func:`serve_forever` - run the app on a bound socket until Ctrl-C (used by ``hybridtower serve`` / ``demo``)
- :class:`BackgroundServer` - the app in a background thread on a free loopback port (tests, load test)
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import threading
import time

from ..core.errors import HybridTowerError


# Why TCP_NODELAY matters here (measured, docs/service.md "The 50 ms floor"): uvicorn writes an answer's
# head and its body in two writes. With Nagle's algorithm on, the body waits until the client ACKs the head,
# and a client on a kept-alive connection delays that ACK by up to 40 ms (Linux): every answer after the
# first few on a connection took ~48 ms instead of ~6 ms. asyncio turns Nagle off only for sockets whose
# ``proto`` is IPPROTO_TCP, and a socket made as ``socket(family, SOCK_STREAM)`` has proto 0 (so have the
# connections it accepts): the listening socket is made with getaddrinfo's proto and TCP_NODELAY set (the
# accepted connections inherit both).


class ServiceError(HybridTowerError):
    """The service cannot start (address in use, bad host, ...)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_socket(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """A listening socket on ``host:port`` (port 0 = any free port)."""
    if not 0 <= int(port) <= 65535:
        raise ServiceError(f"--port must be between 0 and 65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ServiceError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    family, _, proto, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind(addr)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServiceError(f"port {port} on {host} is already in use: stop the other server or pick "
                               f"another port with --port") from None
        raise ServiceError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _config(app, log_level: str, access_log: bool):
    import uvicorn

    return uvicorn.Config(app, log_level=log_level, access_log=access_log, lifespan="off",
                          timeout_keep_alive=5, server_header=False)


def serve_forever(app, sock: socket.socket, *, log_level: str = "info", access_log: bool = True) -> None:
    """Serve ``app`` on the bound ``sock`` until interrupted (uvicorn handles SIGINT/SIGTERM)."""
    import uvicorn

    server = uvicorn.Server(_config(app, log_level, access_log))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it handled after a clean shutdown
        pass
    finally:
        sock.close()


class BackgroundServer:
    """``with BackgroundServer(app) as srv: httpx.get(srv.url + "/healthz")`` - uvicorn in a thread."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        self.app = app
        self.sock = bind_socket(host, port)
        self.host, self.port = self.sock.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}"
        self._server = None
        self._thread: threading.Thread | None = None
        self._log_level = log_level

    def start(self, timeout: float = 20.0) -> "BackgroundServer":
        import uvicorn

        self._server = uvicorn.Server(_config(self.app, self._log_level, False))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self.sock]},
                                        name="hybridtower-service", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ServiceError(f"the service did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.sock.close()

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
