"""A feed's older entries, page by page (RFC 5005 archived feeds), read with a real client.

The subscription document holds the newest page and links to the next older one
(``prev-archive``); each archive page (``fh:archive``) links back to the feed
(``current``) and on to the next older page, down to the oldest row retention kept.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import feedparser
import pytest
from conftest import fresh_postgres_database  # tests/conftest.py (tests/ is on sys.path)
from core.test_outbox import add_notification, add_user

from daemon.test_http import http_config, run, serving, sqlite_database
from fmn_core.config import Config, HttpConfig
from fmn_core.db import Database, make_engine
from fmn_core.models import Base, User, utcnow
from fmn_core.retention import Pruning
from fmn_daemon.transports.feed import FEED_LIMIT

JO = "feed-token-jo-aaaaaaaaaaaaaaaa"
AL = "feed-token-al-bbbbbbbbbbbbbbbb"
ATOM = "{http://www.w3.org/2005/Atom}"
FH = "{http://purl.org/syndication/history/1.0}"


@contextlib.contextmanager
def feed_database(kind: str, tmp_path: Path) -> Iterator[Database]:
    """A database whose units commit for real (the server reads it from its threads)."""
    if kind == "sqlite":
        db = sqlite_database(tmp_path)
        try:
            yield db
        finally:
            db.engine.dispose()
        return
    with fresh_postgres_database("fmn_feed") as url:
        engine = make_engine(url)
        Base.metadata.create_all(engine)
        try:
            yield Database(Config(database_url=url, http=HttpConfig(secret_key="test-key")), engine)
        finally:
            engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with feed_database(request.param, tmp_path) as db:
        yield db


class Page:
    """One feed document as a reader sees it."""

    def __init__(self, body: bytes) -> None:
        parsed = feedparser.parse(body)
        assert not parsed.bozo, parsed.bozo_exception
        self.ids = [int(e.id.rpartition("#")[2]) for e in parsed.entries]
        root = ET.fromstring(body)
        head = root if root.tag == f"{ATOM}feed" else root.find("channel")
        assert head is not None
        self.links = {link.get("rel"): link.get("href") for link in head.findall(f"{ATOM}link")}
        self.archive = head.find(f"{FH}archive") is not None


def get(db: Database, paths: list[str]) -> list[tuple[int, bytes]]:
    config = http_config(db)

    async def scenario() -> list[tuple[int, bytes]]:
        answers = []
        async with serving(config, db) as (base, client):
            for path in paths:
                async with client.get(f"{base}{path}") as response:
                    answers.append((response.status, await response.read()))
        return answers

    result: list[tuple[int, bytes]] = run(scenario)
    return result


def walk(
    db: Database, kind: str, token: str, between: list[int] | None = None
) -> tuple[Page, list[Page]]:
    """The subscription document and every archive page its prev-archive links lead to.

    ``between`` (user id): a new row for that user arrives after each page is read.
    """
    config = http_config(db)
    prefix = f"http://127.0.0.1:{config.http.port}"

    async def scenario() -> tuple[Page, list[Page]]:
        async with serving(config, db) as (base, client):
            async with client.get(f"{base}/feeds/{token}.{kind}") as response:
                assert response.status == 200
                first = Page(await response.read())
            pages = []
            older = first.links.get("prev-archive")
            while older is not None:
                assert older.startswith(f"{prefix}/feeds/{token}.{kind}?before=")
                if between:
                    with db.begin() as session:
                        user = session.get(User, between[0])
                        assert user is not None
                        add_notification(session, user, "rss", state="sent", sent_at=utcnow())
                async with client.get(older) as response:
                    assert response.status == 200
                    page = Page(await response.read())
                pages.append(page)
                assert len(pages) < 20, "the archive links go round in a circle"
                older = page.links.get("prev-archive")
        return first, pages

    result: tuple[Page, list[Page]] = run(scenario)
    return result


def seed(db: Database, count: int) -> tuple[list[int], int]:
    """``count`` sent rows for jo, sent in an order unlike their ids, several at the same
    moment; rows of another user, of jo's other context and not sent yet, in between.
    Jo's rows, newest first, and jo's id."""
    start = utcnow() - dt.timedelta(hours=1)
    moments = [start + dt.timedelta(seconds=n // 3) for n in range(count)]
    random.Random(5005).shuffle(moments)
    with db.begin() as session:
        jo = add_user(session, "jo", "rss", (JO,))
        al = add_user(session, "al", "rss", (AL,))
        add_user(session, "jo", "live", ("live-token-jo-cccccccccccccccc",))
        rows = []
        for n, at in enumerate(moments):
            rows.append((at, add_notification(session, jo, "rss", state="sent", sent_at=at).id))
            add_notification(session, al, "rss", state="sent", sent_at=at)
            if n % 10 == 0:
                add_notification(session, jo, "live", state="sent", sent_at=at)
                add_notification(session, jo, "rss", next_attempt_at=at)  # pending
        jo_id = jo.id
    return [row for _, row in sorted(rows, reverse=True)], jo_id


@pytest.mark.parametrize("kind", ["atom", "rss"])
def test_feed_reader_following_prev_archive_gets_every_row_once_in_order(
    any_db: Database, kind: Literal["atom", "rss"]
) -> None:
    expected, jo_id = seed(any_db, 130)
    # New rows arrive while the reader walks back: the pages it reads do not shift.
    first, archive = walk(any_db, kind, JO, between=[jo_id])
    assert [len(first.ids)] + [len(p.ids) for p in archive] == [FEED_LIMIT, FEED_LIMIT, 30]
    assert first.ids + [i for p in archive for i in p.ids] == expected
    assert not first.archive and "current" not in first.links
    feed = first.links["self"]
    assert feed is not None and feed.endswith(f"/feeds/{JO}.{kind}")
    for page in archive:
        assert page.archive
        assert page.links["current"] == feed
        assert page.links["self"] != feed and "?before=" in (page.links["self"] or "")
    assert "prev-archive" not in archive[-1].links


def test_feed_pages_are_stable_and_bounded(any_db: Database) -> None:
    expected, jo_id = seed(any_db, 2 * FEED_LIMIT + 1)
    first, archive = walk(any_db, "atom", JO)
    older = first.links["prev-archive"]
    assert older is not None
    path = older.split("127.0.0.1", 1)[1].split("/", 1)[1]
    # A page read again after more rows arrived holds the same rows.
    with any_db.begin() as session:
        jo = session.get(User, jo_id)
        assert jo is not None
        for _ in range(5):
            add_notification(session, jo, "rss", state="sent", sent_at=utcnow())
    ((status, body),) = get(any_db, [f"/{path}"])
    assert status == 200 and Page(body).ids == archive[0].ids
    assert len(archive[0].ids) == FEED_LIMIT and archive[1].ids == expected[-1:]


def test_feed_cursor_reads_only_the_token_owners_rows(any_db: Database) -> None:
    expected, _ = seed(any_db, 70)
    al_first, _ = walk(any_db, "atom", AL)
    al_older = al_first.links["prev-archive"]
    assert al_older is not None
    cursor = al_older.rpartition("?before=")[2]
    # Al's place in send order, on jo's feed: jo's rows before it, never al's.
    ((status, body),) = get(any_db, [f"/feeds/{JO}.atom?before={cursor}"])
    assert status == 200
    ids = Page(body).ids
    # ``expected`` holds only jo's sent rss rows.
    assert ids and set(ids) <= set(expected)


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "abc",
        "12345",
        "-7",
        "12345-",
        "1-2-3",
        " 1-2",
        "1-2 ",
        "+1-2",
        "1-9223372036854775808",
        "1-99999999999999999999",
        "999999999999999999-1",
        "9999999999999999999-1",
        "\u00b2-1",
        "1-\u0661",
        pytest.param("x" * 5000, id="5000-characters"),
    ],
)
def test_feed_bad_cursor_is_refused_with_a_400(tmp_path: Path, cursor: str) -> None:
    db = sqlite_database(tmp_path)
    seed(db, 3)
    ((status, body),) = get(db, [f"/feeds/{JO}.atom?before={quote(cursor)}"])
    assert status == 400
    assert b"is not a feed page: follow the feed's prev-archive links" in body


def test_feed_unknown_token_with_a_cursor_is_not_found(tmp_path: Path) -> None:
    db = sqlite_database(tmp_path)
    seed(db, 3)
    answers = get(db, ["/feeds/no-such-token-cccccccccccc.atom?before=1-1"])
    assert [status for status, _ in answers] == [404]


def test_feed_cursor_keeps_working_after_retention_deleted_its_rows(any_db: Database) -> None:
    now = utcnow()
    with any_db.begin() as session:
        jo = add_user(session, "jo", "rss", (JO,))
        recent = []
        for n in range(100):
            # The oldest 70 were sent 40 days ago; the newest 30 within the hour.
            at = now - (dt.timedelta(days=40, seconds=-n) if n < 70 else dt.timedelta(seconds=n))
            row = add_notification(session, jo, "rss", state="sent", sent_at=at, next_attempt_at=at)
            if n >= 70:
                recent.append((at, row.id))
    first, archive = walk(any_db, "atom", JO)
    assert len(first.ids) == FEED_LIMIT and [len(p.ids) for p in archive] == [FEED_LIMIT]
    stale = first.links["prev-archive"]
    assert stale is not None
    pruning = Pruning(now - dt.timedelta(days=30), 1000, codes_counted_for=dt.timedelta(0))
    while True:
        with any_db.begin() as session:
            if not pruning.step(session):
                break
    assert pruning.done.notifications == 70
    path = stale.split("127.0.0.1", 1)[1].split("/", 1)[1]
    (feed, page) = get(any_db, [f"/feeds/{JO}.atom", f"/{path}"])
    assert feed[0] == 200 and page[0] == 200
    now_first = Page(feed[1])
    kept = [row for _, row in sorted(recent, reverse=True)]
    assert now_first.ids == kept and "prev-archive" not in now_first.links
    # The page the stale cursor names is what retention left of it (nothing), with no
    # link on: the reader knows it reached the end.
    ended = Page(page[1])
    assert ended.archive and "prev-archive" not in ended.links and ended.ids == []
