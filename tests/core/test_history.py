"""What a filter would have matched and what a user was sent (fmn_core.history), as shown.

The views' topics and summaries come from the bus: they reach the bot's replies,
the TUI and the gateway's wire as the views give them, so the views clean them.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from fmn_core import preferences
from fmn_core.db import Database
from fmn_core.models import Notification, User, utcnow
from fmn_core.preferences import Actor

from .hostile import SHOWN_TOPIC, assert_shown_clean, store_hostile_message, strings_in

ALICE = Actor("alice")


def test_preview_shows_the_messages_text_cleaned(db: Database, corpus: list[str]) -> None:
    hostile = store_hostile_message(db, corpus)
    with db.begin() as session:
        preferences.add_filter(session, ALICE, "email", "prs")
        preferences.add_rule(session, ALICE, "email", "prs", "app_is", {"app": "pagure"})
    with db.begin() as session:
        hits = preferences.preview(session, ALICE, "email", "prs")
    assert [hit.message_id for hit in hits] == [hostile.id]
    assert hits[0].summary == hostile.shown_summary
    assert hits[0].topic == SHOWN_TOPIC
    for text in strings_in(hits):
        assert_shown_clean(text)


def test_recent_notifications_show_the_messages_text_cleaned(
    db: Database, corpus: list[str]
) -> None:
    hostile = store_hostile_message(db, corpus)
    with db.begin() as session:
        preferences.add_filter(session, ALICE, "irc", "prs")
        alice = session.scalars(select(User).where(User.name == "alice")).one()
        for number, state in enumerate(("sent", "pending")):
            session.add(
                Notification(
                    message_id=hostile.id,
                    user_id=alice.id,
                    context=("irc", "email")[number],
                    filter_name="prs",
                    state=state,
                    created_at=utcnow() + dt.timedelta(seconds=number),
                    sent_at=utcnow() if state == "sent" else None,
                )
            )
    with db.begin() as session:
        views = preferences.recent_notifications(session, ALICE)
    assert [(v.context, v.state) for v in views] == [("email", "pending"), ("irc", "sent")]
    for view in views:
        assert view.summary == hostile.shown_summary
        assert view.topic == SHOWN_TOPIC
    for text in strings_in(views):
        assert_shown_clean(text)
