"""Which services account Limnoria says is on a nick, and when that can be believed.

Limnoria keeps a ``nick -> account`` table (``irc.state.nicksToAccounts``) from
``account-notify``, ``extended-join``, WHOX replies and ``account`` message tags.
It stays true only while the bot sees what happens to the nick: its ``QUIT``,
``NICK`` and ``ACCOUNT`` lines reach the bot only through a channel they share.
Limnoria does not drop the entry when the nick leaves the bot's channels
(``PART``, ``KICK``) or when the bot leaves (its own ``PART``/``KICK``), so the
entry would outlive its owner and pass to whoever takes the nick next.

So fmn believes an entry only while the nick shares a channel with the bot
(:func:`tracked_account`), and :func:`forget_after_join`,
:func:`forget_after_leave` drop entries at the moments they stop being kept true,
so that an entry is not believed again when the nick comes back.
"""

from __future__ import annotations

from typing import Any

import supybot.ircutils as ircutils

__all__ = ["forget_after_join", "forget_after_leave", "shares_channel", "tracked_account"]


def shares_channel(state: Any, nick: str, *, besides: frozenset[str] = frozenset()) -> bool:
    """Whether ``nick`` is in a channel the bot is in (other than those in ``besides``).

    ``ChannelState.users`` is an ``IrcSet``, so this is RFC 1459 case-blind.
    """
    skipped = {ircutils.toLower(name) for name in besides}
    try:
        channels = list(state.channels.items())
    except RuntimeError:
        # The delivery and command threads read this while the IRC thread may change
        # it (the bot joining or leaving): not believing the entry is the safe answer.
        return False
    return any(
        nick in channel.users for name, channel in channels if ircutils.toLower(name) not in skipped
    )


def tracked_account(state: Any, nick: str) -> str | None:
    """The services account Limnoria tracks on ``nick``, while it can be believed.

    ``""`` when the nick is known to be logged out; None when nothing trustworthy
    is known (never seen, or it shares no channel with the bot).
    """
    if not shares_channel(state, nick):
        return None
    try:
        account = state.nickToAccount(nick)
    except KeyError:
        return None
    return str(account) if account else ""


def forget_after_join(state: Any, msg: Any, bot_nick: str) -> None:
    """After a ``JOIN``: drop entries that were not kept true until now.

    When the bot joins, nobody in the new channel was followed before (their
    accounts come with Limnoria's WHOX of the channel, where the server has it).
    When someone else joins a first channel shared with the bot, their entry is
    from before (a tagged private message, an old channel) unless this JOIN
    carried the account (``extended-join``, or an ``account`` tag).
    """
    if ircutils.strEqual(msg.nick, bot_nick):
        _forget_unshared(state)
        return
    told = "extended-join" in state.capabilities_ack or "account" in (msg.server_tags or {})
    joined = frozenset(msg.args[0].split(","))
    if not told and not shares_channel(state, msg.nick, besides=joined):
        state.nicksToAccounts.pop(msg.nick, None)


def forget_after_leave(state: Any, nicks: list[str], bot_nick: str) -> None:
    """After a ``PART`` or ``KICK`` of ``nicks``: drop what the bot can no longer follow."""
    if any(ircutils.strEqual(nick, bot_nick) for nick in nicks):
        _forget_unshared(state)
        return
    for nick in nicks:
        if not shares_channel(state, nick):
            state.nicksToAccounts.pop(nick, None)


def _forget_unshared(state: Any) -> None:
    for nick in list(state.nicksToAccounts.keys()):
        if not shares_channel(state, nick):
            state.nicksToAccounts.pop(nick, None)
