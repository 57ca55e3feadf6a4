"""Hostile push URLs, refused at every door, with the reason in the message.

``tests/core/test_destinations.py`` holds the catalogue of hostile URLs
(loopback, private, link-local, IPv6 and decimal/hex/octal spellings, IPv4-mapped
and NAT64 forms, names resolving to such addresses through the resolver seam,
user-info tricks, local files in arguments, unknown schemes) and checks
``check_push_url`` alone. Here the same catalogue goes through the other doors:

- the preference service (``set_destination`` for push, desktop and android):
  refused with the reason, nothing written;
- the daemon's push transport at send time (a URL that reached the database some
  other way, an operator's changed settings, DNS that changed since): refused as
  ``TransportRefused`` with the reason, nothing sent;
- redirects: a local server answering 301/302/303/307/308 towards another local
  server; the push transport never follows them, for json, ntfy and gotify URLs.

The bot's and the TUI's doors are in ``test_bot.py`` and ``test_tui.py``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from core.test_authorization import snapshot
from core.test_destinations import fake_resolver
from core.test_push_urls import HOSTILE_URLS
from core.test_rendering import claimed
from daemon.conftest import WITH_JSON

from fmn_core import preferences
from fmn_core.config import PushConfig
from fmn_core.db import Database
from fmn_core.errors import InvalidDestination
from fmn_core.preferences import Actor
from fmn_core.rendering import render
from fmn_daemon.transports import TransportError, TransportRefused
from fmn_daemon.transports.push import PushTransport

RENDERED = render(claimed())
#: Cases whose refusal needs the fake DNS of the catalogue (the real one can't be used).
RESOLVED = {url for url, reason in HOSTILE_URLS if "resolves to" in reason}


def test_push_urls_refused_by_the_preference_service(db: Database, figures: Any) -> None:
    # The catalogue's json URLs test the host checks, so json is allowed here.
    db.config = db.config.replace(push=PushConfig(allowed_schemes=WITH_JSON))
    db.sessionmaker.configure(info=db.session_info())
    alice = Actor("alice")
    refused = 0
    before = snapshot(db)
    for context in ("push", "desktop", "android"):
        for url, reason in HOSTILE_URLS:
            if url in RESOLVED:
                continue
            with pytest.raises(InvalidDestination) as caught, db.begin() as session:
                preferences.set_destination(session, alice, context, url)
            assert reason in str(caught.value), (context, url, str(caught.value))
            refused += 1
    assert snapshot(db) == before
    figures(backend=db.engine.dialect.name, refused=refused, written=0)


def test_push_urls_refused_at_send_time(figures: Any) -> None:
    transport = PushTransport(
        PushConfig(allowed_schemes=WITH_JSON, timeout_seconds=2), resolver=fake_resolver
    )
    reasons: dict[str, int] = {}
    for url, reason in HOSTILE_URLS:
        with pytest.raises(TransportRefused) as caught:
            asyncio.run(transport.send(url, RENDERED))
        assert reason in caught.value.reason, (url, caught.value.reason)
        reasons[reason] = reasons.get(reason, 0) + 1
    figures(
        urls=len(HOSTILE_URLS),
        refused_at_send_time=sum(reasons.values()),
        distinct_reasons=len(reasons),
    )


class _Redirector:
    """A local HTTP server that answers every request with one redirect."""

    def __init__(self, status: int, location: str) -> None:
        self.hits: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                outer.hits.append(self.path)
                self.send_response(status)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def redirector_factory() -> Iterator[Any]:
    made: list[_Redirector] = []

    def make(status: int, location: str) -> _Redirector:
        made.append(_Redirector(status, location))
        return made[-1]

    yield make
    for server in made:
        server.close()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("scheme", ["json", "ntfy", "gotify"])
def test_push_redirects_to_private_addresses_are_not_followed(
    status: int, scheme: str, push_receiver: Any, redirector_factory: Any, figures: Any
) -> None:
    # The target stands for an internal service (cloud metadata, an admin port).
    target = f"http://127.0.0.1:{push_receiver.port}/latest/meta-data"
    redirector = redirector_factory(status, target)
    # Loopback has to be allowed to reach the local redirector at all; redirects
    # must stay off regardless, even when the URL asks for them.
    transport = PushTransport(
        PushConfig(allowed_schemes=WITH_JSON, allow_private_hosts=True, timeout_seconds=5)
    )
    path = {"json": "/hook?redirect=yes", "ntfy": "/topic", "gotify": "/AbCdEf123"}[scheme]
    url = f"{scheme}://127.0.0.1:{redirector.port}{path}"
    with pytest.raises(TransportError) as caught:
        asyncio.run(transport.send(url, RENDERED))
    assert len(redirector.hits) == 1, redirector.hits
    assert push_receiver.requests == []
    figures(
        scheme=scheme,
        status=status,
        redirector_hits=len(redirector.hits),
        target_hits=len(push_receiver.requests),
        reason=caught.value.reason[:80],
    )
