"""The Fmn plugin: the ``fmn`` command group, who the sender is, and IRC delivery.

Every command parses its arguments with ``wrap()`` and the fmn converters
registered below, finds the sender's Fedora account from their IRC services
account, and makes exactly one call into :mod:`fmn_core.preferences` inside one
unit of work. The plugin holds no preference logic: validation, ownership and
the wording of every user error come from fmn's core, and :func:`fmn_errors`
(around every command and converter) is the one place where a core
``UserError`` becomes a Limnoria error reply.

Private data (addresses, confirmation codes) never goes to a channel: replies
that carry it go by private message, and ``set-address`` refuses to work in a
channel at all.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import supybot.callbacks as callbacks
import supybot.ircmsgs as ircmsgs
import supybot.ircutils as ircutils
from sqlalchemy.orm import Session
from supybot.commands import addConverter, additional, rest, wrap
from supybot.commands import any as any_of

from fmn_core import preferences
from fmn_core.accounts import (
    AccountDirectory,
    account_directory,
    account_of_irc,
    check_account_name,
    is_admin,
)
from fmn_core.config import Config
from fmn_core.db import Database
from fmn_core.destinations import FEED_CONTEXTS
from fmn_core.errors import (
    AccountDirectoryUnavailable,
    UserError,
    report_internal_error,
)
from fmn_core.models import utcnow
from fmn_core.rules import default_catalog
from fmn_core.text import irc_fold
from fmn_core.wording import count, digest_policy, explanation_lines, quiet_hours

from .delivery import IrcSender
from .irc_link import LimnoriaLink
from .nick_accounts import forget_after_join, forget_after_leave, tracked_account
from .reloading import load_keeping_last_good
from .schema_gate import SchemaGate

__all__ = ["Class", "Fmn", "fmn_command", "fmn_errors", "parse_duration", "services_account"]

NOT_IDENTIFIED = (
    "I don't know your Fedora account: identify with NickServ (your services account) "
    "first; if you are identified already, join one of my channels so that I can see it, "
    "then try again."
)
DIRECTORY_DOWN = (
    "I can't reach Fedora Accounts to tell who you are right now; try again in a few minutes."
)
ADDRESS_IN_CHANNEL = (
    "Addresses are private: send this command to me in a private message instead "
    "(/msg {bot} fmn set-address <context> <address>)."
)

#: The commands as users type them, in the order ``fmn help`` lists them.
COMMANDS: tuple[str, ...] = (
    "help",
    "contexts",
    "enable",
    "disable",
    "filters",
    "show",
    "add-filter",
    "rename-filter",
    "remove-filter",
    "add-rule",
    "remove-rule",
    "rules",
    "set-address",
    "confirm",
    "resend-code",
    "remove-address",
    "digest",
    "daily",
    "quiet",
    "delivery",
    "pending",
    "recent",
    "templates",
    "use-template",
    "preview",
    "mute",
    "unmute",
    "why",
    "mute-package",
    "mute-app",
    "pause-filter",
    "revoke-links",
)
_DISPLAY = {callbacks.canonicalName(name): name for name in COMMANDS}
#: How many preview hits a reply lists.
PREVIEW_SHOWN = 5
#: How many notifications ``fmn recent`` lists.
RECENT_SHOWN = 10


# ----------------------------------------------------------------------- identity


def _route_fmn_logs() -> None:
    """Send fmn's own log lines (``fmn_core``, ``fmn_bot``) to the bot's log files.

    Limnoria logs through the ``supybot`` logger's handlers only; without this,
    what fmn's core logs in the bot (a lockout, a bad stored message) went nowhere.
    """
    target = logging.getLogger("supybot")
    for name in ("fmn_core", "fmn_bot"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        for handler in target.handlers:
            if handler not in logger.handlers:
                logger.addHandler(handler)


def services_account(irc: Any, msg: Any, static: Sequence[str] = ()) -> str | None:
    """The sender's IRC services account, or None when they are not identified.

    The IRCv3 ``account`` message tag is the authority when the server sends it
    (``account-tag`` acknowledged: no tag means not logged in). Without it, the
    account Limnoria tracks from ``account-notify``, ``extended-join`` and WHOX
    replies, only while the sender shares a channel with the bot: elsewhere the
    bot doesn't see them quit, so the entry may be an earlier holder's of the
    nick. ``static`` (``nick=account`` pairs from the registry) is a last resort
    for networks without services; it is never consulted otherwise.
    """
    tags = msg.server_tags or {}
    if "account" in tags:
        tagged = str(tags["account"] or "")
        return tagged if tagged and tagged != "*" else None
    if "account-tag" in irc.state.capabilities_ack:
        return None  # the server tags every identified sender: no tag, no account
    tracked = tracked_account(irc.state, msg.nick)
    if tracked:
        return tracked
    wanted = ircutils.toLower(msg.nick)
    for pair in static:
        nick, _, mapped = pair.partition("=")
        if mapped and ircutils.toLower(nick) == wanted:
            return mapped
    return None


# ------------------------------------------------------------------- the wrapper


@contextmanager
def fmn_errors(log: Any, what: str, *, missing_ok: bool = False) -> Iterator[None]:
    """The one place fmn's errors become Limnoria error replies.

    A core ``UserError`` is the user's to fix: its sentence goes back as is. A
    ``callbacks.Error`` is an error reply already. Any other exception is a bug:
    it is logged with its traceback under a short reference, and the user gets
    only the reference. ``missing_ok`` lets a converter's ``IndexError`` through:
    it tells Limnoria an argument is missing, which it answers with the usage.
    """
    try:
        yield
    except UserError as exc:
        raise callbacks.Error(str(exc)) from exc
    except AccountDirectoryUnavailable as exc:
        log.warning("fmn %s: %s", what, exc)
        raise callbacks.Error(DIRECTORY_DOWN) from exc
    except callbacks.Error:
        raise
    except IndexError:
        if missing_ok:
            raise
        raise _internal_error(log, what) from None
    except Exception as exc:
        raise _internal_error(log, what) from exc


def _internal_error(log: Any, what: str) -> callbacks.Error:
    return callbacks.Error(str(report_internal_error(log, f"running fmn {what}")))


def fmn_command(specs: list[Any]) -> Callable[[Callable[..., None]], Any]:
    """``wrap()`` a command: its arguments parsed by ``specs``, its errors by :func:`fmn_errors`."""

    def decorate(function: Callable[..., None]) -> Any:
        what = _DISPLAY.get(function.__name__, function.__name__)

        @functools.wraps(function)
        def guarded(self: Any, irc: Any, msg: Any, args: list[str], *values: Any) -> None:
            with fmn_errors(self.log, what):
                function(self, irc, msg, args, *values)

        return wrap(guarded, specs)

    return decorate


Converter = Callable[..., None]


def converter(name: str) -> Callable[[Converter], Converter]:
    """Register a converter with ``addConverter``; its errors go through :func:`fmn_errors`."""

    def register(function: Converter) -> Converter:
        @functools.wraps(function)
        def guarded(irc: Any, msg: Any, args: list[str], state: Any, *extra: Any) -> None:
            with fmn_errors(state.log, f"converter {name}", missing_ok=True):
                function(irc, msg, args, state, *extra)

        addConverter(name, guarded)
        return function

    return register


# ------------------------------------------------------------------- converters
# They only parse; what a value means (a context on offer, a rule's arguments)
# is checked by fmn's core, which also words the error.


def _word(args: list[str], state: Any, what: str) -> str:
    value = args[0]
    if not value or any_space(value):
        state.errorInvalid(what, value, Raise=True)
    return value


def any_space(text: str) -> bool:
    """Whether ``text`` contains whitespace."""
    return len(text.split()) != 1


@converter("fmnContext")
def get_context(irc: Any, msg: Any, args: list[str], state: Any) -> None:
    """``fmnContext``: a delivery context's name (email, irc, push, ...)."""
    state.args.append(_word(args, state, "context").lower())
    del args[0]


