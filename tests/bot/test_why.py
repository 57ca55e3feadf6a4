"""``fmn why``: the bot's explanation is the core's, in the core's words, in private."""

from __future__ import annotations

import datetime as dt
import time

import supybot.ircmsgs as ircmsgs
from sqlalchemy import select

from fmn_core import preferences
from fmn_core.expiry import expire_preferences
from fmn_core.models import Filter, Notification, Preference, User, utcnow
from fmn_core.wording import explanation_lines

from . import conftest


class TestWhy(conftest.FmnCase):
    def explained(self, message_id: str) -> list[str]:
        with self.database.begin() as session:
            found = preferences.explain(session, preferences.Actor("alice"), message_id)
        return explanation_lines(found)

    def test_why_a_message_came_and_why_another_did_not(self) -> None:
        self.assertNotError("fmn add-filter irc builds", private=True)
        self.assertNotError("fmn add-rule irc builds package_involved package=rnv", private=True)
        for package in ("glibc", "systemd", "python3"):
            self.assertNotError(f"fmn add-filter irc {package} builds", private=True)
            self.assertNotError(
                f'fmn add-rule irc "{package} builds" package_involved package={package}',
                private=True,
            )
        self.confirm_irc("alice", "alice_")
        (row,) = self.add_notifications("alice", ["rnv"])
        (sent,) = [r.message_id for r in self.outbox_rows([row])]
        (other,) = self.add_messages(["kernel"])

        reply = self.getMsg(f"fmn why {sent}")
        assert reply is not None
        # Private, whichever way it was asked.
        assert reply.args[0] == self.nick
        text = reply.args[1]
        lines = self.explained(sent)
        assert any(
            line.startswith("irc: notified by filter 'builds': pending since") for line in lines
        )
        assert text.startswith(" | ".join(lines)[:200])

        reply = self.getMsg(f"fmn why https://apps.fedoraproject.org/datagrepper/id?id={other}")
        assert reply is not None and reply.args[0] == self.nick
        words = self.explained(other)
        assert (
            "  filter 'builds': does not match: rule 1 `package_involved package=rnv` does not "
            "hold (packages: kernel)." in words
        )
        # Long answers are paged the way Limnoria pages every long reply.
        joined = " | ".join(words)
        assert len(joined) > 400
        assert reply.args[1].startswith(joined[:300])
        assert "more message" in reply.args[1]

    def test_why_refuses_what_it_cannot_explain(self) -> None:
        self.assertRegexp(
            "fmn why no-such-message", r"^Error: fmn has no message 'no-such-message'"
        )
        self.assertRegexp("fmn why", r"fmn why <message id>")


class TestActions(conftest.FmnCase):
    def notify(self, package: str) -> str:
        """A stored koschei message about ``package`` and alice's irc notification for it."""
        (message_id,) = self.add_messages([package])
        with self.database.begin() as session:
            user = session.scalars(select(User).where(User.name == "alice")).one()
            filter_id = session.scalars(
                select(Filter.id).join(Preference).where(Preference.user_id == user.id)
            ).one()
            session.add(
                Notification(
                    message_id=message_id,
                    user_id=user.id,
                    context="irc",
                    filter_id=filter_id,
                    filter_name="builds",
                    state="sent",
                )
            )
        return message_id

    def test_mute_a_package_from_a_notification_then_hear_when_it_ends(self) -> None:
        self.assertNotError("fmn add-filter irc builds", private=True)
        self.assertNotError("fmn add-rule irc builds app_is app=koschei", private=True)
        message_id = self.notify("rnv")
        self.assertRegexp(
            f"fmn mute-package {message_id}",
            r"^Done: `not package_involved package=rnv` added to filter 'builds' \(irc\)\.$",
            private=True,
        )
        self.assertRegexp(
            f"fmn mute-package {message_id}", r"is already in filter 'builds'", private=True
        )
        self.assertRegexp(
            f"fmn mute-package {message_id} kernel",
            r"^Error: The message is not about 'kernel'; choose one of: rnv\.",
            private=True,
        )
        self.assertRegexp(
            f"fmn pause-filter {message_id}",
            r"^Done: filter 'builds' \(irc\) paused until \d{4}-\d\d-\d\d",
            private=True,
        )
        self.assertRegexp("fmn show irc builds", r"2\. not package_involved package=rnv")
        # Nobody else's notification: bob has none for it.
        self.as_user("bob", "bob")
        self.assertRegexp(
            f"fmn mute-app {message_id}", r"^Error: You have no notification for the message"
        )
        # The pause ends: the next command alice sends brings the news, once, in private.
        self.as_user("alice", "alice")
        with self.database.begin() as session:
            assert expire_preferences(session, now=utcnow() + dt.timedelta(days=8)) == 1
        self.irc.feedMsg(
            ircmsgs.IrcMsg(
                prefix=self.prefix,
                command="PRIVMSG",
                args=(self.irc.nick, "fmn filters irc"),
                server_tags={"account": "alice"},
            )
        )
        notice = self.irc.takeMsg()
        deadline = 200
        while notice is None and deadline:
            deadline -= 1
            time.sleep(0.01)
            notice = self.irc.takeMsg()
        assert notice is not None
        assert notice.args[0] == "alice"  # in private, to the sender
        assert notice.args[1].startswith("fmn: Your filter 'builds' (irc) is on again")
        self.assertNotRegexp("fmn filters irc", r"is on again", private=True)

    def test_revoke_links(self) -> None:
        self.assertNotError("fmn add-filter irc builds", private=True)
        self.assertRegexp("fmn revoke-links", r"^Done: the links", private=True)
        with self.database.begin() as session:
            assert session.scalars(select(User.link_nonce).where(User.name == "alice")).one() == 1
