"""Delivering the irc context: outbox rows become private messages to the confirmed nick.

Rounds run against the real outbox on a real database and through the plugin's
real IRC link; the test plays the IRC server's part (answering ISON).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING

import pytest
import supybot.conf as conf
import supybot.ircmsgs as ircmsgs

from fmn_bot.delivery import MAX_LINE_BYTES, Pacer, RoundReport, notification_line
from fmn_bot.irc_link import IrcLink
from fmn_core import outbox, preferences
from fmn_core.models import NotificationState, utcnow

from . import conftest

SENT = NotificationState.SENT.value
DEAD = NotificationState.DEAD.value
PENDING = NotificationState.PENDING.value
FAILED = NotificationState.FAILED.value

# The harness's base class for type checking only: at run time the cases are
# mixins (see the classes below).
if TYPE_CHECKING:
    _Cases = conftest.FmnCase
else:
    _Cases = object


class DeliveryCases(_Cases):
    """What a delivery round does with a user's rows (run on both databases)."""

    fmn_toml = "[bot]\nlines_per_second = 200.0\nburst = 3\noffline_hold_minutes = 30\n"

    def setUp(self) -> None:
        super().setUp()
        self.confirm_irc("alice", "alice_")

    def test_notification_reaches_the_confirmed_nick_in_private(self) -> None:
        [row] = self.add_notifications("alice", ["rnv"])
        report, sent = self.deliver_round(online=["alice_"])
        [line] = sent
        assert line.command == "PRIVMSG" and line.args[0] == "alice_"
        assert "rnv's builds are back to normal in f25" in line.args[1]
        assert "https://koschei.fedoraproject.org/package/rnv" in line.args[1]
        assert line.args[1].endswith("(builds)")
        assert (report.sent, report.lines) == (1, 1)
        [stored] = self.outbox_rows([row])
        assert stored.state == SENT and stored.sent_at is not None
        # Nothing is sent twice.
        assert self.deliver_round(online=["alice_"])[1] == []

    def test_offline_user_keeps_notifications_until_back(self) -> None:
        ids = self.add_notifications("alice", ["rnv", "kernel"])
        report, sent = self.deliver_round(online=["somebody_else"])
        assert sent == [] and report.postponed == 2
        for row in self.outbox_rows(ids):
            assert row.state == PENDING and row.next_attempt_at > utcnow()
            assert row.last_error and "not online" in row.last_error
        # Not due yet: the next poll doesn't even ask the server.
        assert self.deliver_round(online=["alice_"])[1] == []
        later = utcnow() + dt.timedelta(minutes=2)
        report, sent = self.deliver_round(online=["alice_"], now=later)
        assert [m.args[0] for m in sent] == ["alice_", "alice_"]
        assert {r.state for r in self.outbox_rows(ids)} == {SENT}

    def test_offline_past_the_hold_goes_dead_with_a_reason(self) -> None:
        start = utcnow()
        old = self.add_notifications("alice", ["rnv"], age=dt.timedelta(minutes=5))
        report, sent = self.deliver_round(online=[], now=start)
        assert sent == [] and report.postponed == 1
        # Made 25 minutes later: found offline later, it waits longer.
        new = self.add_notifications("alice", ["kernel"], age=dt.timedelta(minutes=-25))
        report, sent = self.deliver_round(online=[], now=start + dt.timedelta(minutes=30))
        assert sent == [] and report.dead == 1 and report.postponed == 1
        [dead] = self.outbox_rows(old)
        assert dead.state == DEAD and "not online for 30 minutes" in (dead.last_error or "")
        assert self.outbox_rows(new)[0].state == PENDING

    def test_offline_hold_counts_from_the_first_offline_look_up_not_the_digest(self) -> None:
        # A 60-minute digest: its oldest rows are an hour old when it is due, twice
        # the 30 minutes an offline nick is waited for.
        self.assertNotError("fmn digest irc 60")
        start = utcnow()
        ids = self.add_notifications("alice", ["rnv", "kernel"], age=dt.timedelta(minutes=61))
        report, sent = self.deliver_round(online=[], now=start)
        assert sent == [] and report.dead == 0 and report.postponed == 2
        for row in self.outbox_rows(ids):
            assert row.state == PENDING and row.hold_reason == "offline"
        later = start + dt.timedelta(minutes=29)
        report, sent = self.deliver_round(online=[], now=later)
        assert sent == [] and report.dead == 0 and report.postponed == 2
        report, sent = self.deliver_round(online=[], now=start + dt.timedelta(minutes=30))
        assert sent == [] and report.dead == 2
        for row in self.outbox_rows(ids):
            assert row.state == DEAD and "not online for 30 minutes" in (row.last_error or "")

    def test_offline_hold_starts_again_after_another_hold(self) -> None:
        ids = self.add_notifications("alice", ["rnv"])
        start = utcnow()
        assert self.deliver_round(online=[], now=start)[0].postponed == 1
        # Muted by the 20th minute offline, unmuted after it: the mute's hold ended
        # the offline wait, and the next one has its own 30 minutes.
        with self.database.begin() as session:
            preferences.mute(session, preferences.Actor("alice"), dt.timedelta(hours=5))
        report, _sent = self.deliver_round(online=[], now=start + dt.timedelta(minutes=20))
        assert report.postponed == 1 and self.outbox_rows(ids)[0].hold_reason == "muted"
        with self.database.begin() as session:
            preferences.unmute(session, preferences.Actor("alice"))
        report, _sent = self.deliver_round(online=[], now=start + dt.timedelta(minutes=35))
        assert report.postponed == 1 and report.dead == 0
        report, _sent = self.deliver_round(online=[], now=start + dt.timedelta(minutes=64))
        assert report.postponed == 1 and report.dead == 0
        report, _sent = self.deliver_round(online=[], now=start + dt.timedelta(minutes=65))
        assert report.dead == 1 and self.outbox_rows(ids)[0].state == DEAD

    def test_muted_user_is_held_and_unmute_releases_soon(self) -> None:
        ids = self.add_notifications("alice", ["rnv"])
        with self.database.begin() as session:
            preferences.mute(session, preferences.Actor("alice"), dt.timedelta(hours=5))
        report, sent = self.deliver_round(online=["alice_"])
        assert sent == [] and report.postponed == 1
        [row] = self.outbox_rows(ids)
        assert row.state == PENDING and "muted" in (row.last_error or "")
        # Held rows are looked at again within a minute, not only when the mute ends.
        assert row.next_attempt_at <= utcnow() + dt.timedelta(seconds=61)
        self.assertResponse("fmn unmute", "Unmuted.")
        report, sent = self.deliver_round(online=["alice_"], now=utcnow() + dt.timedelta(minutes=2))
        assert len(sent) == 1 and report.sent == 1

    def test_burst_above_the_limit_collapses_into_one_line(self) -> None:
        ids = self.add_notifications("alice", [f"pkg{i}" for i in range(8)])
        report, sent = self.deliver_round(online=["alice_"])
        texts = [m.args[1] for m in sent]
        assert len(texts) == 3  # burst = 3: two notifications and the summary
        assert "pkg0's builds" in texts[0] and "pkg1's builds" in texts[1]
        assert texts[2] == "6 more notifications: Koschei (6); 'fmn recent' lists them"
        assert report.sent == 8 and report.lines == 3
        assert {r.state for r in self.outbox_rows(ids)} == {SENT}

    def test_turned_off_context_drops_rows_with_the_reason(self) -> None:
        ids = self.add_notifications("alice", ["rnv"])
        self.assertNotError("fmn disable irc")
        report, sent = self.deliver_round(online=["alice_"])
        assert sent == [] and report.dead == 1
        [row] = self.outbox_rows(ids)
        assert row.state == DEAD and "turned off" in (row.last_error or "")

    def test_user_without_a_confirmed_nick_is_retried_later(self) -> None:
        with self.database.begin() as session:
            preferences.add_filter(session, preferences.Actor("bob"), "irc", "builds")
        ids = self.add_notifications("bob", ["rnv"])
        report, sent = self.deliver_round(online=["bob"])
        assert sent == [] and report.failed == 1
        [row] = self.outbox_rows(ids)
        assert row.state == FAILED and "no confirmed IRC nick" in (row.last_error or "")
        assert row.next_attempt_at > utcnow() + dt.timedelta(minutes=29)  # an hour, jittered

    def test_nick_held_by_another_account_gets_nothing(self) -> None:
        ids = self.add_notifications("alice", ["rnv"])
        self.join("alice_", "impostor.example")  # account-notify comes through a shared channel
        self.irc.feedMsg(
            ircmsgs.IrcMsg(prefix="alice_!x@impostor.example", command="ACCOUNT", args=("mallory",))
        )
        report, sent = self.deliver_round(online=["alice_"])
        assert sent == [] and report.postponed == 1
        self.irc.feedMsg(
            ircmsgs.IrcMsg(prefix="alice_!x@users.example.org", command="ACCOUNT", args=("alice",))
        )
        report, sent = self.deliver_round(online=["alice_"], now=utcnow() + dt.timedelta(minutes=2))
        assert len(sent) == 1
        assert self.outbox_rows(ids)[0].state == SENT

    def test_digest_waits_for_its_count_then_sends_one_line(self) -> None:
        self.assertNotError("fmn digest irc 600 3")
        first = self.add_notifications("alice", ["rnv", "kernel"])
        report, sent = self.deliver_round(online=["alice_"])
        assert sent == [] and report.postponed == 2
        third = self.add_notifications("alice", ["glibc"])
        report, sent = self.deliver_round(online=["alice_"])
        [line] = sent
        assert line.args[1].startswith("Digest: 3 notifications, Koschei (3): [Koschei] ")
        assert "rnv's builds" in line.args[1]
        assert report.sent == 3
        assert {r.state for r in self.outbox_rows(first + third)} == {SENT}

    def test_digest_is_due_after_its_minutes(self) -> None:
        self.assertNotError("fmn digest irc 10")
        ids = self.add_notifications("alice", ["rnv", "kernel"], age=dt.timedelta(minutes=11))
        report, sent = self.deliver_round(online=["alice_"])
        assert [m.args[1][:35] for m in sent] == ["Digest: 2 notifications, Koschei (2"]
        assert report.sent == 2
        assert {r.state for r in self.outbox_rows(ids)} == {SENT}

    def test_rows_of_a_crashed_bot_are_delivered_after_their_lease(self) -> None:
        ids = self.add_notifications("alice", ["rnv"])
        with self.database.begin() as session:
            outbox.claim_due(
                session, worker="crashed-bot", contexts=["irc"], limit=10, lease_seconds=60
            )
        assert self.deliver_round(online=["alice_"])[1] == []
        _report, sent = self.deliver_round(
            online=["alice_"], now=utcnow() + dt.timedelta(minutes=2)
        )
        assert len(sent) == 1 and self.outbox_rows(ids)[0].state == SENT

    def test_without_a_connection_rows_are_given_back(self) -> None:
        ids = self.add_notifications("alice", ["rnv"])
        conf.supybot.plugins.Fmn.network.setValue("not-connected")
        report, sent = self.deliver_round(online=["alice_"])
        assert sent == [] and report.released == 1
        [row] = self.outbox_rows(ids)
        assert row.state == PENDING and row.claimed_by is None
        conf.supybot.plugins.Fmn.network.setValue("test")
        assert len(self.deliver_round(online=["alice_"])[1]) == 1

    def _take_over(self, moment: dt.datetime) -> None:
        """This bot's claim (made at ``moment``) has run out: another sender claims the
        rows and sends them."""
        lease = self.plugin.delivery.config.delivery.claim_lease_seconds
        with self.database.begin() as session:
            taken = outbox.claim_due(
                session,
                worker="fmn-bot:elsewhere:1",
                contexts=["irc"],
                limit=10,
                lease_seconds=lease,
                now=moment + dt.timedelta(seconds=lease + 1),
            )
            assert taken, "the bot's claim did not run out"
            outbox.mark_sent(session, [r.id for r in taken])

    def _taken_over_while_looking_up(self, moment: dt.datetime, *, refuse: bool = False) -> None:
        """While this bot waits for ISON its claim runs out, and another sender claims
        the rows and sends them; ``refuse``: the connection then refuses the bot's line."""
        sender = self.plugin.delivery
        real: IrcLink = sender.link
        take_over = self._take_over

        class LateLink:
            def __getattr__(self, name: str) -> object:
                return getattr(real, name)

            def online(self, nicks: list[str]) -> frozenset[str] | None:
                take_over(moment)
                return real.online(nicks)

            def send(self, nick: str, line: str) -> bool:
                return False if refuse else real.send(nick, line)

        sender.link = LateLink()
        self.addCleanup(setattr, sender, "link", real)

    def test_a_late_bot_does_not_undo_a_send_by_the_rows_new_holder(self) -> None:
        ids = self.add_notifications("alice", ["rnv"])
        moment = utcnow()
        self._taken_over_while_looking_up(moment)
        report, sent = self.deliver_round(online=[], now=moment)
        assert sent == [] and report.postponed == 0
        [row] = self.outbox_rows(ids)
        # Back to pending, it would have gone out once more when the nick came back.
        assert row.state == SENT and row.hold_reason is None and row.last_error is None

    def test_a_late_bot_does_not_kill_a_row_its_new_holder_sent(self) -> None:
        ids = self.add_notifications("alice", ["rnv"])
        start = utcnow()
        assert self.deliver_round(online=[], now=start)[0].postponed == 1
        moment = start + dt.timedelta(minutes=31)
        self._taken_over_while_looking_up(moment)
        report, sent = self.deliver_round(online=[], now=moment)
        assert sent == [] and report.dead == 0
        [row] = self.outbox_rows(ids)
        assert row.state == SENT and row.attempts == 0 and row.last_error is None

    def test_a_late_bot_whose_line_is_refused_leaves_the_new_holders_send(self) -> None:
        ids = self.add_notifications("alice", ["rnv"])
        moment = utcnow()
        self._taken_over_while_looking_up(moment, refuse=True)
        report, _sent = self.deliver_round(online=["alice_"], now=moment)
        assert report.sent == 0 and report.postponed == 0
        [row] = self.outbox_rows(ids)
        assert row.state == SENT and row.last_error is None

    def test_a_late_bot_does_not_hold_a_muted_row_its_new_holder_sent(self) -> None:
        ids = self.add_notifications("alice", ["rnv"])
        with self.database.begin() as session:
            preferences.mute(session, preferences.Actor("alice"), dt.timedelta(hours=5))
        moment = utcnow()
        sender = self.plugin.delivery
        real_stats = sender._stats

        def late_stats(first: object, now: dt.datetime) -> object:
            # The policy's look-ups are slow: the claim runs out, another sender sends.
            self._take_over(moment)
            return real_stats(first, now)

        sender._stats = late_stats
        self.addCleanup(setattr, sender, "_stats", real_stats)
        report, sent = self.deliver_round(online=["alice_"], now=moment)
        assert sent == [] and report.postponed == 0
        [row] = self.outbox_rows(ids)
        # Held as muted, it would have gone out a second time after the unmute.
        assert row.state == SENT and row.hold_reason is None and row.last_error is None