@converter("fmnFilter")
def get_filter(irc: Any, msg: Any, args: list[str], state: Any) -> None:
    """``fmnFilter``: a filter's name; quote names with spaces ("my builds")."""
    if not args[0].strip():
        state.error("A filter name must not be empty.", Raise=True)
    state.args.append(" ".join(args.pop(0).split()))


@converter("fmnRule")
def get_rule(irc: Any, msg: Any, args: list[str], state: Any) -> None:
    """``fmnRule``: a rule of the catalog, by name (``fmn rules`` lists them)."""
    default_catalog().get(args[0])  # UnknownRule, worded by the catalog
    state.args.append(args.pop(0))


@converter("fmnNegation")
def get_negation(irc: Any, msg: Any, args: list[str], state: Any) -> None:
    """``fmnNegation``: an optional ``not`` before a rule."""
    if args and args[0].lower() == "not":
        del args[0]
        state.args.append(True)
    else:
        state.args.append(False)


@converter("fmnArgument")
def get_argument(irc: Any, msg: Any, args: list[str], state: Any) -> None:
    """``fmnArgument``: one ``name=value`` rule argument.

    A value may be quoted whole (``"text=build failed"``) or after the equals
    sign (``text="build failed"``), which the tokenizer leaves in pieces.
    """
    token = args.pop(0)
    name, equals, value = token.partition("=")
    if not equals or not name or any_space(name):
        args.insert(0, token)
        state.error(
            f"Rule arguments are name=value pairs (like app=koji), not {token!r}.", Raise=True
        )
    if value.startswith('"'):
        parts = [value]
        while not _closed(" ".join(parts)) and args:
            parts.append(args.pop(0))
        value = " ".join(parts)
        if _closed(value):
            value = value[1:-1]
    state.args.append((name, value))


def _closed(text: str) -> bool:
    return len(text) > 1 and text.startswith('"') and text.endswith('"')


# ASCII digits only: str.isdigit() and \d also accept "²" or "٣", which int()
# refuses or reads in ways nobody typing a duration means.
_NUMBER_RE = re.compile(r"[0-9]{1,9}")
_DURATION_RE = re.compile(
    r"(?:([0-9]{1,6})w)?(?:([0-9]{1,6})d)?(?:([0-9]{1,6})h)?(?:([0-9]{1,7})m(?:in)?)?"
)


def parse_duration(text: str) -> dt.timedelta | None:
    """``30m``, ``2h``, ``1d``, ``1w``, ``1h30m`` or bare minutes; None if malformed."""
    text = text.strip().lower()
    if _NUMBER_RE.fullmatch(text):
        minutes = int(text)
        return dt.timedelta(minutes=minutes) if 0 < minutes < 10**7 else None
    match = _DURATION_RE.fullmatch(text)
    if not text or match is None:
        return None
    weeks, days, hours, minutes = (int(g) if g else 0 for g in match.groups())
    duration = dt.timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes)
    return duration if duration > dt.timedelta(0) else None


@converter("fmnDuration")
def get_duration(irc: Any, msg: Any, args: list[str], state: Any) -> None:
    """``fmnDuration``: how long, like 30m, 2h or 1d."""
    duration = parse_duration(args[0])
    if duration is None:
        state.error(f"{args[0]!r} is not a duration; write it like 30m, 2h or 1d.", Raise=True)
    del args[0]
    state.args.append(duration)


_CLOCK_RE = re.compile(r"[0-2]?\d:[0-5]\d")


@converter("fmnClock")
def get_clock(irc: Any, msg: Any, args: list[str], state: Any) -> None:
    """``fmnClock``: a time of day ``HH:MM``, or ``off`` (None)."""
    value = args[0].lower()
    if value != "off" and not _CLOCK_RE.fullmatch(value):
        state.error(f"{args[0]!r} is not a time like 08:00, nor 'off'.", Raise=True)
    del args[0]
    state.args.append(None if value == "off" else value)


