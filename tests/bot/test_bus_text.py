"""What a bus message says, in the bot's replies: on one line, no IRC or terminal codes.

A koschei message's summary names its package and its collection. Here the package
name carries IRC colour and format codes (colour 01,01 hides text), a terminal
escape and a NUL, and the collection a lone surrogate (which SQLite's JSON keeps);
the commands are typed the way users type them.
"""

from __future__ import annotations

import unicodedata
import uuid

from sqlalchemy import select

from fmn_core.models import Notification, StoredMessage, User, utcnow

from . import conftest

#: The package name and the collection as the bus sent them.
PACKAGE = "rnv\x0301,01hidden\x0f\x02bold\x02\x1b]0;PWNED\x07\x00nul"
COLLECTION = "f25\ud800x"
#: The summary as a reply should show it.
SHOWN = "rnv 01,01hidden bold ]0;PWNED nul's builds are back to normal in f25 x"


def assert_shown_clean(text: str) -> None:
    """``text`` holds no control, format or surrogate character, and UTF-8 can carry it."""
    text.encode("utf-8")
    unsafe = [c for c in text if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")]
    assert unsafe == [], (text, unsafe)


class TestBusTextInReplies(conftest.FmnCase):
    def store_notification(self) -> str:
        """The hostile koschei message, and alice's irc notification for it; its id."""
        message_id = str(uuid.uuid4())
        body = {**conftest.koschei_body(PACKAGE), "collection": COLLECTION}
        with self.database.begin() as session:
            session.add(
                StoredMessage(id=message_id, topic=conftest.KOSCHEI_TOPIC, body=body, headers={})
            )
            alice = session.scalars(select(User).where(User.name == "alice")).one()
            session.add(
                Notification(
                    message_id=message_id,
                    user_id=alice.id,
                    context="irc",
                    filter_name="builds",
                    state="sent",
                    sent_at=utcnow(),
                )
            )
        return message_id

    def test_recent_why_and_preview_show_the_message_cleaned(self) -> None:
        self.assertNotError("fmn add-filter irc builds", private=True)
        self.assertNotError("fmn add-rule irc builds app_is app=koschei", private=True)
        message_id = self.store_notification()

        recent = self.assertNotError("fmn recent").args[1]
        assert f"irc: {SHOWN}" in recent, recent
        assert_shown_clean(recent)

        why = self.getMsg(f"fmn why {message_id}")
        assert why is not None
        assert why.args[1].startswith(f"Message {message_id} ("), why.args[1]
        assert f"): {SHOWN} | " in why.args[1], why.args[1]
        assert_shown_clean(why.args[1])

        preview = self.assertNotError("fmn preview irc builds").args[1]
        assert SHOWN in preview, preview
        assert_shown_clean(preview)