class TestDeliverySqlite(DeliveryCases, conftest.FmnCase):
    """Delivery on SQLite."""


@pytest.mark.postgres
class TestDeliveryPostgres(DeliveryCases, conftest.FmnCase):
    """Delivery on PostgreSQL (row locks that skip locked rows)."""

    fmn_backend = "postgres"


class TestDeliveryHolder(conftest.FmnCase):
    """A nick gets a user's lines only while one of the user's services accounts is on it.

    A nick the bot follows (it shares a channel with the bot) is judged by the
    account Limnoria tracks; any other nick is asked about with WHOX, where the
    server has it. The test plays the server's part.
    """

    fmn_toml = "[bot]\nlines_per_second = 200.0\n"

    def setUp(self) -> None:
        super().setUp()
        self.confirm_irc("alice", "alice_")
        self.ids = self.add_notifications("alice", ["rnv"])

    def _later(self, minutes: int) -> dt.datetime:
        return utcnow() + dt.timedelta(minutes=minutes)

    def _held_back(self, report: RoundReport, sent: list[ircmsgs.IrcMsg]) -> None:
        assert [m for m in sent if m.command == "PRIVMSG"] == [] and report.postponed == 1
        [row] = self.outbox_rows(self.ids)
        assert row.state == PENDING and "not online" in (row.last_error or "")

    def test_a_nick_known_to_be_logged_out_gets_nothing(self) -> None:
        self.join("alice_", "impostor.example")
        self.account_notify("alice_", "*", "impostor.example")
        self._held_back(*self.deliver_round(online=["alice_"]))
        self.account_notify("alice_", "alice", "impostor.example")
        report, sent = self.deliver_round(online=["alice_"], now=self._later(2))
        assert [m.args[0] for m in sent] == ["alice_"] and report.sent == 1

    def test_a_logged_out_extended_join_gets_nothing(self) -> None:
        self.irc.state.capabilities_ack.add("extended-join")
        self.server_says("alice_!x@impostor.example", "JOIN", self.channel, "*", "Not Alice")
        self._held_back(*self.deliver_round(online=["alice_"]))

    def test_a_nick_the_bot_does_not_follow_is_asked_about_with_whox(self) -> None:
        self.advertise_whox()
        for minutes, account in enumerate(("0", "mallory")):
            self._held_back(
                *self.deliver_round(
                    online=["alice_"], now=self._later(2 * minutes), who={"alice_": account}
                )
            )
        # Gone by the time WHO asks (no 354 before the 315): nobody's.
        self._held_back(*self.deliver_round(online=["alice_"], now=self._later(4), who={}))
        report, sent = self.deliver_round(
            online=["alice_"], now=self._later(6), who={"alice_": "alice"}
        )
        assert [m.args[0] for m in sent] == ["alice_"] and report.sent == 1
        assert self.outbox_rows(self.ids)[0].state == SENT

    def test_an_account_left_from_a_shared_channel_is_not_believed(self) -> None:
        self.advertise_whox()
        self.join("alice_")
        self.account_notify("alice_", "alice")
        self.server_says("alice_!alice_@users.example.org", "PART", self.channel)
        # alice quits unseen; whoever is on the nick now is logged out.
        self._held_back(*self.deliver_round(online=["alice_"], who={"alice_": "0"}))

    def test_an_unanswered_whox_holds_the_round_and_warns_once(self) -> None:
        self.confirm_irc("bob", "bob_")
        self.add_notifications("bob", ["kernel"])
        self.advertise_whox()
        self.plugin.link.who_timeout = 0.2
        with self.assertLogs(self.plugin.log, "WARNING") as logs:
            report, sent = self.deliver_round(online=["alice_", "bob_"])
        asked = sorted(m.args for m in sent if m.command == "WHO")
        tokens = {fields.partition(",")[2] for _nick, fields in asked}
        assert [(nick, fields.partition(",")[0]) for nick, fields in asked] == [
            ("alice_", "%tna"),
            ("bob_", "%tna"),
        ]
        # fmn's own token: Limnoria's IrcState.do354 takes token 1 for its channel WHO.
        [token] = tokens
        assert token.isdigit() and len(token) <= 3 and token != "1"
        assert [m for m in sent if m.command == "PRIVMSG"] == [] and report.postponed == 2
        assert len([r for r in logs.records if "no WHO reply" in r.getMessage()]) == 1

    def test_a_confirmation_code_waits_for_the_owner_to_be_identified(self) -> None:
        with self.database.begin() as session:
            preferences.set_destination(session, preferences.Actor("alice"), "irc", "alice__")
        self.join("alice__", "impostor.example")
        self.account_notify("alice__", "*", "impostor.example")
        report, sent = self.deliver_round(online=["alice_", "alice__"])
        assert [m.args[0] for m in sent] == ["alice_"] and report.codes == 0
        self.account_notify("alice__", "alice", "impostor.example")
        report, sent = self.deliver_round(online=["alice__"], now=self._later(2))
        assert [m.args[0] for m in sent] == ["alice__"] and report.codes == 1
        assert "fmn confirm " in sent[0].args[1]


