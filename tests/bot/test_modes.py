"""Issue 13 on IRC: delivery modes, ``fmn pending``/``recent``, and the trial's rough edges.

Typed the way users type them, through Limnoria's parsing and fmn's real
preference service on a real database.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path

import supybot.conf as conf
from conftest import database_locked  # tests/conftest.py (tests/ is on sys.path)
from sqlalchemy import select

from fmn_bot.plugin import Fmn
from fmn_core import preferences
from fmn_core.models import Notification, User, utcnow

from . import conftest


class TestDeliveryModes(conftest.FmnCase):
    """Per-filter delivery, daily digests and quiet hours from IRC."""

    def test_a_filter_says_how_it_travels(self) -> None:
        self.assertNotError("fmn add-filter email failed builds")
        self.assertRegexp(
            "fmn delivery email digest failed builds",
            r'^email 1\. "failed builds" \(digest, no rules\)\.$',
        )
        self.assertRegexp("fmn delivery email urgent failed builds", r"\(digest, urgent, ")
        self.assertRegexp("fmn filters email", r"failed builds\" \(digest, urgent, no rules\)")
        self.assertRegexp(
            "fmn delivery email hourly failed builds",
            r"not one of instant, digest, urgent or normal",
        )

    def test_daily_digest_and_quiet_hours(self) -> None:
        self.assertRegexp(
            "fmn daily email 18:00 Europe/Prague", r"^email: digest daily at 18:00 Europe/Prague\.$"
        )
        self.assertRegexp("fmn daily email 25:00", r"HH:MM")
        self.assertRegexp("fmn daily email 8pm", r"not a time like 08:00")
        self.assertRegexp("fmn daily email 08:00 Mars/Base", r"IANA time zone")
        self.assertRegexp(
            "fmn quiet email 22:00-07:00 Europe/Prague",
            r"^email: quiet hours 22:00-07:00 Europe/Prague\.$",
        )
        self.assertRegexp(
            "fmn contexts",
            r"email on, no filters, digest daily at 18:00 "
            r"Europe/Prague, quiet 22:00-07:00 Europe/Prague",
        )
        self.assertRegexp("fmn quiet email off", r"^email: quiet hours none\.$")
        self.assertRegexp("fmn daily email off", r"^email: digest off\.$")

    def test_pending_says_why_and_until_when(self) -> None:
        self.assertRegexp("fmn pending", r"Nothing is waiting")
        ids = self.add_notifications("alice", ["rpm", "git"])
        until = utcnow() + dt.timedelta(hours=3)
        with self.database.begin() as session:
            for row in session.scalars(select(Notification).where(Notification.id.in_(ids))):
                row.hold_reason, row.next_attempt_at = "quiet_hours", until
        reply = self.assertNotError("fmn pending").args[1]
        assert reply.startswith("2 notifications waiting: irc: ")
        assert f"held for your quiet hours until {until:%Y-%m-%d %H:%M} UTC" in reply
        # The overflow of a burst can be read later.
        self.assertRegexp("fmn recent", r"irc: .*\(held for your quiet hours until ")


class TestAddresses(conftest.FmnCase):
    """A mistyped address is no dead end; the bot is no address."""

    fmn_toml = "[confirmation]\nresend_interval_seconds = 0\n"

    def test_remove_address_and_resend_code(self) -> None:
        self.assertRegexp("fmn set-address irc alicee", r"confirmation code", private=True)
        self.assertRegexp(
            "fmn resend-code irc", r"^A new code is on its way to alicee", private=True
        )
        self.assertRegexp("fmn remove-address irc", r"^Removed alicee from irc\.$", private=True)
        self.assertRegexp("fmn remove-address irc", r"irc has no unconfirmed address", private=True)
        self.assertRegexp(
            "fmn resend-code irc", r"Nothing in irc is waiting for confirmation", private=True
        )

    def test_a_feed_address_comes_with_its_url(self) -> None:
        reply = self.assertRegexp("fmn set-address rss", r"^rss now delivers to ", private=True)
        token = reply.args[1].split()[4]
        assert f"Give your feed reader: http://localhost:8080/feeds/{token}.rss" in reply.args[1]

    def test_the_bots_own_nick_is_refused(self) -> None:
        self.assertRegexp(f"fmn set-address irc {self.irc.nick}", r"is my own nick", private=True)
        with self.database.begin() as session:
            assert session.scalars(select(User)).all() == []


class TestParsing(conftest.FmnCase):
    """What Limnoria can't split gets a clear answer, not "An error has occurred"."""

    def test_unbalanced_quotes_and_brackets_say_what_is_wrong(self) -> None:
        reply = self.assertRegexp('fmn add-filter irc "my builds', r"can't read that command")
        assert "close every quote" in reply.args[1]
        self.assertRegexp("fmn add-rule irc x app_is app=[koji", r"can't read that command")
        self.assertNotError('fmn add-filter irc "my builds"')


