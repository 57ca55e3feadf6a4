"""Hostile clients of the live feed, the feeds and the unsubscribe link (real server).

Named after issue 10's cases: live-client caps in all and per token, a client
that stops reading, junk ``since`` values, control characters in a feed, the
RFC 8058 body, and the memory concurrent catch-ups cost.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import feedparser
import pytest
from core.test_outbox import add_message, add_notification, add_user
from sqlalchemy import event, select

from daemon.test_http import email_enabled, http_config, run, serving
from daemon.test_http_surface import AL_LIVE, ED_LIVE, FEED, LIVE, limited, surface_db
from fmn_core.db import Database
from fmn_core.models import StoredMessage, User, utcnow
from fmn_core.rendering import Links
from fmn_daemon.transports.live import LiveHub

__all__ = ["surface_db"]  # the fixture, shared with test_http_surface.py


# -- live clients ---------------------------------------------------------------------


def test_live_client_caps_global_and_per_token(surface_db: Database) -> None:
    config = limited(surface_db, max_live_clients=3, max_live_clients_per_token=2)

    async def scenario() -> dict[str, Any]:
        found: dict[str, Any] = {}
        async with serving(config, surface_db) as (base, client):
            jo_1 = await client.get(f"{base}/live/sse/{LIVE}")
            jo_2 = await client.ws_connect(f"{base}/live/ws/{LIVE}")
            async with client.get(f"{base}/live/sse/{LIVE}") as third:
                found["jo_third"] = (third.status, await third.text())
            al = await client.get(f"{base}/live/sse/{AL_LIVE}")
            async with client.get(f"{base}/live/sse/{ED_LIVE}") as full:
                found["ed_when_full"] = (full.status, await full.text())
            await jo_2.close()
            await asyncio.sleep(0.2)
            again = await client.get(f"{base}/live/sse/{ED_LIVE}")
            found["ed_after_one_left"] = again.status
            for response in (jo_1, al, again):
                response.close()
        return found

    found = run(scenario)
    assert found["jo_third"][0] == 429
    assert "already has 2 clients" in found["jo_third"][1]
    assert found["ed_when_full"][0] == 503
    assert "too many live clients" in found["ed_when_full"][1]
    assert found["ed_after_one_left"] == 200


def test_live_client_that_stops_reading_is_dropped_and_its_seat_freed(
    surface_db: Database,
) -> None:
    config = limited(surface_db, send_timeout_seconds=1.0, max_live_clients_per_token=1)
    hub = LiveHub(queue_size=10_000)

    async def scenario() -> tuple[float, int, int]:
        import socket as socket_module

        async with serving(config, surface_db, live=hub) as (base, client):
            raw = socket_module.socket()
            # A tiny receive window, and never a read: the server's writes back up.
            raw.setsockopt(socket_module.SOL_SOCKET, socket_module.SO_RCVBUF, 4096)
            raw.setblocking(False)
            loop = asyncio.get_running_loop()
            await loop.sock_connect(raw, ("127.0.0.1", config.http.port))
            await loop.sock_sendall(
                raw, f"GET /live/sse/{LIVE} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            )
            for _ in range(200):
                if hub.subscribers(LIVE):
                    break
                await asyncio.sleep(0.01)
            started = time.monotonic()
            event = {"id": 0, "summary": "x" * 500, "topic": "t", "filter": "f"}
            sent = 0
            while hub.subscribers(LIVE) and time.monotonic() - started < 20:
                # New ids each time: a stream sends an id once.
                hub.publish(LIVE, [dict(event, id=sent + n) for n in range(200)])
                sent += 200
                await asyncio.sleep(0.02)
            dropped_after = time.monotonic() - started
            raw.close()
            # The seat is free again: the same token connects.
            async with client.get(f"{base}/live/sse/{LIVE}") as again:
                status = again.status
            return dropped_after, hub.subscribers(LIVE), status

    dropped_after, left, status = run(scenario)
    assert dropped_after < 15, "a client that stopped reading was never dropped"
    assert left == 0
    assert status == 200


JUNK_SINCE = [
    "²",
    "1" * 5000,
    "-1",
    "+1",
    " 1",
    "1 ",
    "",
    "0x10",
    "1.0",
    "١٢",  # Arabic-Indic digits: str.isdigit() says yes, a notification id says no
    str(2**63),
    "1e3",
]


def test_live_since_junk_is_400(surface_db: Database) -> None:
    config = http_config(surface_db)

    async def scenario() -> list[tuple[str, int, str]]:
        seen = []
        async with serving(config, surface_db) as (base, client):
            for value in JUNK_SINCE:
                for kind in ("ws", "sse"):
                    async with client.get(
                        f"{base}/live/{kind}/{LIVE}", params={"since": value}
                    ) as response:
                        seen.append(
                            (f"{kind} since={value[:10]!r}", response.status, await response.text())
                        )
                if value.strip() != value:
                    continue  # HTTP itself strips white space around a header's value
                async with client.get(
                    f"{base}/live/sse/{LIVE}", headers={"Last-Event-ID": value}
                ) as response:
                    seen.append(
                        (f"Last-Event-ID={value[:10]!r}", response.status, await response.text())
                    )
            # A good since still works.
            async with client.ws_connect(f"{base}/live/ws/{LIVE}?since=0") as socket:
                await socket.close()
        return seen

    seen = run(scenario)
    assert len(seen) == 3 * len(JUNK_SINCE) - 2
    for name, status, text in seen:
        assert status == 400, (name, status, text)
        assert "since" in text or "Last-Event-ID" in text, (name, text)
        assert "Traceback" not in text


# -- feeds ----------------------------------------------------------------------------

HOSTILE_TOPIC = "org.fedoraproject.prod.bodhi\x1b[31m.update\x07.comment\x01"


def test_feed_topic_with_control_characters_is_valid_xml(surface_db: Database) -> None:
    now = utcnow()
    with surface_db.begin() as session:
        jo = session.scalars(select(User).where(User.name == "jo")).one()
        hostile = add_message(
            session,
            {"topic": HOSTILE_TOPIC, "body": {"summary": "x"}, "headers": {}},
        )
        # A row written by something other than ingest, display columns raw.
        raw = StoredMessage(
            id=str(uuid.uuid4()),
            topic=HOSTILE_TOPIC,
            body={},
            headers={},
            summary="bell\x07 esc\x1b nul\x00 \ufffe end",
            url="javascript:alert(1)",
            app="b\x01odhi",
        )
        # A row stored before the display columns existed.
        legacy = StoredMessage(id=str(uuid.uuid4()), topic=HOSTILE_TOPIC, body={}, headers={})
        session.add_all([raw, legacy])
        session.flush()
        for minutes, message in enumerate((hostile, raw, legacy)):
            add_notification(
                session,
                jo,
                "rss",
                message,
                state="sent",
                sent_at=now - dt.timedelta(minutes=minutes),
                filter_name="f\x1bilter",
            )
        add_notification(session, jo, "rss", state="sent", sent_at=now - dt.timedelta(hours=1))
    config = http_config(surface_db)

    async def scenario() -> list[tuple[int, bytes]]:
        out = []
        async with serving(config, surface_db) as (base, client):
            for suffix in ("atom", "rss"):
                async with client.get(f"{base}/feeds/{FEED}.{suffix}") as response:
                    out.append((response.status, await response.read()))
        return out

    for status, body in run(scenario):
        assert status == 200
        parsed = feedparser.parse(body)
        assert not parsed.bozo, parsed.bozo_exception
        assert len(parsed.entries) == 4
        for control in ("\x1b", "\x07", "\x01", "\x00", "\ufffe"):
            assert control not in body.decode("utf-8")
        assert all("javascript:" not in e.get("link", "") for e in parsed.entries)
        assert any("bodhi" in e.title for e in parsed.entries)


# -- one-click unsubscribe ------------------------------------------------------------


def test_unsubscribe_post_without_one_click_body_refused(surface_db: Database) -> None:
    config = http_config(surface_db)
    token = Links.from_config(config).unsubscribe_token("jo", "email")

    async def scenario() -> list[int]:
        statuses = []
        async with serving(config, surface_db) as (base, client):
            for data in (None, "", "List-Unsubscribe=Yes", "one-click", b"\xff\xfe"):
                async with client.post(
                    f"{base}/unsubscribe/{token}",
                    data=data,
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                ) as response:
                    statuses.append(response.status)
                    assert "List-Unsubscribe=One-Click" in await response.text()
            assert email_enabled(surface_db, "jo")
            # What some mail clients send: multipart/form-data, as RFC 8058 allows.
            with aiohttp.MultipartWriter("form-data") as form:
                form.append("One-Click").set_content_disposition(
                    "form-data", name="List-Unsubscribe"
                )
            async with client.post(f"{base}/unsubscribe/{token}", data=form) as response:
                statuses.append(response.status)
        return statuses

    with surface_db.begin() as session:
        add_user(session, "jo", "email", ("jo@example.org",))
    assert run(scenario) == [400] * 5 + [200]
    assert not email_enabled(surface_db, "jo")


# -- memory of catch-ups --------------------------------------------------------------

BIG_MESSAGES = 6
BIG_BYTES = 4 * 1024 * 1024


@pytest.fixture
def statements(surface_db: Database) -> Iterator[list[str]]:
    """Every SQL statement the database runs while the test runs."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(surface_db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(surface_db.engine, "before_cursor_execute", record)


