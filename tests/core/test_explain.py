"""Why a user did or did not get a message (fmn_core.explain), as people are shown it.

``tests/daemon/test_explain.py`` checks the verdicts against the matcher and the
outbox; here, the message's own text in an explanation: it reaches the bot's
``fmn why``, the TUI and the operator's ``fmn-daemon explain`` as the explanation
gives it, so the explanation cleans it.
"""

from __future__ import annotations

import json

from sqlalchemy import select

from fmn_core import preferences
from fmn_core.db import Database
from fmn_core.explain import explain
from fmn_core.models import Notification, User, utcnow
from fmn_core.preferences import Actor
from fmn_core.wording import explanation_lines

from .hostile import (
    SHOWN_AGENT,
    SHOWN_TOPIC,
    assert_shown_clean,
    store_hostile_message,
    strings_in,
)

ALICE = Actor("alice")


def test_explain_shows_the_messages_text_cleaned(db: Database, corpus: list[str]) -> None:
    hostile = store_hostile_message(db, corpus)
    with db.begin() as session:
        # A filter that does not match: its verdict quotes the users it looked at.
        preferences.add_filter(session, ALICE, "email", "someone else's")
        preferences.add_rule(
            session, ALICE, "email", "someone else's", "user_involved", {"username": "bob"}
        )
        preferences.add_filter(session, ALICE, "irc", "prs")
        alice = session.scalars(select(User).where(User.name == "alice")).one()
        session.add(
            Notification(
                message_id=hostile.id,
                user_id=alice.id,
                context="irc",
                filter_name="prs",
                state="sent",
                sent_at=utcnow(),
            )
        )
    with db.begin() as session:
        explanation = explain(session, ALICE, hostile.id)
    assert explanation.summary == hostile.shown_summary
    assert explanation.topic == SHOWN_TOPIC
    assert explanation.facts["topic"] == (SHOWN_TOPIC,)
    assert explanation.facts["agent"] == (SHOWN_AGENT,)
    assert SHOWN_AGENT in explanation.facts["users"]
    assert explanation.facts["summary"] == (hostile.shown_summary,)
    (email,) = [c for c in explanation.contexts if c.context == "email"]
    assert email.outcome == "no-match"
    assert email.filters[0].rules[0].facts == f"users: zbyszek, {SHOWN_AGENT}"
    for text in strings_in(explanation):
        assert_shown_clean(text)
    # What the bot, the TUI and the CLI print, and the CLI's --json.
    lines = explanation_lines(explanation)
    assert lines[0] == f"Message {hostile.id} ({SHOWN_TOPIC}): {hostile.shown_summary}"
    for line in lines:
        assert_shown_clean(line)
    json.dumps(explanation.as_json(), ensure_ascii=False).encode("utf-8")
