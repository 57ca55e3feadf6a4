"""The HTTP surface's limits: connections, slow request heads, live clients, accept errors.

The daemon's HTTP port is open to the internet, and the process that serves it
also holds the broker and database connections every user's delivery depends
on. Without limits, 1,100 idle TCP connections took all 1,024 descriptors of
the unit: the consumer lost the broker and could not reconnect. aiohttp has no
cap on connections and no deadline for a request's head (its keep-alive timer,
one hour by default, is all that closes a client that never finishes its
headers), so this module adds them where aiohttp leaves a seam:

- :class:`ConnectionGuard` is the protocol factory handed to
  ``loop.create_server`` in place of aiohttp's ``web.Server``. Each accepted
  connection gets a :class:`_GuardedConnection` that counts it (in all and per
  client address) and, over a limit, answers ``503`` and closes it before aiohttp
  sees a byte; otherwise it hands every event to aiohttp's own request handler
  and closes the connection if no request has started within
  ``http.header_timeout_seconds``. A protocol wrapper is the narrowest seam: a
  subclass of aiohttp's ``RequestHandler`` would reach into its private state,
  and a server of our own would re-implement HTTP parsing. Between requests on a
  kept-alive connection, aiohttp's keep-alive timer (``http.keepalive_timeout_seconds``)
  closes idle and half-sent requests alike.
- :class:`LiveSlots` caps live-feed clients (WebSocket and SSE), in all and per
  token, so that one token cannot hold every slot.
- :class:`AcceptErrorLog` is the event loop's exception handler while the server
  runs: an ``accept()`` that fails for want of descriptors is logged once per
  ``http.accept_error_log_seconds`` with a count, never as a flood of tracebacks.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
from collections import Counter
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from fmn_core.config import HttpConfig
from fmn_core.text import for_log

from .rate_limited_log import RateLimitedLog

__all__ = [
    "ACCEPT_BACKLOG",
    "DESCRIPTOR_RESERVE",
    "AcceptErrorLog",
    "ConnectionGuard",
    "LiveSlots",
    "ServerErrorLog",
    "connection_cap",
]

log = logging.getLogger(__name__)

_OVER_LIMIT_BODY = b"too many connections; try again later\n"
_OVER_LIMIT = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 5\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: " + str(len(_OVER_LIMIT_BODY)).encode() + b"\r\n\r\n" + _OVER_LIMIT_BODY
)
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


#: The listening socket's backlog. asyncio accepts up to this many connections in
#: one pass of the loop, and the refused ones among them are closed on the next
#: pass: for that moment they hold descriptors beyond the cap.
ACCEPT_BACKLOG = 128

#: Descriptors kept free for everything but HTTP clients: the broker, the database
#: pool, SMTP and push connections, log files, the listening sockets, and a burst of
#: refused connections not closed yet (at most ``ACCEPT_BACKLOG``).
DESCRIPTOR_RESERVE = 256


def connection_cap(configured: int, soft_limit: int | None = None) -> int:
    """``http.max_connections``, lowered if the process's descriptor limit is too small.

    HTTP clients may use at most what is left of ``RLIMIT_NOFILE`` after
    :data:`DESCRIPTOR_RESERVE` (and never more than half of a small limit), so a
    flood of connections can never take the descriptors the broker and database
    connections need, whatever the unit's ``LimitNOFILE`` says.
    """
    if soft_limit is None:
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft_limit == resource.RLIM_INFINITY or soft_limit <= 0:
        return configured
    room = max(soft_limit - DESCRIPTOR_RESERVE, soft_limit // 2)
    return max(1, min(configured, room))


class _GuardedConnection(asyncio.Protocol):
    """One accepted connection: counted, capped, and given a deadline for its head."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self.guard = guard
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.address = ""
        self.requests = 0
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        reason = self.guard._admit(self)
        if reason is not None:
            # Answered and closed before aiohttp sees a byte: the descriptor is freed
            # at once, and a well-behaved client learns why.
            transport.write(_OVER_LIMIT)
            transport.close()
            return
        self.inner = self.guard.handler_factory()
        self.guard._by_handler[self.inner] = self
        self.inner.connection_made(transport)
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self.guard.config.header_timeout_seconds, self._too_slow)

    def _too_slow(self) -> None:
        self._deadline = None
        if self.requests == 0 and self.transport is not None and not self.transport.is_closing():
            self.guard.slow_heads.event(
                "HTTP: closed a connection from %s that sent no complete request head in %gs",
                self.address or "?",
                self.guard.config.header_timeout_seconds,
            )
            self.transport.abort()

    def request_started(self) -> None:
        """A request head was parsed (called from the application's middleware)."""
        self.requests += 1
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        inner, self.inner = self.inner, None
        if inner is not None:
            self.guard._release(self, inner)
            # asyncio hands over any exception; aiohttp's annotation is narrower.
            inner.connection_lost(exc)  # type: ignore[arg-type]


