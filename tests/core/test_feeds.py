"""Feeds' reads: whose a token is, and a user's sent rows (display columns only)."""

from __future__ import annotations

import datetime as dt

from core.test_outbox import BODHI_SUMMARY, add_notification, add_user
from fmn_core import feeds
from fmn_core.db import Database
from fmn_core.models import utcnow


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
