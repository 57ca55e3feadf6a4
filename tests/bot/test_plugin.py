"""The ``fmn`` command group, typed the way users type it in a channel or in private.

Every test goes through Limnoria's command parsing, the plugin's converters and
fmn's real preference service on a real database (SQLite; PostgreSQL too for
the main class), with the sender identified by the IRCv3 ``account`` tag.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING

import pytest
import supybot.conf as conf
import supybot.ircmsgs as ircmsgs
from sqlalchemy import select, text

from fmn_bot.plugin import COMMANDS, NOT_IDENTIFIED, Fmn, parse_duration
from fmn_core import preferences
from fmn_core.errors import ConfigError
from fmn_core.models import User, utcnow

from . import conftest

IDENTIFY = re.escape(NOT_IDENTIFIED[:40])


def _code_of(line: str) -> str:
    match = re.search(r"fmn confirm (\S+)", line)
    assert match, line
    return match.group(1)


# The harness's base class for type checking only: at run time the cases are
# mixins (see the classes below).
if TYPE_CHECKING:
    _Cases = conftest.FmnCase
else:
    _Cases = object


class CommandCases(_Cases):
    """Each command: what it does, and how it refuses (run on both databases).

    A mixin, not a base test class: Limnoria's ``PluginTestCase`` wraps test
    methods on the class that first runs them, which breaks test inheritance.
    """

    # ----------------------------------------------------------------- help

    def test_help_lists_every_command(self) -> None:
        reply = self.assertNotError("fmn help").args[1]
        for name in COMMANDS:
            assert name in reply

    def test_help_explains_a_hyphenated_command(self) -> None:
        self.assertRegexp("fmn help add-filter", r"^fmn add-filter <context> <name> -- Adds")
        self.assertRegexp(
            "fmn help remove-rule", r"fmn remove-rule <context> <filter> <rule number>"
        )

    def test_help_for_an_unknown_command_names_the_commands(self) -> None:
        self.assertRegexp(
            "fmn help frobnicate", r"^Error: .*no fmn command 'frobnicate'.*add-filter"
        )

    def test_bare_fmn_gives_the_overview(self) -> None:
        self.assertRegexp("fmn", r"Commands: help, contexts")

    def test_unknown_subcommand_explains_the_right_form(self) -> None:
        self.assertRegexp(
            "fmn add-filtre irc x", r"^Error: 'fmn add-filtre' is not an fmn command.*fmn help"
        )

    def test_hyphen_underscore_and_joined_names_are_one_command(self) -> None:
        self.assertNotError("fmn add-filter irc one")
        self.assertNotError("fmn add_filter irc two")
        self.assertNotError("fmn addfilter irc three")
        self.assertRegexp("fmn filters irc", r"1\. one \(.*2\. two \(.*3\. three \(")

    def test_missing_arguments_reply_with_usage_in_typed_names(self) -> None:
        self.assertRegexp("fmn add-filter", r"fmn add-filter <context> <name>")
        self.assertRegexp(
            "fmn remove-rule irc builds", r"fmn remove-rule <context> <filter> <rule number>"
        )
        self.assertRegexp("fmn mute", r"fmn mute <duration>")
        self.assertRegexp(
            "fmn rename-filter irc", r"fmn rename-filter <context> <filter> <new name>"
        )

    def test_limnoria_help_command_shows_typed_names(self) -> None:
        self.assertRegexp("help fmn add-rule", r"fmn add-rule <context> <filter> \[not\] <rule>")

    # ------------------------------------------------------- contexts on/off

    def test_contexts_lists_every_offered_context(self) -> None:
        reply = self.assertNotError("fmn contexts").args[1]
        for context in ("email", "irc", "matrix", "push", "android", "desktop", "live", "rss"):
            assert f"{context} on" in reply

    def test_disable_and_enable_a_context(self) -> None:
        self.assertResponse("fmn disable email", "email is off.")
        self.assertRegexp("fmn contexts", r"email off")
        self.assertResponse("fmn enable EMAIL", "email is on.")
        self.assertRegexp("fmn contexts", r"email on")

    def test_unknown_context_is_refused_with_the_choices(self) -> None:
        self.assertRegexp(
            "fmn enable carrier-pigeon", r"^Error: 'carrier-pigeon' is not a delivery context.*irc"
        )
        self.assertRegexp("fmn disable sms", r"^Error: 'sms' is not a delivery context")

    # ----------------------------------------------------------------- filters

    def test_filters_when_there_are_none(self) -> None:
        self.assertRegexp("fmn filters", r"no filters yet")
        self.assertRegexp("fmn filters irc", r"irc: no filters yet")

    def test_add_filter_with_a_quoted_name(self) -> None:
        self.assertRegexp(
            'fmn add-filter irc "my builds"', r"Added filter 'my builds' to irc.*\"my builds\""
        )
        self.assertRegexp("fmn filters", r'irc: 1\. "my builds" \(no rules\)')

    def test_add_filter_takes_an_unquoted_name_with_spaces_at_the_end(self) -> None:
        self.assertNotError("fmn add-filter email koji failures")
        self.assertRegexp("fmn filters email", r'1\. "koji failures" \(')

    def test_add_filter_twice_is_refused(self) -> None:
        self.assertNotError("fmn add-filter irc builds")
        self.assertRegexp(
            "fmn add-filter irc builds", r"^Error: There is already a filter called 'builds'"
        )

    def test_show_numbers_the_rules(self) -> None:
        self.assertNotError("fmn add-filter irc builds")
        self.assertNotError("fmn add-rule irc builds app_is app=koji")
        self.assertNotError("fmn add-rule irc builds not user_involved username=bob")
        self.assertRegexp(
            "fmn show irc builds",
            r"1\. builds \(2 rules\): 1\. app_is app=koji; 2\. not user_involved username=bob",
        )

    def test_show_an_unknown_filter(self) -> None:
        self.assertRegexp("fmn show irc nothing", r"^Error: .*nothing")

    def test_rename_filter(self) -> None:
        self.assertNotError('fmn add-filter irc "my builds"')
        self.assertResponse(
            'fmn rename-filter irc "my builds" builds', "Renamed 'my builds' to 'builds' in irc."
        )
        self.assertRegexp("fmn filters irc", r"1\. builds \(")
        self.assertNotRegexp("fmn filters irc", r"my builds")

    def test_rename_filter_refusals(self) -> None:
        self.assertNotError("fmn add-filter irc a")
        self.assertNotError("fmn add-filter irc b")
        self.assertRegexp(
            "fmn rename-filter irc a b", r"^Error: There is already a filter called 'b'"
        )
        self.assertError("fmn rename-filter irc zzz c")

    def test_remove_filter(self) -> None:
        self.assertNotError("fmn add-filter irc builds")
        self.assertResponse("fmn remove-filter irc builds", "Removed filter 'builds' from irc.")
        self.assertRegexp("fmn filters irc", r"no filters yet")
        self.assertError("fmn remove-filter irc builds")

    # ------------------------------------------------------------------ rules

    def test_add_rule_with_arguments_and_negation(self) -> None:
        self.assertNotError('fmn add-filter irc "my builds"')
        self.assertResponse(
            'fmn add-rule irc "my builds" app_is app=koji',
            "Filter 'my builds' in irc now has rule 1. app_is app=koji.",
        )
        self.assertRegexp(
            'fmn add-rule irc "my builds" NOT app_is app=bodhi', r"rule 2\. not app_is app=bodhi"
        )
        self.assertRegexp(
            'fmn show irc "my builds"', r"1\. app_is app=koji; 2\. not app_is app=bodhi"
        )

    def test_add_rule_values_with_spaces_in_either_quoting(self) -> None:
        self.assertNotError("fmn add-filter irc words")
        self.assertRegexp(
            'fmn add-rule irc words summary_contains text="build failed"', r"text=build failed\.$"
        )
        self.assertRegexp(
            'fmn add-rule irc words summary_contains "text=was retired"', r"text=was retired\.$"
        )

    def test_add_rule_refusals_come_from_the_catalog(self) -> None:
        self.assertNotError("fmn add-filter irc builds")
        self.assertRegexp(
            "fmn add-rule irc builds no_such_rule",
            r"^Error: There is no rule called 'no_such_rule'",
        )
        self.assertRegexp("fmn add-rule irc builds app_is", r"^Error: app_is needs app=")
        self.assertRegexp(
            "fmn add-rule irc builds app_is koji", r"^Error: Rule arguments are name=value pairs"
        )
        self.assertRegexp(
            "fmn add-rule irc builds app_is app=koji colour=red",
            r"^Error: app_is does not take colour",
        )
        self.assertRegexp(
            "fmn add-rule irc builds app_is app=koji app=bodhi", r"^Error: app= is given twice"
        )
        self.assertRegexp(
            "fmn add-rule irc nosuchfilter app_is app=koji", r"^Error: .*nosuchfilter"
        )
        self.assertRegexp("fmn show irc builds", r"no rules")

    def test_remove_rule_by_number(self) -> None:
        self.assertNotError("fmn add-filter irc builds")
        self.assertNotError("fmn add-rule irc builds app_is app=koji")
        self.assertNotError("fmn add-rule irc builds app_is app=bodhi")
        self.assertResponse("fmn remove-rule irc builds 1", "Removed rule 1 from 'builds'; 1 left.")
        self.assertRegexp("fmn show irc builds", r"1\. app_is app=bodhi$")
        self.assertRegexp("fmn remove-rule irc builds 5", r"^Error: Filter 'builds' has no rule 5")
        self.assertRegexp("fmn remove-rule irc builds first", r"^Error: .*positive integer")

    def test_rules_catalog_list_search_and_detail(self) -> None:
        self.assertRegexp("fmn rules", r"^\d+ rules: app_is, topic_matches")
        self.assertRegexp("fmn rules app_is", r"^app_is: Application is\. .*Arguments: app=")
        reply = self.assertNotError("fmn rules package").args[1]
        assert "package_involved" in reply and "app_is," not in reply
        self.assertRegexp("fmn rules xyzzy plugh", r"^Error: No rule matches 'xyzzy plugh'")

    # ----------------------------------------------- addresses and confirming

    def test_set_address_in_a_channel_is_refused_without_echoing_it(self) -> None:
        reply = self.assertError("fmn set-address email alice.secret@example.org").args[1]
        assert "private message" in reply
        assert "alice.secret" not in reply
        self.assertRegexp("fmn contexts", r"email on, no filters, no address")

    def test_set_address_in_private_replies_in_private(self) -> None:
        m = self.assertRegexp(
            "fmn set-address email alice@example.org",
            r"code is on its way to alice@example\.org",
            private=True,
        )
        assert m.args[0] == "test"
        shown = self.assertNotError("fmn contexts").args[1]
        assert "alice@example.org" not in shown
        assert "a***e@example.org (not confirmed yet)" in shown
        self.assertRegexp("fmn contexts", r"alice@example\.org \(not confirmed yet\)", private=True)

    def test_set_address_refusals_come_from_core(self) -> None:
        self.assertRegexp("fmn set-address email not-an-address", r"^Error: ", private=True)
        self.assertRegexp("fmn set-address irc #channel", r"^Error: ", private=True)
        self.assertRegexp("fmn set-address email", r"^Error: ", private=True)

    def test_set_address_for_a_feed_gives_its_secret_in_private(self) -> None:
        m = self.assertRegexp(
            "fmn set-address rss", r"^rss now delivers to \S+ \(keep it secret\)", private=True
        )
        token = m.args[1].split()[4]
        assert token not in self.assertNotError("fmn contexts").args[1]

    def test_irc_address_is_confirmed_with_the_code_sent_to_the_nick(self) -> None:
        self.assertRegexp(
            "fmn set-address irc alice_", r"sending a confirmation code to alice_", private=True
        )
        report, sent = self.deliver_round(online=["alice_"])
        assert report.codes == 1
        [line] = sent
        assert line.command == "PRIVMSG" and line.args[0] == "alice_"
        assert "The Fedora account alice asked" in line.args[1]
        code = _code_of(line.args[1])
        # The code went out once: the next round doesn't send it again.
        assert self.deliver_round(online=["alice_"])[1] == []
        m = self.assertRegexp(
            f"fmn confirm {code.lower()}", r"^Confirmed: irc delivers to alice_\.", private=True
        )
        assert m.args[0] == "test"
        self.assertRegexp("fmn contexts", r"irc on, no filters, to a\*\*\* \(confirmed\)")

    def test_confirmation_code_waits_for_an_offline_nick(self) -> None:
        self.assertNotError("fmn set-address irc alice_", private=True)
        report, sent = self.deliver_round(online=[])
        assert report.codes == 0 and sent == []
        report, sent = self.deliver_round(online=["ALICE_"], now=utcnow() + dt.timedelta(minutes=2))
        assert report.codes == 1 and sent[0].args[0] == "alice_"

    def test_confirm_in_a_channel_answers_in_private_without_the_code(self) -> None:
        self.assertNotError("fmn set-address irc alice_", private=True)
        code = _code_of(self.deliver_round(online=["alice_"])[1][0].args[1])
        m = self.assertNotError(f"fmn confirm {code}")
        assert m.args[0] == "test" and code not in m.args[1] and "alice_" not in m.args[1]

    def test_wrong_codes_are_counted_and_lock_out(self) -> None:
        self.assertNotError("fmn set-address email alice@example.org", private=True)
        self.assertRegexp(
            "fmn confirm WRONG111", r"^Error: The code 'WRONG111' is wrong", private=True
        )
        # The failure count survives the command (committed), so guessing ends.
        for _ in range(3):
            self.assertError("fmn confirm WRONG222", private=True)
        self.assertRegexp("fmn confirm WRONG333", r"^Error: Too many wrong codes", private=True)

    def test_confirm_without_anything_pending(self) -> None:
        self.assertRegexp(
            "fmn confirm ABCDEFGH",
            r"^Error: You have nothing waiting for confirmation",
            private=True,
        )

    # ---------------------------------------------------------- digest, mute

    def test_digest_set_and_off(self) -> None:
        self.assertResponse(
            "fmn digest email 60 10", "email: digest every 60 minutes or after 10 notifications."
        )
        self.assertRegexp(
            "fmn contexts", r"email on, no filters, digest every 60 minutes or after 10 notif"
        )
        self.assertResponse("fmn digest email 0 5", "email: digest after 5 notifications.")
        self.assertResponse("fmn digest email off", "email: digest off.")
        self.assertRegexp(
            "fmn digest email soon", r"^Error: 'soon' is neither a number of minutes nor 'off'"
        )
        self.assertRegexp("fmn digest email 99999999", r"^Error: minutes")
        self.assertRegexp("fmn digest email ²", r"^Error: '²' is neither a number of minutes")

    def test_mute_and_unmute(self) -> None:
        self.assertRegexp("fmn mute 2h", r"^Muted until \d{4}-\d\d-\d\d \d\d:\d\d UTC")
        self.assertRegexp("fmn contexts", r"muted until")
        self.assertResponse("fmn unmute", "Unmuted.")
        self.assertNotRegexp("fmn contexts", r"muted until")

    def test_mute_refusals(self) -> None:
        self.assertRegexp(
            "fmn mute forever", r"^Error: 'forever' is not a duration; write it like 30m"
        )
        self.assertRegexp(
            "fmn mute 400d", r"^Error: A mute must end in the future and within a year"
        )
        self.assertRegexp("fmn mute ²", r"^Error: '²' is not a duration")
        self.assertRegexp("fmn mute ٣h", r"^Error: '٣h' is not a duration")

    # --------------------------------------------------- templates, preview

    def test_templates_and_use_template(self) -> None:
        listing = self.assertRegexp("fmn templates", r"packager: ").args[1]
        assert "fmn use-template" in listing
        self.assertRegexp(
            "fmn use-template packager email", r"^email now has the filters of packager: '"
        )
        self.assertRegexp("fmn filters email", r'1\. "failed builds of my packages" \(2 rules\)')
        self.assertRegexp(
            "fmn use-template packager email", r"^Error: email already has a filter called"
        )
        self.assertRegexp(
            "fmn use-template nosuch email",
            r"^Error: There is no template called 'nosuch'.*packager",
        )

    def test_preview_shows_matching_stored_messages(self) -> None:
        self.add_messages(["rnv", "kernel", "rnv"])
        self.assertNotError("fmn add-filter irc rnv")
        self.assertNotError("fmn add-rule irc rnv package_involved package=rnv")
        self.assertNotError("fmn add-filter irc kernel")
        self.assertNotError("fmn add-rule irc kernel package_involved package=kernel")
        self.assertRegexp(
            "fmn preview irc rnv", r"^2 recent message\(s\) match: rnv's builds are back to normal"
        )
        self.assertRegexp(
            "fmn preview irc", r"^3 recent message\(s\) match \('rnv' 2, 'kernel' 1\)"
        )
        self.assertRegexp("fmn preview irc nosuch", r"^Error: ")

    def test_preview_without_filters(self) -> None:
        self.assertRegexp("fmn preview email", r"^Error: email has no filters yet")
        self.assertNotError("fmn add-filter email empty")
        self.assertRegexp("fmn preview email empty", r"No recent message matches 'empty'")

    # ------------------------------------------------------------- identity

    def test_unidentified_users_are_told_to_identify(self) -> None:
        self.as_user("stranger", None)
        for command in (
            "fmn contexts",
            "fmn enable irc",
            "fmn disable irc",
            "fmn filters",
            "fmn show irc x",
            "fmn add-filter irc x",
            "fmn rename-filter irc x y",
            "fmn remove-filter irc x",
            "fmn add-rule irc x app_is app=koji",
            "fmn remove-rule irc x 1",
            "fmn confirm ABCDEFGH",
            "fmn digest irc 5",
            "fmn use-template packager irc",
            "fmn preview irc x",
            "fmn mute 1h",
            "fmn unmute",
        ):
            self.assertRegexp(command, f"^Error: {IDENTIFY}")
        self.assertRegexp("fmn set-address irc stranger", f"^Error: {IDENTIFY}", private=True)
        # The catalog and the templates are public.
        self.assertNotError("fmn rules app_is")
        self.assertNotError("fmn templates")
        self.assertNotError("fmn help")

    def test_identity_is_the_account_not_the_nick(self) -> None:
        self.assertNotError("fmn add-filter irc alices")
        self.as_user("alice", "bob")  # bob's account, using the nick "alice"
        self.assertRegexp("fmn filters", r"no filters yet")
        self.as_user("someone_else", "alice")  # alice's account, under another nick
        self.assertRegexp("fmn filters", r"1\. alices \(")

    def test_one_user_cannot_touch_another_users_data(self) -> None:
        self.assertNotError("fmn add-filter irc private")
        self.assertNotError("fmn set-address email alice@example.org", private=True)
        self.as_user("bob", "bob")
        self.assertRegexp("fmn show irc private", r"^Error: ")
        self.assertError("fmn remove-filter irc private")
        self.assertError("fmn add-rule irc private app_is app=koji")
        self.assertRegexp("fmn confirm ABCDEFGH", r"nothing waiting", private=True)
        self.assertNotRegexp("fmn contexts", r"a\*\*\*e@example")
        self.as_user("alice", "alice")
        self.assertRegexp("fmn show irc private", r"no rules")


class TestFmnCommandsSqlite(CommandCases, conftest.FmnCase):
    """The commands on SQLite."""

    def test_internal_errors_give_a_reference_only(self) -> None:
        with self.database.engine.begin() as connection:
            connection.execute(text("DROP TABLE change_events"))
        reply = self.assertError("fmn add-filter irc builds").args[1]
        assert re.fullmatch(
            r"Error: internal error \(reference [0-9a-f]{8}\); the fmn log has the details",
            reply,
        ), reply


@pytest.mark.postgres
class TestFmnCommandsPostgres(CommandCases, conftest.FmnCase):
    """The commands on PostgreSQL."""

    fmn_backend = "postgres"


class TestIdentitySources(conftest.FmnCase):
    """Where the account comes from when the message carries no tag."""

    account = None

    def test_account_from_account_notify_when_tags_are_off(self) -> None:
        self.as_user("carol", None)
        self.join("carol")
        self.account_notify("carol", "carol")
        self.assertRegexp("fmn add-filter irc mine", r"Added filter")
        self.as_user("carol", "carol")
        self.assertRegexp("fmn filters", r"1\. mine \(no rules\)")

    def test_logging_out_is_noticed(self) -> None:
        self.as_user("carol", None)
        self.join("carol")
        self.account_notify("carol", "carol")
        self.assertNotError("fmn filters")
        self.account_notify("carol", "*")
        self.assertRegexp("fmn filters", f"^Error: {IDENTIFY}")

    # Limnoria keeps a nick's account after the nick leaves the bot's channels (PART,
    # KICK); the bot never sees its later QUIT, so the account would pass to whoever
    # takes the nick next.

    def _carol_identified_then(self, *leaving: tuple[str, str, tuple[str, ...]]) -> None:
        """carol, identified in the bot's channel; then the ``leaving`` lines."""
        self.as_user("carol", None)
        self.join("carol")
        self.account_notify("carol", "carol")
        self.assertRegexp("fmn add-filter irc mine", r"Added filter")
        for prefix, command, args in leaving:
            self.server_says(prefix, command, *args)
        # Later carol quits the network unseen, and mallory (not identified) takes the nick.
        self.prefix = "carol!m@mallory.example"

    def _refused_as_carol(self, *, private: bool) -> None:
        reply = self.assertError("fmn add-filter irc theirs", private=private)
        assert reply.args[1] == f"Error: {NOT_IDENTIFIED}"
        with self.database.begin() as session:
            filters = preferences.list_filters(session, preferences.Actor("carol"), "irc")
        assert [f.name for f in filters] == ["mine"]

    def _bot_says(self, command: str, *args: str) -> None:
        self.server_says(f"{self.irc.nick}!user@host.domain.tld", command, *args)
        while self.irc.takeMsg() is not None:  # Limnoria's WHO and MODE of a joined channel
            pass

    def test_a_nick_that_parted_loses_its_account(self) -> None:
        self._carol_identified_then(("carol!carol@users.example.org", "PART", (self.channel,)))
        self._refused_as_carol(private=True)

    def test_a_kicked_nick_loses_its_account(self) -> None:
        self._carol_identified_then(("op!op@users.example.org", "KICK", (self.channel, "carol")))
        self._refused_as_carol(private=True)

    def test_the_bot_leaving_forgets_the_accounts_of_its_channel(self) -> None:
        self._carol_identified_then()
        self._bot_says("PART", self.channel)
        self._refused_as_carol(private=True)
        # Back in a channel with the nick (names listed, no WHOX), nothing old is believed.
        self._bot_says("JOIN", self.channel)
        self.server_says("irc.example.org", "353", self.irc.nick, "=", self.channel, "carol")
        self._refused_as_carol(private=False)

    def test_the_next_holder_joining_the_channel_is_not_the_old_account(self) -> None:
        # Without extended-join, a JOIN does not say who is on the nick now.
        self._carol_identified_then(("carol!carol@users.example.org", "PART", (self.channel,)))
        self.server_says("carol!m@mallory.example", "JOIN", self.channel)
        self._refused_as_carol(private=False)
        self.server_says("carol!m@mallory.example", "PART", self.channel)
        # carol herself, back: a JOIN that carries her account is believed.
        self.irc.feedMsg(
            ircmsgs.IrcMsg(
                prefix="carol!carol@users.example.org",
                command="JOIN",
                args=(self.channel,),
                server_tags={"account": "carol"},
            )
        )
        self.prefix = "carol!carol@users.example.org"
        self.assertRegexp("fmn filters", r"1\. mine \(no rules\)")

    def test_the_refusal_says_how_to_be_seen(self) -> None:
        # Identified, but in no channel with the bot on a network without account-tag.
        self.as_user("dora", None)
        reply = self.assertError("fmn contexts", private=True).args[1]
        assert "identify with NickServ" in reply and "join one of my channels" in reply

    def test_with_account_tag_on_a_missing_tag_means_not_identified(self) -> None:
        self.as_user("carol", None)
        self.account_notify("carol", "carol")
        self.irc.state.capabilities_ack.add("account-tag")
        try:
            self.assertRegexp("fmn filters", f"^Error: {IDENTIFY}")
        finally:
            self.irc.state.capabilities_ack.discard("account-tag")

    def test_static_accounts_for_networks_without_services(self) -> None:
        self.as_user("Dave", None)
        self.assertRegexp("fmn filters", f"^Error: {IDENTIFY}")
        conf.supybot.plugins.Fmn.staticAccounts.setValue(["dave=dave"])
        self.assertRegexp("fmn filters", r"no filters yet")
        with self.database.begin() as session:
            assert session.scalars(select(User.name)).all() == []  # reading creates nobody
        self.assertNotError("fmn add-filter irc x")
        with self.database.begin() as session:
            assert session.scalars(select(User.name)).all() == ["dave"]