class ConnectionGuard:
    """The protocol factory for ``loop.create_server``: aiohttp's, behind connection limits."""

    def __init__(self, config: HttpConfig, max_connections: int | None = None) -> None:
        self.config = config
        #: The cap in force: ``http.max_connections`` unless given (see :func:`connection_cap`).
        self.max_connections = (
            max_connections if max_connections is not None else config.max_connections
        )
        #: aiohttp's protocol factory (``AppRunner.server``), set once the runner is set up.
        self.server: web.Server | None = None
        self.open = 0
        self.per_address: Counter[str] = Counter()
        self._by_handler: dict[asyncio.Protocol, _GuardedConnection] = {}
        self.refused = RateLimitedLog(config.accept_error_log_seconds, logger=log)
        self.slow_heads = RateLimitedLog(config.accept_error_log_seconds, logger=log)

    def handler_factory(self) -> asyncio.Protocol:
        """aiohttp's request handler for one connection."""
        assert self.server is not None, "ConnectionGuard.server is set before serving"
        return self.server()

    def __call__(self) -> asyncio.Protocol:
        return _GuardedConnection(self)

    def _admit(self, connection: _GuardedConnection) -> str | None:
        if self.open >= self.max_connections:
            reason = f"the server holds {self.open} connections (http.max_connections)"
        elif (
            self.config.max_connections_per_ip
            and self.per_address[connection.address] >= self.config.max_connections_per_ip
        ):
            reason = (
                f"{connection.address} holds {self.per_address[connection.address]} connections "
                "(http.max_connections_per_ip)"
            )
        else:
            self.open += 1
            self.per_address[connection.address] += 1
            return None
        self.refused.event("HTTP: refused a connection: %s", reason)
        return reason

    def _release(self, connection: _GuardedConnection, inner: asyncio.Protocol) -> None:
        self.open -= 1
        self.per_address[connection.address] -= 1
        if self.per_address[connection.address] <= 0:
            del self.per_address[connection.address]
        self._by_handler.pop(inner, None)

    def request_started(self, protocol: object) -> None:
        """Tell the connection behind aiohttp's ``request.protocol`` that a request began."""
        connection = self._by_handler.get(protocol)  # type: ignore[call-overload]
        if connection is not None:
            connection.request_started()


class LiveSlots:
    """Seats for live-feed clients: at most ``total`` at once, ``per_token`` per token."""

    def __init__(self, total: int, per_token: int) -> None:
        self.total = total
        self.per_token = per_token
        self.taken: Counter[str] = Counter()

    def take(self, token: str) -> str | None:
        """Take a seat for ``token``; the reason when there is none (nothing is taken then)."""
        if sum(self.taken.values()) >= self.total:
            return "too many live clients are connected; try again later"
        if self.taken[token] >= self.per_token:
            return (
                f"this live token already has {self.taken[token]} clients connected, the most "
                "allowed; close one first"
            )
        self.taken[token] += 1
        return None

    def give_back(self, token: str) -> None:
        """Free a seat taken with :meth:`take`."""
        self.taken[token] -= 1
        if self.taken[token] <= 0:
            del self.taken[token]

    def in_use(self) -> int:
        """Seats taken now."""
        return sum(self.taken.values())


class AcceptErrorLog:
    """The loop's exception handler while the server runs: accept errors rate-limited."""

    def __init__(self, interval: float) -> None:
        self.errors = RateLimitedLog(interval, logger=log)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: Any = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Become ``loop``'s exception handler (the previous one still gets everything else)."""
        self._loop = loop
        self._previous = loop.get_exception_handler()
        loop.set_exception_handler(self)

    def uninstall(self) -> None:
        """Give the loop its previous exception handler back."""
        if self._loop is not None and self._loop.get_exception_handler() is self:
            self._loop.set_exception_handler(self._previous)
        self._loop = None

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        message = str(context.get("message", ""))
        if (isinstance(error, OSError) and error.errno in _RESOURCE_ERRNOS) or message.startswith(
            "socket.accept()"
        ):
            # asyncio retries the accept a second later by itself; an operator needs
            # to know it happens, and how often, not a traceback each time.
            self.errors.event(
                "HTTP: accepting a connection failed: %s",
                error.strerror if isinstance(error, OSError) and error.strerror else message,
            )
            return
        if self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)


class ServerErrorLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's request-handler logger: malformed requests are not tracebacks.

    aiohttp logs every request it cannot parse (a duplicate ``Host``, a bad
    header line, a body longer than announced) with ``logger.exception``: a full
    traceback per request, which anyone can trigger at will. Those are the
    client's errors and are answered 400: they become one rate-limited warning
    line. Anything else aiohttp reports this way is a failure in fmn's handlers
    and keeps its traceback.
    """

    def __init__(self, logger: logging.Logger, interval: float) -> None:
        super().__init__(logger, {})
        self.malformed = RateLimitedLog(interval, logger=log)

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        """Log a handler failure with its traceback; a client's bad request as one line."""
        # A body that breaks its own Content-Encoding surfaces wrapped (a payload error
        # caused by the parser's), when aiohttp drains what the handler left unread.
        client_fault = exc_info if isinstance(exc_info, HttpProcessingError) else None
        cause = getattr(exc_info, "__cause__", None)
        if client_fault is None and isinstance(cause, HttpProcessingError):
            client_fault = cause
        if client_fault is not None:
            self.malformed.event(
                "HTTP: answered a malformed request with %s: %s",
                client_fault.code,
                for_log(client_fault.message, limit=120),
            )
            return
        super().exception(msg, *args, exc_info=exc_info, **kwargs)
