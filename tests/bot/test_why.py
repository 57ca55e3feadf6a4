"""``fmn why``: the bot's explanation is the core's, in the core's words, in private."""

from __future__ import annotations

from fmn_core import preferences
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
        assert "irc: notified by filter 'builds': pending since" in lines[2]
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
