"""HTTP for the account directory fmn asks itself (FASJSON): one request, its answer bounded.

A directory's server is outside fmn, and the consumer asks it while matching, so
what it answers is bounded before it is parsed. ``ask_json`` sends one request and:

- follows no redirect: fmn's credentials (Kerberos) go only to the configured host;
- reads the body in pieces, at most ``limit`` bytes, and gives up once ``timeout``
  seconds have passed since the request was sent: a body that drips ends there. Each
  read of the socket also waits at most ``timeout``, so a body that stops ends as
  well, at most one more ``timeout`` later;
- asks for gzip or nothing, and inflates gzip itself within the same bounds; any other
  encoding is refused;
- turns every way the answer can't be read (the server can't be reached, the body is
  cut short, stalls, drips, is too large, is broken gzip, is not JSON or nests too deep
  to parse) into ``AccountDirectoryUnavailable`` naming the problem. That is what the
  directories' callers handle: FASJSON pauses its questions and uses the answers it
  remembers.

Headers that drip are bounded only by the timeout of each read (requests has no total
timeout); the body is what a server controls once it has answered. Requests that
libraries make (python-fedora's for FAS2, Apprise's) are bounded from outside
instead, headers included (``fmn_core.library_http``).
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from typing import Any

import requests
import urllib3

from .errors import AccountDirectoryUnavailable

__all__ = ["MAX_ANSWER_BYTES", "ThreadSessions", "ask_json"]

#: The largest answer read, inflated or not (a FASJSON page of 40 full users is ~40 kB).
MAX_ANSWER_BYTES = 4 * 1024 * 1024
#: How much one read of the socket may return.
_CHUNK_BYTES = 64 * 1024


class ThreadSessions:
    """One requests ``Session`` per thread (requests does not document a Session as
    thread-safe), with ``auth``, and nothing taken from the environment: no proxies,
    and no netrc credentials."""

    def __init__(self, auth: Any = None) -> None:
        self._auth = auth
        self._local = threading.local()

    def get(self) -> requests.Session:
        """This thread's session, made on first use."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.auth = self._auth
            session.trust_env = False
            self._local.session = session
        return session


class _Unreadable(Exception):
    """Why the body can't be used (the message is one phrase)."""


def ask_json(
    session: requests.Session,
    method: str,
    url: str,
    *,
    where: str,
    timeout: float,
    limit: int = MAX_ANSWER_BYTES,
    **request: Any,
) -> tuple[int, Any]:
    """Send one request; return its status and, for a 200, the JSON value of its body.

    Any other status comes back with ``None`` and its body unread, for the caller to
    judge (``3xx`` included: no redirect is followed). ``where`` is the directory's
    address for ``AccountDirectoryUnavailable``; ``request`` goes to requests
    (``params``, ``data``).
    """
    deadline = time.monotonic() + timeout
    label = url.removeprefix(where) or url
    try:
        with session.request(
            method,
            url,
            headers={"Accept": "application/json", "Accept-Encoding": "gzip"},
            timeout=timeout,
            stream=True,
            allow_redirects=False,
            **request,
        ) as response:
            if response.status_code != 200:
                return response.status_code, None
            body = _read_body(response, limit, deadline, timeout)
    except _Unreadable as exc:
        raise AccountDirectoryUnavailable(where, f"{label}: {exc}") from None
    except requests.RequestException as exc:
        raise AccountDirectoryUnavailable(where, type(exc).__name__) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        # The body broke after the headers: requests leaves urllib3's own errors
        # (IncompleteRead, a read timeout) to whoever reads the stream.
        problem = f"{label}: the answer broke off ({type(exc).__name__})"
        raise AccountDirectoryUnavailable(where, problem) from exc
    try:
        return 200, json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise AccountDirectoryUnavailable(where, f"{label}: the answer is not JSON") from exc


def _read_body(response: requests.Response, limit: int, deadline: float, timeout: float) -> bytes:
    """The body, inflated if it is gzip; ``_Unreadable`` once it passes a bound."""
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    inflate: Any = None
    if encoding in ("gzip", "x-gzip"):
        inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    elif encoding not in ("", "identity"):
        raise _Unreadable(f"the answer is encoded as {encoding[:40]!r}, which fmn did not ask for")
    too_large = f"the answer is larger than {limit} bytes"
    body = bytearray()
    received = 0
    # read1 returns what one read of the socket gave, so the deadline is checked
    # between reads, whatever the pace; the bytes are inflated here, not by urllib3,
    # whose read1 would keep reading until the gzip stream gave something.
    while chunk := response.raw.read1(_CHUNK_BYTES, decode_content=False):
        received += len(chunk)
        if received > limit:
            raise _Unreadable(too_large)
        if inflate is not None:
            try:
                # Never more than one byte past the limit, however well it compresses.
                chunk = inflate.decompress(chunk, limit + 1 - len(body))
            except zlib.error:
                raise _Unreadable("the answer is not valid gzip") from None
        body += chunk
        if len(body) > limit:
            raise _Unreadable(too_large)
        if time.monotonic() > deadline:
            raise _Unreadable(f"the answer took longer than {timeout:g}s")
    if inflate is not None and not inflate.eof:
        raise _Unreadable("the gzip answer is cut short")
    return bytes(body)