class TestAccountFormat(conftest.FmnCase):
    """``bot.account_format`` maps services accounts to Fedora accounts."""

    fmn_toml = '[bot]\naccount_format = "fas-{account}"\n'

    def test_account_is_mapped(self) -> None:
        self.assertNotError("fmn add-filter irc x")
        with self.database.begin() as session:
            assert session.scalars(select(User.name)).all() == ["fas-alice"]
        actor = preferences.Actor("fas-alice")
        with self.database.begin() as session:
            assert [f.name for f in preferences.list_filters(session, actor, "irc")] == ["x"]


class TestServicesAccountFolding(conftest.FmnCase):
    """Services accounts are folded as IRC servers fold them: ASCII only."""

    def test_capitals_are_the_same_account(self) -> None:
        self.as_user("Alice", "ALICE")
        self.assertNotError("fmn add-filter irc x")
        with self.database.begin() as session:
            assert session.scalars(select(User.name)).all() == ["alice"]

    def test_a_kelvin_sign_is_not_a_k(self) -> None:
        # "\u212aevin".lower() == "kevin": a network that allowed such an account
        # name would have let it act as kevin.
        self.as_user("kelvin", "\u212aevin")
        self.assertError("fmn add-filter irc x")
        with self.database.begin() as session:
            assert session.scalars(select(User.name)).all() == []


