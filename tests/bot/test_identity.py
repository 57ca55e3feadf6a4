"""Who an IRC user is: services accounts mapped through Fedora Accounts profiles (FASJSON).

The bot runs against a FASJSON-compatible server on loopback. Fedora account
``alice`` lists the IRC account ``Alice_W``; another person owns the Fedora
account ``wonderland`` and the IRC account ``wonderland`` is alice's too, so a
mapping by name would hand alice's IRC identity wonderland's preferences.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from contextlib import ExitStack

import supybot.ircmsgs as ircmsgs
from fasjson_server import FasjsonServer, running_fasjson
from sqlalchemy import select

from fmn_bot.plugin import DIRECTORY_DOWN
from fmn_core import fasjson as fasjson_module
from fmn_core import preferences
from fmn_core.models import Destination, NotificationState, User, utcnow

from . import conftest


class DirectoryCase(conftest.FmnCase):
    """The bot with ``bot.identity = "directory"`` and the FASJSON provider."""

    fmn_identity = "directory"
    account = "Alice_W"
    fasjson: FasjsonServer

    def setUp(self) -> None:
        self._stack = ExitStack()
        self.fasjson = self._stack.enter_context(running_fasjson())
        self.fasjson.add_user(
            "alice",
            emails=["alice@example.org"],
            ircnicks=["irc:/Alice_W", "irc:/wonderland", "matrix://fedora.im/alice"],
        )
        self.fasjson.add_user("wonderland", ircnicks=["irc://irc.oftc.net/wonderland"])
        self.fasjson.add_user("bob", ircnicks=["irc:/bobby"])
        self.fasjson.add_user("mallory", ircnicks=["irc:/mallory"])
        self.fasjson.set_groups("fmn-admins", ["bob"])
        self.fmn_toml = (
            'admins = ["mallory"]\nadmin_group = "fmn-admins"\n'
            f'[accounts]\nprovider = "fasjson"\nfasjson_url = "{self.fasjson.url}"\n'
            'fasjson_auth = "none"\ncache_seconds = 0\n[bot]\nlines_per_second = 200.0\n'
        )
        try:
            super().setUp()
        except BaseException:
            self._stack.close()
            raise

    def tearDown(self) -> None:
        try:
            super().tearDown()
        finally:
            self._stack.close()

    def names(self) -> list[str]:
        with self.database.begin() as session:
            return sorted(session.scalars(select(User.name)))

    def actor_for(self, nick: str, account: str) -> preferences.Actor:
        msg = ircmsgs.IrcMsg(
            prefix=f"{nick}!{nick}@users.example.org",
            command="PRIVMSG",
            args=(self.irc.nick, "fmn filters"),
            server_tags={"account": account},
        )
        actor: preferences.Actor = self.plugin.actor(self.irc, msg)
        return actor


class TestIrcIdentity(DirectoryCase):
    def test_a_mapped_account_reaches_exactly_its_fedora_account(self) -> None:
        with self.database.begin() as session:
            preferences.add_filter(session, preferences.Actor("wonderland"), "irc", "theirs")
        self.assertRegexp("fmn add-filter irc mine", r"Added filter")
        # The same person under their other IRC account: the same Fedora account.
        self.as_user("wl", "wonderland")
        self.assertRegexp("fmn filters irc", r"1\. mine \(no rules\)")
        self.assertNotRegexp("fmn filters irc", r"theirs")
        with self.database.begin() as session:
            own = preferences.list_filters(session, preferences.Actor("alice"), "irc")
            other = preferences.list_filters(session, preferences.Actor("wonderland"), "irc")
        assert [f.name for f in own] == ["mine"]
        assert [f.name for f in other] == ["theirs"]
        assert self.names() == ["alice", "wonderland"]

    def test_capitals_and_underscores_map(self) -> None:
        for account in ("Alice_W", "alice_w", "ALICE_W"):
            self.as_user("someone", account)
            actor = self.actor_for("someone", account)
            assert (actor.name, actor.irc_account) == ("alice", account)

    def test_an_unmapped_account_is_refused_with_how_to_fix_it(self) -> None:
        self.as_user("stranger", "stranger")
        reply = self.assertError("fmn add-filter irc x").args[1]
        assert "add irc:/stranger" in reply
        assert "accounts.fedoraproject.org" in reply
        assert self.names() == []

    def test_a_spoofed_name_is_refused(self) -> None:
        # Registering IRC account "alice" on the network makes nobody Fedora's alice:
        # alice's profile does not list it.
        self.as_user("alice", "alice")
        self.assertRegexp("fmn filters", r"^Error: No Fedora account lists your IRC account")
        # Nor does a name in ``admins`` or the admin group make anyone an admin.
        for name in ("mallory-", "bob", "fmn-admins"):
            self.as_user(name, name)
            self.assertRegexp("fmn filters", r"^Error: No Fedora account lists")
        assert self.names() == []

    def test_a_nick_claimed_by_two_profiles_is_refused(self) -> None:
        self.fasjson.add_user("eve", ircnicks=["irc:/Alice_W"])
        self.assertRegexp("fmn filters", r"^Error: 2 Fedora accounts list the IRC account")

    def test_directory_outage_is_said_plainly(self) -> None:
        self.fasjson.failing = 503
        self.assertRegexp("fmn filters", "^Error: " + re.escape(DIRECTORY_DOWN))


class TestAdmins(DirectoryCase):
    def test_admins_are_exactly_the_group_and_named_accounts(self) -> None:
        assert self.actor_for("bobby", "bobby").is_admin  # bob, in fmn-admins
        assert self.actor_for("m", "mallory").is_admin  # mallory, named in admins
        assert not self.actor_for("a", "Alice_W").is_admin
        self.fasjson.set_groups("fmn-admins", ["alice"])
        assert self.actor_for("a", "Alice_W").is_admin
        assert not self.actor_for("bobby", "bobby").is_admin


class TestProfileAddresses(DirectoryCase):
    def test_profile_email_confirms_without_a_code(self) -> None:
        self.assertRegexp(
            "fmn set-address email", r"From your Fedora profile.*alice@example\.org", private=True
        )
        self.assertRegexp(
            "fmn set-address email alice@Example.org",
            r"^email now delivers to alice@example\.org",
            private=True,
        )
        self.assertRegexp(  # the local part is not case-insensitive everywhere
            "fmn set-address email Alice@example.org", r"code is on its way", private=True
        )
        self.assertRegexp(
            "fmn set-address email other@example.org",
            r"confirmation code is on its way",
            private=True,
        )
        with self.database.begin() as session:
            rows = {d.address: d.confirmed for d in session.scalars(select(Destination))}
        assert rows == {
            "alice@example.org": True,
            "Alice@example.org": False,
            "other@example.org": False,
        }

    def test_own_irc_account_confirms_without_a_code_other_nicks_need_one(self) -> None:
        self.assertRegexp(
            "fmn set-address irc alice_w", r"^irc now delivers to alice_w", private=True
        )
        self.assertRegexp(
            "fmn set-address irc wonderland", r"sending a confirmation code", private=True
        )


class TestDeliveryHolder(DirectoryCase):
    """IRC delivery goes to a nick only while a services account that maps to the
    destination's owner holds it."""

    def test_nick_held_by_an_account_named_like_the_user_gets_nothing(self) -> None:
        self.confirm_irc("alice", "alice_")
        ids = self.add_notifications("alice", ["rnv"])
        # An impostor registered the IRC account "alice": not in alice's profile.
        self.join("alice_", "impostor.example")
        self.irc.feedMsg(
            ircmsgs.IrcMsg(prefix="alice_!x@impostor.example", command="ACCOUNT", args=("alice",))
        )
        report, sent = self.deliver_round(online=["alice_"])
        assert sent == [] and report.postponed == 1
        assert self.plugin.fedora_name("alice") == ""
        self.irc.feedMsg(
            ircmsgs.IrcMsg(
                prefix="alice_!x@users.example.org", command="ACCOUNT", args=("Alice_W",)
            )
        )
        report, sent = self.deliver_round(online=["alice_"], now=utcnow() + dt.timedelta(minutes=2))
        assert len(sent) == 1
        assert self.outbox_rows(ids)[0].state == NotificationState.SENT.value

    def test_an_account_from_whox_maps_through_the_profile(self) -> None:
        self.confirm_irc("alice", "alice_")
        ids = self.add_notifications("alice", ["rnv"])
        self.advertise_whox()
        report, sent = self.deliver_round(online=["alice_"], who={"alice_": "alice"})
        assert [m for m in sent if m.command == "PRIVMSG"] == [] and report.postponed == 1
        report, sent = self.deliver_round(
            online=["alice_"], now=utcnow() + dt.timedelta(minutes=2), who={"alice_": "Alice_W"}
        )
        assert [m.args[0] for m in sent] == ["alice_"]
        assert self.outbox_rows(ids)[0].state == NotificationState.SENT.value

    def test_nothing_goes_out_while_the_directory_cannot_say_whose_account_it_is(self) -> None:
        self.confirm_irc("alice", "alice_")
        ids = self.add_notifications("alice", ["rnv"])
        self.join("alice_")
        self.irc.feedMsg(
            ircmsgs.IrcMsg(
                prefix="alice_!alice_@users.example.org", command="ACCOUNT", args=("Alice_W",)
            )
        )
        retry = fasjson_module.RETRY_AFTER_SECONDS
        fasjson_module.RETRY_AFTER_SECONDS = 0.3
        try:
            self.fasjson.failing = 503
            report, sent = self.deliver_round(online=["alice_"])
            assert sent == [] and report.postponed == 1
            self.fasjson.failing = None
            time.sleep(0.35)
        finally:
            fasjson_module.RETRY_AFTER_SECONDS = retry
        report, sent = self.deliver_round(online=["alice_"], now=utcnow() + dt.timedelta(minutes=2))
        assert [m.args[0] for m in sent] == ["alice_"]
        assert self.outbox_rows(ids)[0].state == NotificationState.SENT.value

    def test_holder_is_unknown_while_the_directory_is_down(self) -> None:
        retry = fasjson_module.RETRY_AFTER_SECONDS
        fasjson_module.RETRY_AFTER_SECONDS = 0.3
        try:
            self.fasjson.failing = 503
            assert self.plugin.fedora_name("Alice_W") is None
            self.fasjson.failing = None
            assert self.plugin.fedora_name("Alice_W") is None  # not asked again yet
            time.sleep(0.35)
            assert self.plugin.fedora_name("Alice_W") == "alice"
        finally:
            fasjson_module.RETRY_AFTER_SECONDS = retry