class TestDeliveryThread(conftest.FmnCase):
    """The plugin's own background thread, as it runs in the bot."""

    fmn_deliver = True
    fmn_toml = "[bot]\nlines_per_second = 200.0\n[delivery]\nidle_poll_seconds = 0.05\n"

    def test_thread_delivers_and_stops_with_the_plugin(self) -> None:
        assert self.plugin.delivery.running
        self.confirm_irc("alice", "alice_")
        self.add_notifications("alice", ["rnv"])
        deadline = time.monotonic() + 10
        line = None
        while line is None and time.monotonic() < deadline:
            msg = self.irc.takeMsg()
            if msg is None:
                time.sleep(0.01)
            elif msg.command == "ISON":
                self.answer_ison(msg, ["alice_"])
            elif msg.command == "PRIVMSG":
                line = msg
        assert line is not None and line.args[0] == "alice_"
        delivery = self.plugin.delivery
        self.irc._reallyDie()
        assert not delivery.running

    def test_set_address_wakes_the_thread_to_send_the_code(self) -> None:
        # The woken delivery thread may ask ISON before the command's own reply
        # is queued, so the first outgoing message is not necessarily the reply.
        first = self._feedMsg("fmn set-address irc alice_", private=True)
        assert first is not None, "the bot said nothing"
        pending = [first]
        deadline = time.monotonic() + 10
        reply = code_line = None
        seen: list[ircmsgs.IrcMsg] = []
        while (reply is None or code_line is None) and time.monotonic() < deadline:
            msg = pending.pop() if pending else self.irc.takeMsg()
            if msg is None:
                time.sleep(0.01)
            elif msg.command == "ISON":
                self.answer_ison(msg, ["alice_"])
            elif msg.command == "PRIVMSG" and msg.args[0] == "alice_":
                code_line = msg
            elif msg.command in ("PRIVMSG", "NOTICE"):
                reply = msg
            else:
                seen.append(msg)
        assert reply is not None and not reply.args[1].startswith("Error:"), (reply, seen)
        assert code_line is not None and "fmn confirm " in code_line.args[1]


