"""Feeds' reads: whose a token is, and a user's sent rows (display columns only)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from core.test_outbox import BODHI_SUMMARY, add_message, add_notification, add_user
from fmn_core import feeds, preferences
from fmn_core.actions import check_claim
from fmn_core.db import Database
from fmn_core.errors import ActionLinkRefused, InvalidArgument
from fmn_core.models import User, utcnow
from fmn_core.preferences import Actor
from fmn_core.rendering import ActionClaim


def test_owner_of_address_needs_a_confirmed_destination_of_that_context(db: Database) -> None:
    with db.begin() as session:
        jo = add_user(session, "jo", "rss", ("tok-confirmed-aaaaaaaaaaaa",))
        add_user(session, "al", "rss", ("tok-unconfirmed-bbbbbbbbbb",), confirmed=False)
        jo_id = jo.id
    with db.begin() as session:
        assert feeds.owner_of_address(session, "rss", "tok-confirmed-aaaaaaaaaaaa") == (
            jo_id,
            "jo",
        )
        assert feeds.owner_of_address(session, "live", "tok-confirmed-aaaaaaaaaaaa") is None
        assert feeds.owner_of_address(session, "rss", "tok-unconfirmed-bbbbbbbbbb") is None
        assert feeds.owner_of_address(session, "rss", "") is None


def test_sent_entries_lists_a_users_sent_rows_newest_first(db: Database) -> None:
    now = utcnow()
    with db.begin() as session:
        jo = add_user(session, "jo", "rss", ("tok",))
        al = add_user(session, "al", "rss", ("tok2",))
        first = add_notification(
            session, jo, "rss", state="sent", sent_at=now - dt.timedelta(minutes=2)
        ).id
        second = add_notification(
            session, jo, "rss", state="sent", sent_at=now - dt.timedelta(minutes=1)
        ).id
        add_notification(session, jo, "rss")
        add_notification(session, al, "rss", state="sent", sent_at=now)
        jo_id = jo.id
    with db.begin() as session:
        entries = feeds.sent_entries(session, jo_id, "rss", limit=10)
    assert [e.id for e in entries] == [second, first]
    assert entries[0].summary == BODHI_SUMMARY and entries[0].app == "bodhi"


def test_sent_page_reads_older_pages_from_a_cursor_in_send_order(db: Database) -> None:
    now = utcnow()
    with db.begin() as session:
        jo = add_user(session, "jo", "rss", ("tok",))
        al = add_user(session, "al", "rss", ("tok2",))
        # Ids unlike the send order, and pairs sent at the same moment.
        moments = [now - dt.timedelta(seconds=(n * 7 % 11) // 2) for n in range(11)]
        rows = [
            (at, add_notification(session, jo, "rss", state="sent", sent_at=at).id)
            for at in moments
        ]
        for at in moments:
            add_notification(session, al, "rss", state="sent", sent_at=at)
            add_notification(session, jo, "live", state="sent", sent_at=at)
        jo_id = jo.id
    expected = [row for _, row in sorted(rows, reverse=True)]
    read: list[int] = []
    before: feeds.Position | None = None
    with db.begin() as session:
        for _ in range(5):
            entries, older = feeds.sent_page(session, jo_id, "rss", before=before, limit=4)
            read += [e.id for e in entries]
            if older is None:
                break
            # Through the URL's form and back, as a reader's next request brings it.
            before = feeds.parse_feed_cursor(feeds.feed_cursor(older))
    assert read == expected
    with db.begin() as session:
        assert (
            feeds.sent_entries(session, jo_id, "rss", limit=4)
            == feeds.sent_page(session, jo_id, "rss", limit=4)[0]
        )


@pytest.mark.parametrize(
    "text", ["", "1", "1-", "-1", "a-1", "1-a", "1--2", "\u00b2-1", "1-9223372036854775808"]
)
def test_parse_feed_cursor_refuses_what_feed_cursor_does_not_make(text: str) -> None:
    with pytest.raises(InvalidArgument, match="is not a feed page"):
        feeds.parse_feed_cursor(text)


def test_feed_cursor_round_trips_any_moment() -> None:
    for at in (
        dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
        dt.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=dt.UTC),
        dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
    ):
        assert feeds.parse_feed_cursor(feeds.feed_cursor((at, 7))) == (at, 7)


def test_check_claim_refuses_a_feed_link_once_its_token_is_removed(db: Database) -> None:
    with db.begin() as session:
        preferences.add_filter(session, Actor("jo"), "rss", "updates")
        made = preferences.set_destination(session, Actor("jo"), "rss", None).destination
        user = session.scalars(select(User).where(User.name == "jo")).one()
        message = add_message(session)
        add_notification(
            session, user, "rss", message, state="sent", sent_at=utcnow(), filter_name="updates"
        )
        message_id = message.id
    expires = utcnow() + dt.timedelta(days=1)
    via_feed = ActionClaim(
        "jo", "rss", message_id, "mute-app", expires, 0, feeds.token_fingerprint(made.address)
    )
    unbound = ActionClaim("jo", "rss", message_id, "mute-app", expires, 0)
    with db.begin() as session:
        assert check_claim(session, via_feed) == Actor("jo")
        preferences.remove_destination(session, Actor("jo"), "rss", made.id)
    with db.begin() as session:
        with pytest.raises(ActionLinkRefused, match="feed whose address you have since removed"):
            check_claim(session, via_feed)
        # A link no feed carried (a mail's) is not tied to any token.
        assert check_claim(session, unbound) == Actor("jo")


def test_token_fingerprint_does_not_show_the_token() -> None:
    token = "tok-confirmed-aaaaaaaaaaaa"
    assert token not in feeds.token_fingerprint(token)
    assert feeds.token_fingerprint(token) != feeds.token_fingerprint(token + "b")