class TestConfiguration(conftest.FmnCase):
    """The plugin reads fmn's TOML file; a bad one stops it loading."""

    fmn_toml = 'contexts = ["email", "irc"]\n'

    def test_contexts_come_from_fmn_config(self) -> None:
        self.assertRegexp(
            "fmn contexts", r"^email on, no filters, no address; irc on, no filters, no address$"
        )
        self.assertRegexp("fmn enable push", r"choose one of: email, irc\.")

    def test_bad_config_stops_the_plugin_naming_the_key(self) -> None:
        bad = self.fmn_tmp / "bad.toml"
        bad.write_text('[bot]\nburst = "lots"\n', encoding="utf-8")
        conf.supybot.plugins.Fmn.configFile.setValue(str(bad))
        with pytest.raises(ConfigError, match=r"bot\.burst"):
            Fmn(self.irc)
        bad.write_text('[bot]\naccount_format = "{nick}"\n', encoding="utf-8")
        with pytest.raises(ConfigError, match=r"bot\.account_format"):
            Fmn(self.irc)


def test_parse_duration() -> None:
    assert parse_duration("30m").total_seconds() == 1800  # type: ignore[union-attr]
    assert parse_duration("2h").total_seconds() == 7200  # type: ignore[union-attr]
    assert parse_duration("1d").days == 1  # type: ignore[union-attr]
    assert parse_duration("1h30m").total_seconds() == 5400  # type: ignore[union-attr]
    assert parse_duration("45").total_seconds() == 2700  # type: ignore[union-attr]
    for bad in ("", "0", "0m", "m", "2x", "-5m", "1.5h", "h2", "9999999d", "²", "٣"):
        assert parse_duration(bad) is None, bad
