"""Property-based fuzzing of the HTTP surface: hostile requests against the real server.

A real server runs on loopback in a thread of its own (its own event loop), with
a SQLite database holding a user with a feed, a live token and sent
notifications, one of them with a genuine one-click action link. Hypothesis builds
whole requests as bytes — methods, paths, query strings, headers, bodies (action
forms among them), framing — and sends each on a fresh TCP
connection; half are framed as a client frames them, so that the handlers, not only
the parser, meet the hostile parts. For every request:

- the answer, if any, is an HTTP status line, never a 5xx (``/ready`` may say
  503: this server has no main loop that declares it ready);
- nothing was logged at ERROR (an exception escaping a handler is a bug);
- the server still runs and a valid feed request still answers 200 with the feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import feedparser
import pytest
from core.test_outbox import add_notification, add_user
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.conftest import free_port
from fmn_core import preferences
from fmn_core.config import HttpConfig
from fmn_core.db import Database
from fmn_core.models import utcnow
from fmn_core.preferences import Actor
from fmn_core.rendering import Links
from fmn_daemon.http import HttpServer, start_http
from fmn_daemon.metrics import Metrics
from fmn_daemon.transports.live import LiveHub

from .test_http import sqlite_database

pytestmark = [pytest.mark.slow]

FEED = "feed-token-jo-aaaaaaaaaaaaaaaa"
LIVE = "live-token-jo-aaaaaaaaaaaaaaaa"
EXAMPLES = 1000


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclasses.dataclass
class FuzzServer:
    """The endpoints on a loop of their own, in a thread."""

    port: int
    unsubscribe_token: str
    #: A genuine "mute this package" link's token, for a notification jo was sent.
    action_token: str
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop
    server: HttpServer

    def alive(self) -> bool:
        return self.thread.is_alive() and self.loop.is_running()


def _serve(tmp: Path) -> Iterator[FuzzServer]:
    db: Database = sqlite_database(tmp)
    now = utcnow()
    with db.begin() as session:
        jo = add_user(session, "jo", "rss", (FEED,))
        add_user(session, "jo", "live", (LIVE,))
        add_user(session, "jo", "email", ("jo@example.org",))
        for context in ("rss", "live"):
            add_notification(session, jo, context, state="sent", sent_at=now)
        preferences.add_filter(session, Actor("jo"), "email", "my packages")
        mailed = add_notification(session, jo, "email", state="sent", sent_at=now).message_id
    port = free_port()
    config = db.config.replace(
        http=HttpConfig(
            port=port,
            public_url=f"http://127.0.0.1:{port}",
            secret_key="fuzz-key",
            header_timeout_seconds=2.0,
            keepalive_timeout_seconds=2.0,
            body_timeout_seconds=2.0,
            send_timeout_seconds=2.0,
        )
    )
    metrics = Metrics()
    loop = asyncio.new_event_loop()
    started: list[HttpServer] = []

    async def tick() -> None:
        while True:  # /live answers 200 while something ticks, as the main loop does
            metrics.tick()
            await asyncio.sleep(0.5)

    def main() -> None:
        asyncio.set_event_loop(loop)
        started.append(loop.run_until_complete(start_http(config, db, metrics, LiveHub())))
        ticking = loop.create_task(tick())
        loop.run_forever()
        ticking.cancel()
        loop.run_until_complete(asyncio.gather(ticking, return_exceptions=True))
        loop.run_until_complete(started[0].cleanup())
        # Handlers still lingering over a body a client announced but never sent.
        leftover = asyncio.all_tasks(loop)
        for task in leftover:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
        loop.close()

    thread = threading.Thread(target=main, name="fuzz-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert started, "the server did not start"
    links = Links.from_config(config)
    token = links.unsubscribe_token("jo", "email")
    expires = now + dt.timedelta(days=1)
    action = links.action_token("jo", "email", mailed, "mute-package", expires, 0)
    try:
        yield FuzzServer(port, token, action, thread, loop, started[0])
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(15)
        db.engine.dispose()


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzServer]:
    yield from _serve(tmp_path_factory.mktemp("fuzz-http"))


@pytest.fixture(scope="module")
def server_errors() -> Iterator[_Errors]:
    handler = _Errors()
    loggers = [logging.getLogger(name) for name in ("aiohttp", "fmn_daemon", "asyncio")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def exchange(port: int, request: bytes, timeout: float = 6.0, until: bytes = b"\r\n") -> bytes:
    """Send ``request`` on a fresh connection; what came back until ``until`` (by
    default, the end of the status line) or the connection closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        # The server may answer and close before reading it all.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.sendall(request)
        received = b""
        deadline = time.monotonic() + timeout
        while until not in received and time.monotonic() < deadline:
            try:
                chunk = connection.recv(4096)
            except ConnectionResetError:
                break
            except TimeoutError:
                raise AssertionError(
                    f"no {until!r} within {timeout}s in the answer to {request[:200]!r}: "
                    f"{received[:400]!r}"
                ) from None
            if not chunk:
                break
            received += chunk
        return received