def test_notification_line_fits_one_irc_line() -> None:
    long = outbox.ClaimedNotification(
        id=1,
        message_id="m",
        topic="org.fedoraproject.prod.koji.build.state.change",
        app="koji",
        summary="a very long summary\nwith a line break " + "é" * 600,
        url="https://koji.fedoraproject.org/koji/buildinfo?buildID=1",
        agent=None,
        usernames=(),
        packages=(),
        severity=20,
        user_id=1,
        user="alice",
        context="irc",
        filter_name="builds",
        created_at=utcnow(),
        attempts=0,
        enabled=True,
        digest_minutes=0,
        digest_count=0,
        muted_until=None,
    )
    line = notification_line(long)
    assert len(line.encode("utf-8")) <= MAX_LINE_BYTES
    assert "\n" not in line and line.startswith("[koji] a very long summary with a line break")
    assert line.endswith("… (builds)")


def test_pacer_allows_a_burst_then_paces() -> None:
    now = [100.0]
    pacer = Pacer(rate=2.0, burst=2, clock=lambda: now[0])
    for _ in range(2):
        assert pacer.delay() == 0
        pacer.take()
    assert pacer.delay() == pytest.approx(0.5)
    now[0] += 0.5
    assert pacer.delay() == 0
    pacer.take()
    now[0] += 10  # idle time refills up to the burst, no more
    pacer.take()
    pacer.take()
    assert pacer.delay() == pytest.approx(0.5)
