"""Per-user Atom/RSS feeds behind a secret token, read with a real client and feedparser."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import feedparser
import pytest
from core.test_outbox import BODHI_SUMMARY, add_message, add_notification, add_user

from daemon.test_http import http_config, run, serving, sqlite_database
from fmn_core.db import Database
from fmn_core.models import utcnow
from fmn_daemon.transports import TransportRefused
from fmn_daemon.transports.feed import FEED_LIMIT, FeedTransport

TOKEN = "feed-token-jo-aaaaaaaaaaaaaaaa"


@pytest.fixture
def feed_db(tmp_path: Path) -> Database:
    db = sqlite_database(tmp_path)
    now = utcnow()
    with db.begin() as session:
        jo = add_user(session, "jo", "rss", (TOKEN,))
        al = add_user(session, "al", "rss", ("feed-token-al-bbbbbbbbbbbbbbbb",))
        for minutes, summary_topic in [
            (3, None),
            (2, "org.fedoraproject.prod.mystery.event"),
            (1, None),
        ]:
            message = (
                add_message(session, {"topic": summary_topic, "body": {}, "headers": {}})
                if summary_topic
                else add_message(session)
            )
            add_notification(
                session,
                jo,
                "rss",
                message,
                state="sent",
                sent_at=now - dt.timedelta(minutes=minutes),
            )
        add_notification(session, jo, "rss")  # not sent yet: not in the feed
        add_notification(session, al, "rss", state="sent", sent_at=now, filter_name="al's")
    return db


def fetch(db: Database, path: str) -> tuple[int, str, bytes]:
    config = http_config(db)

    async def scenario() -> tuple[int, str, bytes]:
        async with serving(config, db) as (base, client), client.get(f"{base}{path}") as response:
            return (
                response.status,
                response.headers.get("Content-Type", ""),
                await response.read(),
            )

    result: tuple[int, str, bytes] = run(scenario)
    return result


def test_feed_atom_lists_the_users_sent_notifications_newest_first(feed_db: Database) -> None:
    status, content_type, body = fetch(feed_db, f"/feeds/{TOKEN}.atom")
    assert status == 200
    assert content_type.startswith("application/atom+xml")
    parsed = feedparser.parse(body)
    assert not parsed.bozo, parsed.bozo_exception
    assert parsed.version == "atom10"
    assert "jo" in parsed.feed.title
    titles = [e.title for e in parsed.entries]
    assert titles == [
        f"[bodhi] {BODHI_SUMMARY}",
        "[mystery] org.fedoraproject.prod.mystery.event",
        f"[bodhi] {BODHI_SUMMARY}",
    ]
    assert (
        parsed.entries[0].link == "https://bodhi.fedoraproject.org/overrides/libxcrypt-4.4.4-2.fc28"
    )
    assert all("al's" not in (e.get("summary") or "") for e in parsed.entries)


def test_feed_rss_has_the_same_entries(feed_db: Database) -> None:
    status, content_type, body = fetch(feed_db, f"/feeds/{TOKEN}.rss")
    assert status == 200 and content_type.startswith("application/rss+xml")
    parsed = feedparser.parse(body)
    assert not parsed.bozo, parsed.bozo_exception
    assert parsed.version.startswith("rss")
    assert len(parsed.entries) == 3
    assert "my packages" in parsed.entries[0].summary


def test_feed_unknown_token_or_format_is_not_found(feed_db: Database) -> None:
    assert fetch(feed_db, "/feeds/no-such-token-cccccccccccc.atom")[0] == 404
    assert fetch(feed_db, f"/feeds/{TOKEN}.xml")[0] == 404
    assert fetch(feed_db, f"/feeds/{TOKEN}")[0] == 404


def test_feed_shows_the_newest_fifty(tmp_path: Path) -> None:
    db = sqlite_database(tmp_path)
    now = utcnow()
    with db.begin() as session:
        jo = add_user(session, "jo", "rss", (TOKEN,))
        for n in range(FEED_LIMIT + 5):
            add_notification(
                session,
                jo,
                "rss",
                state="sent",
                filter_name=f"f{n}",
                sent_at=now - dt.timedelta(seconds=100 - n),
            )
    parsed = feedparser.parse(fetch(db, f"/feeds/{TOKEN}.atom")[2])
    assert len(parsed.entries) == FEED_LIMIT
    assert f"'f{FEED_LIMIT + 4}'" in parsed.entries[0].summary


def test_feed_transport_accepts_only_feed_tokens() -> None:
    import asyncio

    from core.test_rendering import claimed

    from fmn_core.rendering import render

    asyncio.run(FeedTransport().send(TOKEN, render(claimed(context="rss"))))
    with pytest.raises(TransportRefused):
        asyncio.run(FeedTransport().send("not a token", render(claimed(context="rss"))))