class TestReload(conftest.FmnCase):
    """A reload with a bad file keeps the working configuration."""

    def test_a_bad_reload_keeps_the_last_good_configuration(self) -> None:
        path = conf.supybot.plugins.Fmn.configFile()
        good = Path(path).read_text(encoding="utf-8")
        Path(path).write_text(good + '\n[delivery]\nbatch_size = "lots"\n', encoding="utf-8")
        plugin = Fmn(self.irc)
        try:
            assert plugin.config_problem is not None and "batch_size" in plugin.config_problem
            assert plugin.fmn_config.database_url == self.plugin.fmn_config.database_url
        finally:
            plugin.die()

    def test_fmn_log_lines_reach_the_bots_log(self) -> None:
        handlers = logging.getLogger("supybot").handlers
        assert handlers
        assert all(h in logging.getLogger("fmn_core").handlers for h in handlers)


class TestIrcQuietHours(conftest.FmnCase):
    """Quiet hours hold IRC lines until the window ends; urgent filters pass."""

    fmn_toml = "[bot]\nlines_per_second = 200.0\nburst = 5\n"

    def test_quiet_hours_hold_then_one_digest_line_and_urgent_passes(self) -> None:
        self.confirm_irc("alice", "alice_")
        actor = preferences.Actor("alice")
        now = utcnow()
        start, end = now - dt.timedelta(hours=1), now + dt.timedelta(hours=1)
        with self.database.begin() as session:
            urgent = preferences.add_filter(session, actor, "irc", "fails")
            preferences.set_filter_urgent(session, actor, "irc", "fails", True)
            rest = preferences.add_filter(session, actor, "irc", "rest")
            preferences.set_quiet_hours(
                session, actor, "irc", f"{start:%H:%M}", f"{end:%H:%M}", "UTC"
            )
        ids = self.add_notifications("alice", ["rnv", "kernel", "git"])
        with self.database.begin() as session:
            for row in session.scalars(select(Notification).where(Notification.id.in_(ids))):
                row.filter_id = urgent.id if row.id == ids[0] else rest.id
        _report, sent = self.deliver_round(online=["alice_"])
        [line] = sent
        assert "rnv" in line.args[1]
        held = [r for r in self.outbox_rows(ids) if r.id != ids[0]]
        assert {(r.state, r.hold_reason) for r in held} == {("pending", "quiet_hours")}
        until = held[0].next_attempt_at
        assert until == end.replace(second=0, microsecond=0)
        self.assertRegexp("fmn pending", r"held for your quiet hours until ")
        _report, sent = self.deliver_round(online=["alice_"], now=until)
        [digest] = sent
        assert digest.args[1].startswith("Digest: 2 notifications")
        assert {r.state for r in self.outbox_rows(ids)} == {"sent"}


class TestBusyDatabase(conftest.FmnCase):
    """A command while another change holds the database: refused in words, quickly."""

    fmn_toml = "[gateway]\nbusy_timeout_seconds = 0.5\n"

    def test_a_locked_database_is_refused_as_busy_and_the_retry_saves(self) -> None:
        self.assertNotError("fmn contexts")  # first contact done before the lock
        with database_locked(self.plugin.database):
            started = time.monotonic()
            self.assertRegexp(
                "fmn add-filter email failed builds",
                r"database is busy .*nothing was saved — try again in a moment",
            )
            # The configured bound, not SQLite's 30 s default.
            assert time.monotonic() - started < 5
        with self.database.begin() as session:
            assert preferences.list_filters(session, preferences.Actor("alice"), "email") == []
        self.assertRegexp("fmn add-filter email failed builds", r"failed builds")