@converter("fmnWindow")
def get_window(irc: Any, msg: Any, args: list[str], state: Any) -> None:
    """``fmnWindow``: quiet hours ``HH:MM-HH:MM``, or ``off`` (None)."""
    value = args[0].lower()
    start, _, end = value.partition("-")
    if value != "off" and not (_CLOCK_RE.fullmatch(start) and _CLOCK_RE.fullmatch(end)):
        state.error(f"{args[0]!r} is not a window like 22:00-07:00, nor 'off'.", Raise=True)
    del args[0]
    state.args.append(None if value == "off" else (start, end))


@converter("fmnDelivery")
def get_delivery(irc: Any, msg: Any, args: list[str], state: Any) -> None:
    """``fmnDelivery``: instant, digest, urgent or normal."""
    value = args[0].lower()
    if value not in ("instant", "digest", "urgent", "normal"):
        state.error(f"{args[0]!r} is not one of instant, digest, urgent or normal.", Raise=True)
    del args[0]
    state.args.append(value)


@converter("fmnDigest")
def get_digest(irc: Any, msg: Any, args: list[str], state: Any) -> None:
    """``fmnDigest``: minutes between digests, or ``off``."""
    value = args[0].lower()
    minutes: int | None
    if value == "off":
        minutes = None
    elif _NUMBER_RE.fullmatch(value):
        minutes = int(value)
    else:
        state.error(f"{args[0]!r} is neither a number of minutes nor 'off'.", Raise=True)
    del args[0]
    state.args.append(minutes)


# -------------------------------------------------------------------- formatting


def overview() -> str:
    """The reply to a bare ``fmn`` or ``fmn help``."""
    return (
        "fmn manages your Fedora notifications. Commands: "
        + ", ".join(COMMANDS)
        + ". 'fmn help <command>' explains one. Each context (email, irc, ...) has "
        "filters; a filter is a list of rules that must all match."
    )


def _state(on: bool) -> str:
    return "on" if on else "off"


def _destination_text(destination: Any, private: bool) -> str:
    shown = destination.address if private else destination.masked
    if destination.confirmed:
        return f"{shown} (confirmed)"
    return f"{shown} (not confirmed yet)"


def _filter_text(view: Any) -> str:
    flags = []
    if not view.active:
        flags.append("off")
    if view.oneshot:
        flags.append("one-shot")
    if view.delivery != "instant":
        flags.append(view.delivery)
    if view.urgent:
        flags.append("urgent")
    flags.append(count(len(view.rules), "rule"))
    return f"{view.position}. {_quoted(view.name)} ({', '.join(flags)})"


def _rule_detail(spec: Any) -> str:
    text = f"{spec.name}: {spec.title}. {spec.help}"
    if spec.parameters:
        described = "; ".join(
            f"{p.name}= {p.help}"
            + (f" (one of {', '.join(p.choices)})" if p.choices else "")
            + ("" if p.required else " (optional)")
            for p in spec.parameters
        )
        text += f" Arguments: {described}."
    return text


# ------------------------------------------------------------------- the plugin