def valid_feed(port: int) -> None:
    request = f"GET /feeds/{FEED}.atom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request.encode())
        response = b""
        while chunk := connection.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    assert len(feedparser.parse(body).entries) == 1


# -- strategies -----------------------------------------------------------------------

_TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_NO_CRLF = st.binary(max_size=200).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))

methods = st.one_of(
    st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"]),
    st.text(_TOKEN_CHARS, min_size=1, max_size=12),
)


@st.composite
def paths(draw: st.DrawFn, unsubscribe: str, action: str) -> bytes:
    prefix = draw(
        st.sampled_from(
            [
                "/",
                "/live",
                "/ready",
                "/metrics",
                f"/feeds/{FEED}.atom",
                f"/feeds/{FEED}.rss",
                "/feeds/",
                "/feeds/x.atom",
                f"/live/sse/{LIVE}",
                f"/live/ws/{LIVE}",
                "/live/sse/nope",
                "/live/ws/",
                f"/unsubscribe/{unsubscribe}",
                "/unsubscribe/",
                "/unsubscribe/a.b",
                f"/act/{action}",
                "/act/",
                "/act/a.b",
            ]
        )
    )
    tail = draw(
        st.one_of(
            st.just(""),
            st.text(max_size=40).map(lambda t: quote(t, safe="")),
            st.text(max_size=40).map(lambda t: t.replace(" ", "").replace("\r", "")),
        )
    )
    query = draw(
        st.one_of(
            st.just(""),
            st.dictionaries(
                st.sampled_from(["since", "x", ""]) | st.text(max_size=8),
                st.one_of(
                    st.text(max_size=30),
                    st.integers(min_value=-(10**30), max_value=10**30).map(str),
                    st.just("1" * 5000),
                ),
                max_size=3,
            ).map(lambda d: "?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in d.items())),
            _NO_CRLF.map(lambda b: "?" + b.replace(b" ", b"").decode("latin-1")),
        )
    )
    return (prefix + tail + query).encode("utf-8", "surrogatepass")


header_names = st.one_of(
    st.sampled_from(
        [
            "Host",
            "Content-Length",
            "Transfer-Encoding",
            "Content-Type",
            "Connection",
            "Upgrade",
            "Last-Event-ID",
            "Sec-WebSocket-Key",
            "Sec-WebSocket-Version",
            "Expect",
            "Content-Encoding",
            "Accept-Encoding",
            "Cookie",
        ]
    ),
    st.text(_TOKEN_CHARS, min_size=1, max_size=20),
)
header_values = st.one_of(
    st.sampled_from(
        [
            "chunked",
            "upgrade",
            "websocket",
            "13",
            "dGhlIHNhbXBsZSBub25jZQ==",
            "100-continue",
            "gzip",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "-1",
            "99999999999999999999",
            "²",
        ]
    ),
    _NO_CRLF.map(lambda b: b.decode("latin-1")),
    st.integers(min_value=-5, max_value=5000).map(str),
)


# Headers a well-framed request may carry with any value and still reach a handler.
_HARMLESS_HEADER_NAMES = st.one_of(
    st.sampled_from(["Accept-Encoding", "Cookie", "Last-Event-ID", "Content-Type"]),
    st.text(_TOKEN_CHARS, min_size=1, max_size=20).map(lambda name: f"X-{name}"),
)


#: What an action page's form posts: the package chosen, and for how many days.
action_forms = st.dictionaries(
    st.sampled_from(["choice", "days", "x"]),
    st.one_of(
        st.sampled_from(["libxcrypt", "7", "999", "-1", "", "²", "0x10"]),
        st.text(max_size=30),
        st.binary(max_size=30).map(lambda b: b.decode("latin-1")),
    ),
    max_size=3,
).map(lambda form: "&".join(f"{quote(k)}={quote(v)}" for k, v in form.items()).encode())


@st.composite
def requests(draw: st.DrawFn, server: FuzzServer) -> bytes:
    # A whole request at random mostly ends at the parser's 400. Half of the requests
    # are framed as a client would frame them, so the handlers behind the parser meet
    # the hostile paths, queries, header values and bodies too.
    well_framed = draw(st.booleans())
    path = draw(paths(server.unsubscribe_token, server.action_token))
    if well_framed:
        method = draw(st.sampled_from([b"GET", b"HEAD", b"POST"]))
        version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]))
        headers = draw(st.lists(st.tuples(_HARMLESS_HEADER_NAMES, header_values), max_size=4))
        framing = "length"
    else:
        method = draw(methods).encode()
        version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x", b""]))
        headers = draw(st.lists(st.tuples(header_names, header_values), max_size=8))
        framing = draw(st.sampled_from(["length", "none", "wrong"]))
    body = draw(
        st.one_of(
            st.just(b""),
            st.just(b"List-Unsubscribe=One-Click"),
            st.binary(max_size=2000),
            action_forms,
        )
    )
    lines = [method + b" " + path + (b" " + version if version else b"")]
    lines += [f"{name}: {value}".encode("latin-1", "replace") for name, value in headers]
    if framing == "length":
        lines.append(f"Content-Length: {len(body)}".encode())
    elif framing == "wrong":
        lines.append(f"Content-Length: {len(body) + draw(st.integers(-3, 3))}".encode())
    if not any(name.lower() == "host" for name, _ in headers):
        lines.append(b"Host: fuzz")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def test_http_fuzzed_requests_never_5xx_and_server_stays_up(
    fuzz_server: FuzzServer, server_errors: _Errors
) -> None:
    answered: list[int] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        derandomize=False,
    )
    @given(data=st.data())
    def one(data: Any) -> None:
        request = data.draw(requests(fuzz_server))
        received = exchange(fuzz_server.port, request)
        if received:
            assert received.startswith(b"HTTP/"), received[:200]
            status = int(received.split(b" ", 2)[1])
            answered.append(status)
            path = request.split(b" ", 2)[1] if request.count(b" ") >= 1 else b""
            allowed_503 = path.startswith(b"/ready")
            assert status < 500 or (status == 503 and allowed_503), (status, request[:300])
        assert fuzz_server.alive(), "the server stopped"
        assert not server_errors.records, [r.getMessage() for r in server_errors.records]

    one()
    valid_feed(fuzz_server.port)
    assert fuzz_server.server.guard.open <= 2
    # The fuzzer reached the handlers, not only the parser's 400s.
    assert {200, 400, 404} <= set(answered), sorted(set(answered))
    seen = dict(sorted(Counter(answered).items()))
    print(f"\n[http] fuzzed requests: {EXAMPLES}, answers by status: {seen}")


