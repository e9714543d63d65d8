"""ASGI wrappers around the app: the Host check and a guard for answers to connections the server dropped.

- :class:`HostCheck` answers ``400 invalid_host`` to any request whose ``Host`` header is not one of the
  allowed names (DNS rebinding: a page on ``evil.example`` whose name now resolves to 127.0.0.1 must not
  be able to read the service). Defaults: ``localhost``, ``127.0.0.1``, ``[::1]`` (:func:`default_hosts`).
- :class:`DroppedConnectionGuard` swallows the protocol error the server raises when the app answers a
  request whose connection it has already closed (uvicorn answers a malformed body, e.g. a bad chunked
  encoding, with its own 400 and closes; the app's own answer then has nowhere to go). Without it that
  is an "Exception in ASGI application" traceback in the log for a client's mistake.
"""

from __future__ import annotations

import ipaddress
import json
import logging

log = logging.getLogger("hybridtower.service")

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def normalise_host(name: str) -> str:
    """``Host``-header form of a host name: lower case, IPv6 literals in brackets, no port."""
    name = name.strip().lower().rstrip(".")
    if ":" in name and not name.startswith("["):
        try:
            if ipaddress.ip_address(name).version == 6:
                return f"[{name}]"  # a bare IPv6 literal
        except ValueError:
            pass
    return name


def valid_host_name(name: str) -> bool:
    """A name usable with ``--allow-host``: a host name or address, no port, no scheme."""
    n = normalise_host(name)
    return bool(n) and "/" not in n and host_of_header(n) == n


def host_of_header(value: str) -> str:
    """The host part of a ``Host`` header value (port removed), normalised; "" when malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return ""
        rest = value[end + 1:]
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return ""
        return value[:end + 1]
    host, sep, port = value.partition(":")
    if sep and not port.isdigit():
        return ""
    return host.rstrip(".")


def default_hosts(bound_host: str | None = None, extra=()) -> tuple[str, ...]:
    """Loopback names, the host the server is bound to (unless a wildcard) and ``extra``."""
    names = list(LOOPBACK_HOSTS)
    if bound_host and bound_host not in ("0.0.0.0", "::", ""):
        names.append(normalise_host(bound_host))
    names.extend(normalise_host(h) for h in extra if h and h.strip())
    return tuple(dict.fromkeys(names))


class HostCheck:
    """Pass HTTP requests whose ``Host`` is allowed; answer the rest with ``400 invalid_host``."""

    def __init__(self, app, allowed_hosts):
        self.app = app
        self.allowed = frozenset(normalise_host(h) for h in allowed_hosts)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        host = ""
        for key, value in scope.get("headers") or ():
            if key == b"host":
                host = host_of_header(value.decode("latin-1"))
                break
        if host and host in self.allowed:
            return await self.app(scope, receive, send)
        body = json.dumps({"error": "invalid_host",
                           "detail": "this server answers only requests addressed to its configured host names "
                                     "(see `hybridtower serve --allow-host`)"}).encode()
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body})


def _protocol_errors() -> tuple[type[BaseException], ...]:
    try:
        import h11
    except ImportError:  # another server: nothing to guard
        return ()
    return (h11.LocalProtocolError,)


class DroppedConnectionGuard:
    """Turn "the server already closed this connection" errors raised by ``send`` into a no-op."""

    def __init__(self, app):
        self.app = app
        self.errors = _protocol_errors()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.errors:
            return await self.app(scope, receive, send)
        dropped = False

        async def guarded_send(message):
            nonlocal dropped
            if dropped:
                return
            try:
                await send(message)
            except self.errors as exc:
                dropped = True
                log.debug("answer to %s %s dropped: the server already closed the connection (%s)",
                          scope.get("method"), scope.get("path"), exc)

        await self.app(scope, receive, guarded_send)