class Fmn(callbacks.Plugin):  # type: ignore[misc]
    """Manage your Fedora notifications from IRC: type ``fmn help``.

    Commands act on the Fedora account of your IRC services account, so
    identify with NickServ first (on networks that don't tag messages with it,
    also share a channel with the bot). The bot also delivers your ``irc`` context
    as private messages to the nick you confirm with ``fmn set-address irc``.
    """

    threaded = True

    def __init__(self, irc: Any) -> None:
        super().__init__(irc)
        path = self.registryValue("configFile") or None
        _route_fmn_logs()
        # A bad file (bot.account_format included) raises ConfigError naming the key,
        # unless an earlier load of the same file worked: then a reload keeps that one.
        loaded = load_keeping_last_good(path)
        self.fmn_config: Config = loaded.config
        #: What was wrong with the file at the last reload (None: it loaded).
        self.config_problem = loaded.problem
        if loaded.problem is not None:
            self.log.error(
                "fmn: the configuration file did not load, so the Fmn plugin keeps the "
                "configuration it had: %s",
                loaded.problem,
            )
        if self.registryValue("staticAccounts"):
            self.log.warning(
                "supybot.plugins.Fmn.staticAccounts is set: those nicks count as "
                "identified without services. Never do this on a public network."
            )
        self.database = Database(self.fmn_config)
        #: Commands and delivery wait while the schema is one this fmn can't use.
        self.schema = SchemaGate(self.database.engine, self.log)
        self.schema.check()
        self.directory: AccountDirectory = account_directory(
            self.fmn_config, self.database.sessionmaker
        )
        if self.fmn_config.bot.identity == "directory" and self.fmn_config.accounts.provider in (
            "local",
            "fas2",
        ):
            self.log.warning(
                "bot.identity is 'directory' but accounts.provider %r can't map IRC accounts "
                "to Fedora accounts: nobody can use the bot. Use the 'fasjson' provider, or "
                "bot.identity = 'services-account' on a network whose accounts are Fedora's.",
                self.fmn_config.accounts.provider,
            )
        self.link = LimnoriaLink(
            network=lambda: str(self.registryValue("network")),
            fedora_name=self.fedora_name,
            log=self.log,
        )
        self.delivery = IrcSender(
            self.database,
            self.link,
            bot_nick=self.link.bot_nick,
            log=self.log,
            schema_ready=self.schema.ready,
        )
        self.fmn.plugin = self
        if self.registryValue("deliver"):
            self.delivery.start()

    def die(self) -> None:
        """Stop delivering (claimed rows are given back) and close the database."""
        self.delivery.stop()
        self.database.dispose()
        super().die()

    # ---------------------------------------------------------------- identity

    def fedora_name(self, account: str) -> str | None:
        """The Fedora account an IRC services account is, for delivery's holder check.

        ``""`` when it is no Fedora account (unmapped or claimed by several
        profiles: nothing is delivered to a nick it holds), ``None`` when that
        can't be told now (the directory is down).
        """
        try:
            return self.account_name(account)
        except UserError:
            return ""
        except AccountDirectoryUnavailable:
            return None

    def account_name(self, account: str) -> str:
        """The Fedora account of an IRC services account, per ``bot.identity``.

        ``directory``: the one account whose Fedora Accounts profile lists it.
        ``services-account``: ``bot.account_format`` applied to it, lowercased
        (Fedora account names are). A ``UserError`` says why there is none.
        """
        bot = self.fmn_config.bot
        if bot.identity == "services-account":
            # irc_fold, not str.lower: only ASCII capitals become small (a Kelvin sign
            # stays one, and the name check refuses it), as the IRC server folds.
            return check_account_name(bot.account_format.format(account=irc_fold(account)))
        return account_of_irc(self.directory, account, bot.irc_servers)

    def actor(self, irc: Any, msg: Any) -> preferences.Actor:
        """Who sent ``msg``, as fmn's core sees them; an error reply if unknown.

        Admin rights come only from the directory (``admins`` names and the
        ``admin_group`` members, checked on the mapped Fedora account), and never
        with ``bot.identity = "services-account"``, where the account is only a
        name the IRC network vouches for.
        """
        account = services_account(irc, msg, self.registryValue("staticAccounts"))
        if account is None:
            raise callbacks.Error(NOT_IDENTIFIED)
        name = self.account_name(account)
        admin = self.fmn_config.bot.identity == "directory" and is_admin(
            self.fmn_config, self.directory, name
        )
        return preferences.Actor(name=name, is_admin=admin, irc_account=account)

    @contextmanager
    def unit(self, irc: Any, msg: Any) -> Iterator[tuple[Session, preferences.Actor]]:
        """One bot command's unit of work, as the identified sender."""
        self.schema.require()
        actor = self.actor(irc, msg)
        # A person is waiting: a database another change holds locked is refused as
        # busy within the gateway's bound, as in the TUI, not after SQLite's long wait.
        with self.database.person_waiting() as session:
            # A new account's first contact gives it the operator's default filters;
            # then what fmn has to tell the user once (an exclusion that ended), in private.
            notices = preferences.first_contact(session, actor)
            notices += preferences.take_notices(session, actor)
        for notice in notices:
            irc.queueMsg(ircmsgs.privmsg(msg.nick, f"fmn: {notice}"))
        with self.database.person_waiting() as session:
            yield session, actor

    # ------------------------------------------------------------- IRC events

    def do303(self, irc: Any, msg: Any) -> None:
        """RPL_ISON: the nicks of our last ISON question that are online."""
        self.link.answer(irc, msg.args[-1].split())

    def do354(self, irc: Any, msg: Any) -> None:
        """RPL_WHOSPCRPL: a WHOX reply; those with fmn's token name a nick's account."""
        self.link.who_reply(irc, msg.args)

    def do315(self, irc: Any, msg: Any) -> None:
        """RPL_ENDOFWHO: the end of a WHO, ours (a nick) or Limnoria's (a channel)."""
        self.link.who_end(irc, msg.args)

    # Limnoria's state has updated the channels when these run.

    def doJoin(self, irc: Any, msg: Any) -> None:
        """Forget a services account the bot did not keep true up to this JOIN."""
        forget_after_join(irc.state, msg, irc.nick)

    def doPart(self, irc: Any, msg: Any) -> None:
        """Forget the services account of a nick the bot no longer shares a channel with."""
        forget_after_leave(irc.state, [msg.nick], irc.nick)

    def doKick(self, irc: Any, msg: Any) -> None:
        """Like :meth:`doPart`, for the kicked nicks."""
        forget_after_leave(irc.state, msg.args[1].split(","), irc.nick)

    def getCommandHelp(self, command: list[str], simpleSyntax: bool | None = None) -> str:
        """Limnoria's help and usage replies, with the names users type (``add-filter``)."""
        text = str(super().getCommandHelp(command, simpleSyntax))
        if command and command[-1] in _DISPLAY:
            typed = " ".join([*command[:-1], _DISPLAY[command[-1]]])
            text = text.replace(callbacks.formatCommand(command), typed, 1)
        return text

    def inFilter(self, irc: Any, msg: Any) -> Any:
        """An ``fmn`` command Limnoria can't split (unbalanced quotes or brackets):
        say what is wrong instead of Limnoria's generic "An error has occurred"."""
        if msg.command != "PRIVMSG":
            return msg
        text = callbacks.addressed(irc, msg)
        if not text or text.split(None, 1)[0].lower() != "fmn":
            return msg
        try:
            callbacks.tokenize(text, channel=msg.channel, network=irc.network)
        except SyntaxError as exc:
            problem = str(exc).rstrip(".") or "it can't be split into words"
            answer = (
                f"I can't read that command: {problem}. Quote a value that has spaces "
                'with double quotes, and close every quote: fmn add-filter irc "my builds"'
            )
            target = msg.channel or msg.nick
            line = f"{msg.nick}: {answer}" if msg.channel else answer
            irc.queueMsg(ircmsgs.privmsg(target, line))
            return None
        return msg

    def invalidCommand(self, irc: Any, msg: Any, tokens: list[str]) -> None:
        """``fmn <something unknown>``: say what the commands are."""
        if not tokens or callbacks.canonicalName(tokens[0]) != "fmn":
            return
        if len(tokens) == 1:
            irc.reply(overview())
            return
        irc.error(
            f"'fmn {tokens[1]}' is not an fmn command. Commands: {', '.join(COMMANDS)}. "
            "'fmn help <command>' explains one."
        )

    # ------------------------------------------------------------ the commands

    class fmn(callbacks.Commands):  # type: ignore[misc]
        """Your Fedora notifications: ``fmn help`` lists the commands."""

        plugin: Fmn

        @fmn_command([additional("text")])
        def help(self, irc: Any, msg: Any, args: list[str], command: str | None) -> None:
            """[<command>]

            Lists the fmn commands, or explains one of them, for example
            "fmn help add-rule".
            """
            if command is None:
                irc.reply(overview())
                return
            words = command.split()
            if words and callbacks.canonicalName(words[0]) == "fmn":
                words = words[1:]
            name = callbacks.canonicalName(words[0]) if words else ""
            if name not in _DISPLAY:
                raise callbacks.Error(
                    f"There is no fmn command {command!r}; the commands are: {', '.join(COMMANDS)}."
                )
            method = getattr(self, name)
            lines = [line.strip() for line in (method.__doc__ or "").strip().splitlines()]
            usage, text = lines[0], " ".join(line for line in lines[1:] if line)
            irc.reply(f"fmn {_DISPLAY[name]} {usage} -- {text}".replace("  ", " "))

        @fmn_command([])
        def contexts(self, irc: Any, msg: Any, args: list[str]) -> None:
            """(no arguments)

            Shows each delivery context: on or off, its filters, digest and
            addresses (shown in full only in a private message).
            """
            with self.plugin.unit(irc, msg) as (session, actor):
                views = preferences.list_contexts(session, actor)
            private = not msg.channel
            parts = []
            for view in views:
                text = (
                    f"{view.context} {_state(view.enabled)}, {count(len(view.filters), 'filter')}"
                )
                if view.digest_minutes or view.digest_count or view.digest_at:
                    text += f", digest {digest_policy(view)}"
                if view.quiet_from is not None:
                    text += (
                        ", quiet "
                        f"{quiet_hours(view.quiet_from, view.quiet_to, view.quiet_timezone)}"
                    )
                if view.destinations:
                    shown = ", ".join(_destination_text(d, private) for d in view.destinations)
                    text += f", to {shown}"
                else:
                    text += ", no address"
                parts.append(text)
            muted = next((v.muted_until for v in views if v.muted_until), None)
            if muted is not None and muted > utcnow():
                parts.append(f"muted until {muted:%Y-%m-%d %H:%M} UTC")
            irc.reply("; ".join(parts) if parts else "No delivery context is on offer here.")

        @fmn_command(["fmnContext"])
        def enable(self, irc: Any, msg: Any, args: list[str], context: str) -> None:
            """<context>

            Turns a delivery context on (email, irc, push, ...).
            """
            with self.plugin.unit(irc, msg) as (session, actor):
                view = preferences.set_context_enabled(session, actor, context, True)
            irc.reply(f"{view.context} is on.")

        @fmn_command(["fmnContext"])
        def disable(self, irc: Any, msg: Any, args: list[str], context: str) -> None:
            """<context>

            Turns a delivery context off; its filters are kept.
            """
            with self.plugin.unit(irc, msg) as (session, actor):
                view = preferences.set_context_enabled(session, actor, context, False)
            irc.reply(f"{view.context} is off.")

        @fmn_command([additional("fmnContext")])
        def filters(self, irc: Any, msg: Any, args: list[str], context: str | None) -> None:
            """[<context>]

            Lists your filters in one context, or in every context.
            """
            with self.plugin.unit(irc, msg) as (session, actor):
                if context is not None:
                    views = preferences.list_filters(session, actor, context)
                    grouped = [(context, views)]
                else:
                    grouped = [
                        (v.context, list(v.filters))
                        for v in preferences.list_contexts(session, actor)
                    ]
            parts = []
            for name, views in grouped:
                if views:
                    parts.append(f"{name}: " + ", ".join(_filter_text(v) for v in views))
                elif context is not None:
                    parts.append(f"{name}: no filters yet (fmn add-filter {name} <name>)")
            irc.reply(
                "; ".join(parts)
                if parts
                else "You have no filters yet: fmn add-filter <context> <name>."
            )

        @fmn_command(["fmnContext", rest("fmnFilter")])
        def show(self, irc: Any, msg: Any, args: list[str], context: str, name: str) -> None:
            """<context> <filter>

            Shows one filter and its numbered rules.
            """
            with self.plugin.unit(irc, msg) as (session, actor):
                view = preferences.get_filter(session, actor, context, name)
            rules = (
                "; ".join(f"{r.number}. {r.text}" for r in view.rules)
                or "no rules (matches nothing)"
            )
            irc.reply(f"{context} {_filter_text(view)}: {rules}")

        @fmn_command(["fmnContext", rest("fmnFilter")])
        def addfilter(self, irc: Any, msg: Any, args: list[str], context: str, name: str) -> None:
            """<context> <name>

            Adds an empty filter to a context; then give it rules with
            "fmn add-rule". Quote names with spaces: "my builds".
            """
            with self.plugin.unit(irc, msg) as (session, actor):
                view = preferences.add_filter(session, actor, context, name)
            irc.reply(
                f"Added filter {view.name!r} to {context}. Give it rules: "
                f"fmn add-rule {context} {_quoted(view.name)} <rule> [name=value ...]"
            )

        @fmn_command(["fmnContext", "fmnFilter", rest("fmnFilter")])
        def renamefilter(
            self, irc: Any, msg: Any, args: list[str], context: str, name: str, new_name: str
        ) -> None:
            """<context> <filter> <new name>

            Renames a filter. Quote names with spaces: "my builds".
            """
            with self.plugin.unit(irc, msg) as (session, actor):
                view = preferences.rename_filter(session, actor, context, name, new_name)
            irc.reply(f"Renamed {name!r} to {view.name!r} in {context}.")

        @fmn_command(["fmnContext", rest("fmnFilter")])
        def removefilter(
            self, irc: Any, msg: Any, args: list[str], context: str, name: str
        ) -> None:
            """<context> <filter>

            Removes a filter and its rules.
            """
            with self.plugin.unit(irc, msg) as (session, actor):
                preferences.remove_filter(session, actor, context, name)
            irc.reply(f"Removed filter {name!r} from {context}.")

        @fmn_command(["fmnContext", "fmnFilter", "fmnNegation", "fmnRule", any_of("fmnArgument")])
        def addrule(
            self,
            irc: Any,
            msg: Any,
            args: list[str],
            context: str,
            name: str,
            negated: bool,
            rule: str,
            arguments: list[tuple[str, str]],
        ) -> None:
            """<context> <filter> [not] <rule> [name=value ...]

            Adds a rule to a filter; all rules of a filter must match. "not"
            inverts the rule. "fmn rules" lists the rules and their arguments,
            e.g. fmn add-rule irc builds app_is app=koji. Quote values with
            spaces: "text=build failed".
            """
            values: dict[str, str] = {}
            for key, value in arguments:
                if key in values:
                    raise callbacks.Error(f"{key}= is given twice.")
                values[key] = value
            with self.plugin.unit(irc, msg) as (session, actor):
                view = preferences.add_rule(
                    session, actor, context, name, rule, values, negated=negated
                )
            added = view.rules[-1] if view.rules else None
            text = f"{added.number}. {added.text}" if added else rule
            irc.reply(f"Filter {view.name!r} in {context} now has rule {text}.")

        @fmn_command(["fmnContext", "fmnFilter", "positiveInt"])
        def removerule(
            self, irc: Any, msg: Any, args: list[str], context: str, name: str, number: int
        ) -> None:
            """<context> <filter> <rule number>

            Removes a rule from a filter; "fmn show" numbers the rules.
            """
            with self.plugin.unit(irc, msg) as (session, actor):
                view = preferences.remove_rule(session, actor, context, name, number)
            irc.reply(f"Removed rule {number} from {view.name!r}; {len(view.rules)} left.")

        @fmn_command([additional("text", "")])
        def rules(self, irc: Any, msg: Any, args: list[str], words: str) -> None:
            """[<words>]

            Lists the rules you can use in filters, or those whose name or help
            contains all the words; one rule's name explains it in full.
            """
            catalog = default_catalog()
            if words and words.strip() in catalog:
                irc.reply(_rule_detail(catalog.get(words.strip())))
                return
            found = catalog.search(words)
            if not found:
                raise callbacks.Error(f"No rule matches {words!r}; 'fmn rules' lists them all.")
            if len(found) == 1:
                irc.reply(_rule_detail(found[0]))
                return
            irc.reply(
                f"{len(found)} rules: "
                + ", ".join(spec.name for spec in found)
                + ". 'fmn rules <name>' explains one; 'fmn rules <words>' searches."
            )

        @fmn_command(["fmnContext", additional(rest("something"), "")])
        def setaddress(
            self, irc: Any, msg: Any, args: list[str], context: str, address: str
        ) -> None:
            """<context> <address>

            Sets where a context delivers: an email address, your IRC nick, a
            Matrix ID, a push URL (rss and live need no address: fmn makes a
            secret one). Only in a private message. You get a code to confirm
            with "fmn confirm <code>", except for your Fedora profile's emails
            and Matrix IDs and your own IRC account; without an address, lists
            those.
            """
            if msg.channel:
                raise callbacks.Error(ADDRESS_IN_CHANNEL.format(bot=irc.nick))
            if context == "irc" and address and ircutils.strEqual(address.strip(), irc.nick):
                raise callbacks.Error(
                    f"{irc.nick} is my own nick: I can't deliver to myself. Give your own "
                    f"nick: fmn set-address irc {msg.nick}"
                )
            if not address and context not in FEED_CONTEXTS:
                with self.plugin.unit(irc, msg) as (session, actor):
                    offered = preferences.profile_addresses(session, actor).get(context, ())
                if offered:
                    irc.reply(
                        f"From your Fedora profile (no code needed): {', '.join(offered)}. "
                        f"Send: fmn set-address {context} <one of them>",
                        private=True,
                    )
                    return
            with self.plugin.unit(irc, msg) as (session, actor):
                pending = preferences.set_destination(session, actor, context, address)
            destination = pending.destination
            if destination.confirmed:
                where = f" Give your feed reader: {destination.url}" if destination.url else ""
                irc.reply(
                    f"{context} now delivers to {destination.address} (keep it secret).{where}",
                    private=True,
                )
                return
            if context == "irc":
                self.plugin.delivery.wake()
                text = (
                    f"I'm sending a confirmation code to {destination.address} by private message"
                )
            else:
                text = f"A confirmation code is on its way to {destination.address}"
            irc.reply(f"{text}; then send me: fmn confirm <code>", private=True)

        @fmn_command(["somethingWithoutSpaces"])
        def confirm(self, irc: Any, msg: Any, args: list[str], code: str) -> None:
            """<code>

            Confirms an address with the code fmn sent to it.
            """
            with self.plugin.unit(irc, msg) as (session, actor):
                result = preferences.confirm(session, actor, code)
            # The unit has committed whatever the outcome (a wrong guess is counted).
            refusal = result.error()
            if refusal is not None:
                raise refusal
            destination = result.destination
            assert destination is not None  # a confirmed result carries its destination
            shown = destination.masked if msg.channel else destination.address
            irc.reply(f"Confirmed: {destination.context} delivers to {shown}.", private=True)

        @fmn_command(["fmnContext", "fmnDigest", additional("nonNegativeInt", 0)])
        def digest(
            self, irc: Any, msg: Any, args: list[str], context: str, minutes: int | None, count: int
        ) -> None:
            """<context> <minutes>|off [<count>]

            Collects a context's notifications into one message at most every
            <minutes> (and at once after <count> of them); "off" sends each
            as it comes.
            """
            if minutes is None:
                minutes, count = 0, 0
            with self.plugin.unit(irc, msg) as (session, actor):
                view = preferences.set_digest(session, actor, context, minutes, count)
            irc.reply(f"{view.context}: digest {digest_policy(view)}.")

        @fmn_command(["fmnContext", "fmnClock", additional("somethingWithoutSpaces")])
        def daily(
            self,
            irc: Any,
            msg: Any,
            args: list[str],
            context: str,
            at: str | None,
            timezone: str | None,
        ) -> None:
            """<context> <HH:MM>|off [<time zone>]

            Sends the context's digest once a day at a local time, for example
            "fmn daily email 08:00 Europe/Prague"; "off" stops the daily one.
            """
            with self.plugin.unit(irc, msg) as (session, actor):
                view = preferences.set_daily_digest(session, actor, context, at, timezone)
            irc.reply(f"{view.context}: digest {digest_policy(view)}.")

        @fmn_command(["fmnContext", "fmnWindow", additional("somethingWithoutSpaces")])
        def quiet(
            self,
            irc: Any,
            msg: Any,
            args: list[str],
            context: str,
            window: tuple[str, str] | None,
            timezone: str | None,
        ) -> None:
            """<context> <HH:MM-HH:MM>|off [<time zone>]

            Quiet hours: instant notifications wait until the window ends (then
            come as one digest); urgent filters still come at once. Example:
            "fmn quiet irc 22:00-07:00 Europe/Prague".
            """
            start, end = window if window is not None else (None, None)
            with self.plugin.unit(irc, msg) as (session, actor):
                view = preferences.set_quiet_hours(session, actor, context, start, end, timezone)
            shown = quiet_hours(view.quiet_from, view.quiet_to, view.quiet_timezone)
            irc.reply(f"{view.context}: quiet hours {shown}.")

        @fmn_command(["fmnContext", "fmnDelivery", rest("fmnFilter")])
        def delivery(
            self, irc: Any, msg: Any, args: list[str], context: str, mode: str, name: str
        ) -> None:
            """<context> instant|digest|urgent|normal <filter>

            How a filter's matches travel: "instant" (at once), "digest" (in the
            context's next digest), "urgent" (through quiet hours) or "normal".
            """
            with self.plugin.unit(irc, msg) as (session, actor):
                if mode in ("instant", "digest"):
                    view = preferences.set_filter_delivery(session, actor, context, name, mode)
                else:
                    view = preferences.set_filter_urgent(
                        session, actor, context, name, mode == "urgent"
                    )
            irc.reply(f"{context} {_filter_text(view)}.")

        @fmn_command([additional("fmnContext")])
        def pending(self, irc: Any, msg: Any, args: list[str], context: str | None) -> None:
            """[<context>]

            Lists your notifications that have not been sent yet, why each
            waits and until when.
            """
            with self.plugin.unit(irc, msg) as (session, actor):
                rows = preferences.pending_notifications(session, actor, context=context)
            if not rows:
                irc.reply("Nothing is waiting: every notification has been sent.")
                return
            irc.reply(
                f"{count(len(rows), 'notification')} waiting: "
                + "; ".join(f"{r.context}: {r.summary} ({r.reason})" for r in rows)
            )

        @fmn_command([additional("fmnContext")])
        def recent(self, irc: Any, msg: Any, args: list[str], context: str | None) -> None:
            """[<context>]

            Lists your latest notifications, sent or not (what an IRC burst
            summed up as a count, too).
            """
            with self.plugin.unit(irc, msg) as (session, actor):
                rows = preferences.recent_notifications(
                    session, actor, context=context, limit=RECENT_SHOWN
                )
            if not rows:
                irc.reply("You have no notifications yet.")
                return
            irc.reply(
                "; ".join(
                    f"{r.created_at:%m-%d %H:%M} {r.context}: {r.summary or r.topic}"
                    + ("" if r.state == "sent" else f" ({r.reason})")
                    for r in rows
                )
            )

        @fmn_command(["fmnContext", additional("somethingWithoutSpaces", "")])
        def removeaddress(
            self, irc: Any, msg: Any, args: list[str], context: str, address: str
        ) -> None:
            """<context> [<address>]

            Removes an address from a context (a mistyped one, say); without an
            address, removes the newest one that is not confirmed.
            """
            with self.plugin.unit(irc, msg) as (session, actor):
                view = preferences.get_context(session, actor, context)
                candidates = [
                    d
                    for d in view.destinations
                    if (d.address.casefold() == address.casefold() if address else not d.confirmed)
                ]
                if not candidates:
                    # The typed address is not repeated: this may be a channel.
                    what = "such address" if address else "unconfirmed address"
                    raise callbacks.Error(
                        f"{context} has no {what}; 'fmn contexts' lists your addresses."
                    )
                chosen = max(candidates, key=lambda d: d.id)
                preferences.remove_destination(session, actor, context, chosen.id)
            shown = chosen.masked if msg.channel else chosen.address
            irc.reply(f"Removed {shown} from {context}.")

        @fmn_command(["fmnContext"])
        def resendcode(self, irc: Any, msg: Any, args: list[str], context: str) -> None:
            """<context>

            Sends a new confirmation code for the context's newest address that
            is not confirmed yet (the old code stops working).
            """
            with self.plugin.unit(irc, msg) as (session, actor):
                pending = preferences.resend_confirmation(session, actor, context)
            if context == "irc":
                self.plugin.delivery.wake()
            shown = pending.destination.masked if msg.channel else pending.destination.address
            irc.reply(f"A new code is on its way to {shown}; then send me: fmn confirm <code>")

        @fmn_command([])
        def templates(self, irc: Any, msg: Any, args: list[str]) -> None:
            """(no arguments)

            Lists the starting profiles "fmn use-template" can copy into a context.
            """
            self.plugin.schema.require()
            with self.plugin.database.person_waiting(read_only=True) as session:
                views = preferences.list_templates(session)
            if not views:
                raise callbacks.Error("There are no templates here.")
            irc.reply(
                "; ".join(f"{v.name}: {v.title} ({count(len(v.filters), 'filter')})" for v in views)
                + ". fmn use-template <template> <context> copies one."
            )

        @fmn_command(["somethingWithoutSpaces", "fmnContext"])
        def usetemplate(
            self, irc: Any, msg: Any, args: list[str], template: str, context: str
        ) -> None:
            """<template> <context>

            Copies a template's filters into a context ("fmn templates" lists them).
            """
            with self.plugin.unit(irc, msg) as (session, actor):
                views = preferences.use_template(session, actor, template, context)
            names = ", ".join(repr(v.name) for v in views)
            irc.reply(f"{context} now has the filters of {template}: {names}.")

        @fmn_command(["fmnContext", additional(rest("fmnFilter"))])
        def preview(
            self, irc: Any, msg: Any, args: list[str], context: str, name: str | None
        ) -> None:
            """<context> [<filter>]

            Shows which recent messages a filter would have notified you about;
            without a filter, how many each filter of the context matches.
            """
            with self.plugin.unit(irc, msg) as (session, actor):
                if name is not None:
                    results = [(name, preferences.preview(session, actor, context, name))]
                else:
                    results = [
                        (view.name, preferences.preview(session, actor, context, view.name))
                        for view in preferences.list_filters(session, actor, context)
                    ]
            if not results:
                raise callbacks.Error(f"{context} has no filters yet; add one with fmn add-filter.")
            parts = []
            if len(results) > 1 or name is None:
                parts.append(", ".join(f"{n!r} {len(hits)}" for n, hits in results))
            seen: dict[str, str] = {}
            for _name, hits in results:
                for hit in hits:
                    seen.setdefault(hit.message_id, hit.summary or hit.topic)
            if not seen:
                what = repr(name) if name is not None else f"any filter of {context}"
                irc.reply(f"No recent message matches {what}.")
                return
            shown = "; ".join(list(seen.values())[:PREVIEW_SHOWN])
            more = f" (and {len(seen) - PREVIEW_SHOWN} more)" if len(seen) > PREVIEW_SHOWN else ""
            head = f"{len(seen)} recent message(s) match"
            if parts:
                head += f" ({parts[0]})"
            irc.reply(f"{head}: {shown}{more}")

        @fmn_command(["fmnDuration"])
        def mute(self, irc: Any, msg: Any, args: list[str], duration: dt.timedelta) -> None:
            """<duration>

            Holds all your notifications back (nothing is lost) for a while:
            30m, 2h, 1d. "fmn unmute" ends it early.
            """
            with self.plugin.unit(irc, msg) as (session, actor):
                until = preferences.mute(session, actor, duration)
            irc.reply(f"Muted until {until:%Y-%m-%d %H:%M} UTC; fmn unmute ends it early.")

        @fmn_command([])
        def unmute(self, irc: Any, msg: Any, args: list[str]) -> None:
            """(no arguments)

            Ends a mute: held notifications go out now.
            """
            with self.plugin.unit(irc, msg) as (session, actor):
                preferences.unmute(session, actor)
            irc.reply("Unmuted.")

        @fmn_command([rest("something")])
        def why(self, irc: Any, msg: Any, args: list[str], message: str) -> None:
            """<message id>|<datagrepper link>

            Explains, context by context, why you got a message or why not: the
            filter that sent it and where, or each filter's first rule that did
            not hold. Always answered in a private message.
            """
            with self.plugin.unit(irc, msg) as (session, actor):
                found = preferences.explain(session, actor, message)
            # Limnoria pages a long reply ("more"), as it does every long reply.
            irc.reply(" | ".join(explanation_lines(found)), private=True)

        @fmn_command(["somethingWithoutSpaces", additional("somethingWithoutSpaces")])
        def mutepackage(
            self, irc: Any, msg: Any, args: list[str], message: str, package: str | None
        ) -> None:
            """<message id> [<package>]

            Excludes a package of a message you were notified about from the
            filter that sent it ("not package_involved package=..."); name the
            package when the message is about several.
            """
            self._act(irc, msg, message, "mute-package", package)

        @fmn_command(["somethingWithoutSpaces"])
        def muteapp(self, irc: Any, msg: Any, args: list[str], message: str) -> None:
            """<message id>

            Excludes the application of a message you were notified about from
            the filter that sent it ("not app_is app=...").
            """
            self._act(irc, msg, message, "mute-app", None)

        @fmn_command(["somethingWithoutSpaces"])
        def pausefilter(self, irc: Any, msg: Any, args: list[str], message: str) -> None:
            """<message id>

            Pauses the filter that sent you this message for 7 days.
            """
            self._act(irc, msg, message, "pause-filter", None)

        @fmn_command([])
        def revokelinks(self, irc: Any, msg: Any, args: list[str]) -> None:
            """(no arguments)

            Makes every one-click link fmn has mailed you so far ("mute this
            package", ...) stop working; newer notifications carry new ones.
            """
            with self.plugin.unit(irc, msg) as (session, actor):
                preferences.revoke_action_links(session, actor)
            irc.reply("Done: the links fmn sent you before now are refused.", private=True)

        def _act(self, irc: Any, msg: Any, message: str, action: str, choice: str | None) -> None:
            with self.plugin.unit(irc, msg) as (session, actor):
                written = preferences.act_on_notification(
                    session, actor, message, action, choice=choice
                )
            irc.reply("Done: " + "; ".join(written) + ".", private=True)


def _quoted(name: str) -> str:
    return f'"{name}"' if any_space(name) else name


Class = Fmn