@pytest.mark.slow
def test_live_and_feed_catchups_memory_bounded(surface_db: Database, statements: list[str]) -> None:
    now = utcnow()
    with surface_db.begin() as session:
        jo = session.scalars(select(User).where(User.name == "jo")).one()
        for n in range(BIG_MESSAGES):
            body = {"summary": "big", "payload": "x" * BIG_BYTES, "n": n}
            message = add_message(
                session, {"topic": "org.fedoraproject.prod.big.x", "body": body, "headers": {}}
            )
            for context in ("live", "rss"):
                add_notification(
                    session,
                    jo,
                    context,
                    message,
                    state="sent",
                    sent_at=now - dt.timedelta(seconds=60 - n),
                )
    config = http_config(surface_db)
    statements.clear()

    async def scenario() -> tuple[list[int], int]:
        async with serving(config, surface_db) as (base, client):

            async def catch_up(index: int) -> int:
                if index % 2:
                    async with client.get(f"{base}/feeds/{FEED}.atom") as response:
                        assert len(feedparser.parse(await response.read()).entries) == 6
                        return response.status
                async with client.ws_connect(f"{base}/live/ws/{LIVE}?since=0") as socket:
                    events = [await socket.receive_json(timeout=10) for _ in range(BIG_MESSAGES)]
                    await socket.close()
                assert len(events) == BIG_MESSAGES
                return 200

            tracemalloc.start()
            try:
                statuses = await asyncio.gather(*(catch_up(i) for i in range(10)))
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        return list(statuses), peak

    statuses, peak = run(scenario)
    assert statuses == [200] * 10
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert reads, "the catch-ups read nothing"
    assert not [s for s in reads if "messages.body" in s], "a catch-up loaded message bodies"
    # Ten concurrent catch-ups of six 4 MiB messages: re-parsing bodies held 24+ MiB each.
    assert peak < 16 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
    print(
        f"\n[http] 10 concurrent catch-ups of {BIG_MESSAGES} x {BIG_BYTES >> 20} MiB messages: "
        f"peak traced memory {peak / 2**20:.1f} MiB"
    )