def test_http_fuzzed_requests_feed_still_answers_between(
    fuzz_server: FuzzServer, server_errors: _Errors
) -> None:
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data())
    def one(data: Any) -> None:
        exchange(fuzz_server.port, data.draw(requests(fuzz_server)))
        valid_feed(fuzz_server.port)

    one()
    assert not server_errors.records, [r.getMessage() for r in server_errors.records]


@pytest.mark.parametrize(
    ("encoding", "body"),
    [("gzip", b"\x00not gzip at all"), ("deflate", b"\xff\xfe"), ("br", b"nope")],
)
def test_http_a_body_that_does_not_decode_is_a_400_not_a_server_error(
    fuzz_server: FuzzServer, server_errors: _Errors, encoding: str, body: bytes
) -> None:
    # Found by the fuzzer: a POST whose Content-Encoding its body does not follow.
    request = (
        f"POST /unsubscribe/{fuzz_server.unsubscribe_token} HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Encoding: {encoding}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body
    received = exchange(fuzz_server.port, request)
    # aiohttp's own parser answers an encoding it cannot decode at all (HTTP/1.0 400).
    assert re.match(rb"HTTP/1\.[01] 400 ", received), received[:200]
    assert fuzz_server.alive()
    assert not server_errors.records, [r.getMessage() for r in server_errors.records]


@pytest.mark.parametrize("expect", [b"\xb2", b"\xff\xfe100-continue", b"200-ok"])
@pytest.mark.parametrize("path", ["/", "/live", "/feeds/x.atom"])
def test_http_an_unknown_expectation_is_a_417_not_a_server_error(
    fuzz_server: FuzzServer, server_errors: _Errors, expect: bytes, path: str
) -> None:
    # Found by the fuzzer: aiohttp's own 417 quoted a header that is not UTF-8 and
    # failed to encode it (a 500), on any path, matched or not.
    request = (
        f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode()
        + b"Expect: "
        + expect
        + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    received = exchange(fuzz_server.port, request)
    assert received.startswith(b"HTTP/1.1 417 "), received[:200]
    assert fuzz_server.alive()
    assert not server_errors.records, [r.getMessage() for r in server_errors.records]


#: A valid WebSocket handshake's headers, for the live feed of ``LIVE``.
HANDSHAKE = {
    b"Upgrade": b"websocket",
    b"Connection": b"Upgrade",
    b"Sec-WebSocket-Version": b"13",
    b"Sec-WebSocket-Key": b"dGhlIHNhbXBsZSBub25jZQ==",
}


def handshake_request(headers: dict[bytes, bytes]) -> bytes:
    return (
        f"GET /live/ws/{LIVE} HTTP/1.1\r\nHost: x\r\n".encode()
        + b"".join(name + b": " + value + b"\r\n" for name, value in headers.items())
        + b"\r\n"
    )


@pytest.mark.parametrize("value", [b"\xb2", b"13\xff", b"websocket\xc3"])
@pytest.mark.parametrize("header", list(HANDSHAKE))
def test_http_a_websocket_handshake_header_that_is_not_text_is_a_400_not_a_server_error(
    fuzz_server: FuzzServer, server_errors: _Errors, header: bytes, value: bytes
) -> None:
    # Found by the fuzzer: aiohttp's 400 for a bad handshake quoted a header that is
    # not UTF-8 and failed to encode it (a 500 and a traceback in the log); a key that
    # is not ASCII failed its base64 decoding the same way. (Sec-WebSocket-Protocol and
    # -Extensions that are not text are ignored, and the handshake is met.)
    request = handshake_request({**HANDSHAKE, header: value})
    received = exchange(fuzz_server.port, request, until=b"must be ASCII")
    assert received.startswith(b"HTTP/1.1 400 "), received[:200]
    assert b"The " + header + b" header of a WebSocket handshake must be ASCII." in received
    assert fuzz_server.alive()
    assert not server_errors.records, [r.getMessage() for r in server_errors.records]


def test_http_a_valid_websocket_handshake_is_still_met(
    tmp_path: Path, server_errors: _Errors
) -> None:
    # A server of its own: on the shared one, the fuzzed requests before may still
    # hold the token's live seats (a 429).
    with contextlib.contextmanager(_serve)(tmp_path) as server:
        received = exchange(server.port, handshake_request(HANDSHAKE), until=b"\r\n\r\n")
    assert received.startswith(b"HTTP/1.1 101 Switching Protocols"), received[:200]
    assert not server_errors.records, [r.getMessage() for r in server_errors.records]


def test_http_100_continue_is_still_met(fuzz_server: FuzzServer, server_errors: _Errors) -> None:
    request = (
        b"GET /live HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\n"
        b"Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    received = exchange(fuzz_server.port, request)
    assert received.startswith(b"HTTP/1.1 100 Continue"), received[:200]
    assert not server_errors.records, [r.getMessage() for r in server_errors.records]


@pytest.mark.parametrize(
    "form",
    [
        b"choice=%00",
        b"choice=%ff%fe",
        b"choice=" + b"x" * 5000,
        b"choice=libxcrypt&choice=other",
        b"choice=%ED%A0%80",
        b"days=99999",
        b"days=-1",
        b"days=%C2%B2",
        b"days=7&days=abc",
        b"\xff=\xfe",
    ],
    ids=lambda form: form[:24].decode("latin-1"),
)
def test_http_a_hostile_action_form_is_refused_not_a_server_error(
    fuzz_server: FuzzServer, server_errors: _Errors, form: bytes
) -> None:
    request = (
        f"POST /act/{fuzz_server.action_token} HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(form)}\r\nConnection: close\r\n\r\n"
    ).encode() + form
    received = exchange(fuzz_server.port, request)
    assert re.match(rb"HTTP/1\.1 (200|400|410) ", received), received[:200]
    assert fuzz_server.alive()
    assert not server_errors.records, [r.getMessage() for r in server_errors.records]
