"""HTTP to servers fmn does not trust, bounded: push sends, FASJSON, FAS2.

``requests`` times each socket read, not a whole answer, and reads a reply whole.
Apprise's plugins and python-fedora's client call it themselves, offer no hook, and
python-fedora follows redirects with the form it posted (fmn's password in it); fmn's
own FASJSON client is no better off. Their servers are not fmn's to trust: a push
server is whoever set the URL's, and a directory's answer reaches the consumer while
it matches. So requests made inside :func:`bounded_requests` go through two
wrappers, installed once:

- every socket they open is shut down when the block's deadline passes, so a server
  that sends a byte now and then (headers or body) ends there;
- every request is sent with ``allow_redirects=False`` and a redirect is refused with
  :class:`ReplyRefused`; every reply is asked for uncompressed (its size on the wire
  is then the size it reads as) and read as a stream up to ``max_bytes``.

The block is a context variable, not a thread's own: Apprise runs each service in
its pool's threads, in a copy of the caller's context. Requests made outside a block
pass through untouched.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import requests
import urllib3.util.connection

__all__ = ["ReplyRefused", "RequestLimits", "bounded_requests"]


class ReplyRefused(requests.RequestException):
    """A reply too slow, too large or redirecting elsewhere; the request failed."""


class RequestLimits:
    """One bounded block: its deadline and reply size, the sockets to shut down at
    the deadline, and why a request was refused."""

    def __init__(self, seconds: float, max_bytes: int, server: str) -> None:
        self.seconds = seconds
        self.max_bytes = max_bytes
        #: Who answers, for the reasons ("the push server", "Fedora Accounts").
        self.server = server
        self.expired = False
        #: Why a request was refused (too slow, too large, a redirect), for the caller.
        self.problem: str | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if not self.expired:
                return
        _shut(sock)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)

    def refuse(self, problem: str) -> ReplyRefused:
        self.problem = problem
        return ReplyRefused(problem)

    def too_slow(self) -> ReplyRefused:
        return self.refuse(f"{self.server} did not answer within {self.seconds:g} s")


def _shut(sock: socket.socket) -> None:
    # From another thread: the read blocked on it returns at once. OSError: closed already.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


_LIMITS: ContextVar[RequestLimits | None] = ContextVar("fmn_request_limits", default=None)
_installed = threading.Lock()
_wrapped = False


def _install() -> None:
    global _wrapped
    with _installed:
        if _wrapped:
            return
        original_connect = urllib3.util.connection.create_connection
        original_send = requests.Session.send

        def create_connection(*args: Any, **kwargs: Any) -> socket.socket:
            sock = original_connect(*args, **kwargs)
            limits = _LIMITS.get()
            if limits is not None:
                limits.track(sock)
            return sock

        def send(self: requests.Session, request: Any, **kwargs: Any) -> Any:
            limits = _LIMITS.get()
            if limits is None:
                return original_send(self, request, **kwargs)
            if limits.expired:
                raise limits.too_slow()
            request.headers["Accept-Encoding"] = "identity"
            kwargs["stream"] = True
            kwargs["allow_redirects"] = False
            try:
                response = original_send(self, request, **kwargs)
                try:
                    if response.is_redirect:
                        raise limits.refuse(
                            f"{limits.server} answered with a redirect (HTTP "
                            f"{response.status_code}); fmn follows none"
                        )
                    response._content = _read_bounded(response, limits)
                finally:
                    response.close()
                if limits.expired:
                    # Cut off: whatever was parsed (a status line, no end of the
                    # headers) is not the server's whole answer.
                    raise limits.too_slow()
            except requests.RequestException:
                if limits.expired:
                    raise limits.too_slow() from None
                raise
            return response

        urllib3.util.connection.create_connection = create_connection
        requests.Session.send = send  # type: ignore[method-assign]
        _wrapped = True


def _read_bounded(response: requests.Response, limits: RequestLimits) -> bytes:
    body = bytearray()
    try:
        for chunk in response.iter_content(64 * 1024):
            body += chunk
            if len(body) > limits.max_bytes:
                raise limits.refuse(
                    f"{limits.server}'s reply is larger than {limits.max_bytes // 1024} KiB"
                )
    except ReplyRefused:
        raise
    except requests.RequestException as exc:
        if limits.expired:
            raise limits.too_slow() from None
        # requests' own words are a tuple of urllib3's: say it plainly.
        raise limits.refuse(f"{limits.server}'s reply broke off ({type(exc).__name__})") from exc
    return bytes(body)


@contextlib.contextmanager
def bounded_requests(seconds: float, *, max_bytes: int, server: str) -> Iterator[RequestLimits]:
    """Requests made inside the block (in this context, and copies of it made in the
    block) end within ``seconds`` (their sockets are shut down then), follow no
    redirect, and read at most ``max_bytes`` of each reply."""
    _install()
    limits = RequestLimits(seconds, max_bytes, server)
    timer = threading.Timer(seconds, limits.expire)
    timer.daemon = True
    token = _LIMITS.set(limits)
    timer.start()
    try:
        yield limits
    finally:
        timer.cancel()
        _LIMITS.reset(token)
