"""The bot's side of IRC for delivery: who is online, which account holds a nick, PRIVMSG.

:class:`IrcLink` is the seam :class:`fmn_bot.delivery.IrcSender` sends through
(tests give it a fake); :class:`LimnoriaLink` is the real one, on the Limnoria
connection the plugin runs in.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeAlias

import supybot.ircmsgs as ircmsgs
import supybot.ircutils as ircutils
import supybot.world as world

from .nick_accounts import tracked_account

__all__ = [
    "ISON_TIMEOUT_SECONDS",
    "UNCHECKED",
    "WHOX_TOKEN",
    "WHO_TIMEOUT_SECONDS",
    "Holder",
    "IrcLink",
    "LimnoriaLink",
    "Unchecked",
]

#: How long a presence question (ISON) may go unanswered.
ISON_TIMEOUT_SECONDS = 10.0
#: How long the answer to a WHOX question (a nick's services account) may take, counted
#: from the answer before it.
WHO_TIMEOUT_SECONDS = 10.0
#: The token of fmn's WHOX questions (WHOX tokens are up to three digits). Not Limnoria's
#: ``1``: its own ``do354`` takes those replies for its channel WHO and ignores others.
WHOX_TOKEN = "727"


class Unchecked(enum.Enum):
    """The type of :data:`UNCHECKED`."""

    UNCHECKED = "unchecked"


#: The holder of a nick on a network whose server has no WHOX: the bot can't ask for
#: services accounts there (such networks have none to ask about, ngircd say), so the
#: one on the nick gets its lines, as anyone on a nick does on a network without services.
UNCHECKED: Final = Unchecked.UNCHECKED

#: Who holds a nick, for delivery: the Fedora account identified on it; ``""`` for
#: nobody's (logged out, not online, or a services account that is no Fedora
#: account); None when that can't be told now (no answer, the directory is down);
#: or :data:`UNCHECKED`.
Holder: TypeAlias = str | Unchecked | None


class IrcLink(Protocol):
    """What delivery needs from the IRC connection."""

    def online(self, nicks: Sequence[str]) -> frozenset[str] | None:
        """The nicks (as given) that are on the network now; None if that can't be told."""
        ...

    def holders(self, nicks: Sequence[str]) -> dict[str, Holder]:
        """Who holds each of ``nicks`` (as given) now; see :data:`Holder`."""
        ...

    def send(self, nick: str, text: str) -> bool:
        """Queue one private message; False when it could not be queued."""
        ...


@dataclass
class _IsonQuery:
    nicks: tuple[str, ...]
    done: threading.Event = field(default_factory=threading.Event)
    found: frozenset[str] = frozenset()


@dataclass(eq=False)
class _WhoQuery:
    nick: str
    done: threading.Event = field(default_factory=threading.Event)
    #: The account field of the ``354`` reply (``0``: logged out); None: no reply, so
    #: nobody is on the nick.
    account: str | None = None


class LimnoriaLink:
    """IrcSender's view of IRC: ISON for presence, services accounts, PRIVMSG.

    Presence is asked with ``ISON`` (RFC 1459, answered by every server): it
    sees a nick anywhere on the network, not only in channels the bot shares.
    Replies come back in order, so each ``303`` answers the oldest question.

    The services account on a nick is what Limnoria tracks while the nick shares
    a channel with the bot (:func:`fmn_bot.nick_accounts.tracked_account`);
    otherwise, where the server has WHOX, it is asked: ``WHO <nick> %tna,<token>``,
    answered by a ``354`` per user on the nick, then a ``315`` naming the nick.
    """

    def __init__(
        self,
        *,
        network: Callable[[], str],
        fedora_name: Callable[[str], str | None],
        log: logging.Logger,
    ) -> None:
        self.network = network
        self.fedora_name = fedora_name
        self.log = log
        self._lock = threading.Lock()
        self._waiting: deque[_IsonQuery] = deque()
        self._who_waiting: list[_WhoQuery] = []
        #: How long each WHOX answer may take (see :data:`WHO_TIMEOUT_SECONDS`).
        self.who_timeout = WHO_TIMEOUT_SECONDS

    def irc(self) -> Any | None:
        """The connection notifications go out on, when it is up.

        Up means registered with the server (its MOTD is over): lines queued
        before that, or on a dying connection, would be lost with its queue.
        """
        wanted = self.network()
        for irc in world.ircs:
            if irc.zombie or not irc.afterConnect:
                continue
            if not wanted or irc.network == wanted:
                return irc
        return None

    def online(self, nicks: Sequence[str]) -> frozenset[str] | None:
        """See :meth:`IrcLink.online`."""
        irc = self.irc()
        if irc is None:
            return None
        queries = []
        for chunk in _chunks(nicks):
            query = _IsonQuery(tuple(chunk))
            with self._lock:
                self._waiting.append(query)
            if not irc.queueMsg(ircmsgs.IrcMsg(command="ISON", args=tuple(chunk))):
                self._forget(query)
                return None
            queries.append(query)
        found: set[str] = set()
        for query in queries:
            if not query.done.wait(ISON_TIMEOUT_SECONDS):
                self._forget(query)
                self.log.warning("no ISON reply within %s s", ISON_TIMEOUT_SECONDS)
                return None
            found |= query.found
        return frozenset(found)

    def _forget(self, query: _IsonQuery) -> None:
        with self._lock:
            if query in self._waiting:
                self._waiting.remove(query)

    def answer(self, irc: Any, names: Sequence[str]) -> None:
        """A ``303`` reply arrived: it answers the oldest open question."""
        if not self._delivering(irc):
            return
        with self._lock:
            if not self._waiting:
                return
            query = self._waiting.popleft()
        present = {ircutils.toLower(name) for name in names}
        query.found = frozenset(n for n in query.nicks if ircutils.toLower(n) in present)
        query.done.set()

    def holders(self, nicks: Sequence[str]) -> dict[str, Holder]:
        """See :meth:`IrcLink.holders`."""
        irc = self.irc()
        if irc is None:
            return dict.fromkeys(nicks)
        found: dict[str, Holder] = {}
        unknown = []
        for nick in nicks:
            account = tracked_account(irc.state, nick)
            if account is None:
                unknown.append(nick)
            else:
                found[nick] = self._fedora_holder(account)
        if not unknown:
            return found
        # InsensitivePreservingDict: the ISUPPORT token is found whatever its case.
        if "WHOX" in irc.state.supported:
            found.update(self._ask_who(irc, unknown))
        else:
            found.update(dict.fromkeys(unknown, UNCHECKED))
        return found

    def _fedora_holder(self, account: str) -> str | None:
        return self.fedora_name(account) if account else ""

    def _ask_who(self, irc: Any, nicks: Sequence[str]) -> dict[str, Holder]:
        found: dict[str, Holder] = dict.fromkeys(nicks)
        queries = []
        for nick in nicks:
            query = _WhoQuery(nick)
            with self._lock:
                self._who_waiting.append(query)
            if not irc.queueMsg(ircmsgs.IrcMsg(command="WHO", args=(nick, f"%tna,{WHOX_TOKEN}"))):
                self._forget_who(query)
                continue
            queries.append(query)
        late = 0
        for query in queries:
            # Limnoria sends queued lines one per supybot.protocols.irc.throttleTime, so
            # answers come one after another: each may take who_timeout after the one
            # before. Once one has not come, the server isn't answering: no more waiting.
            if not query.done.wait(0 if late else self.who_timeout):
                self._forget_who(query)
                late += 1
                continue
            if query.account is None:
                found[query.nick] = ""
            else:
                found[query.nick] = self._fedora_holder(
                    "" if query.account == "0" else query.account
                )
        if late:
            self.log.warning(
                "no WHO reply within %s s for %d nick(s); their IRC lines wait",
                self.who_timeout,
                late,
            )
        return found

    def _forget_who(self, query: _WhoQuery) -> None:
        with self._lock:
            if query in self._who_waiting:
                self._who_waiting.remove(query)

    def who_reply(self, irc: Any, args: Sequence[str]) -> None:
        """A ``354`` arrived: with fmn's token, it names the account on an asked nick."""
        if len(args) != 4 or args[1] != WHOX_TOKEN or not self._delivering(irc):
            return
        nick, account = args[2], args[3]
        with self._lock:
            query = self._oldest_who(nick)
            if query is not None and query.account is None:
                query.account = account

    def who_end(self, irc: Any, args: Sequence[str]) -> None:
        """A ``315`` arrived: the WHO of the nick it names is over."""
        if len(args) < 2 or not self._delivering(irc):
            return
        with self._lock:
            # Limnoria's own WHO of a channel ends with a 315 too: it matches no query.
            query = self._oldest_who(args[1])
            if query is None:
                return
            self._who_waiting.remove(query)
        query.done.set()

    def _oldest_who(self, nick: str) -> _WhoQuery | None:
        return next((q for q in self._who_waiting if ircutils.strEqual(q.nick, nick)), None)

    def _delivering(self, irc: Any) -> bool:
        delivering = self.irc()
        # Callbacks get a proxy of the Irc object: compare networks, not objects.
        return delivering is not None and irc.network == delivering.network

    def send(self, nick: str, text: str) -> bool:
        """See :meth:`IrcLink.send`."""
        irc = self.irc()
        if irc is None:
            return False
        return bool(irc.queueMsg(ircmsgs.privmsg(nick, text)))

    def bot_nick(self) -> str:
        """The bot's own nick on the delivery network."""
        irc = self.irc()
        return str(irc.nick) if irc is not None else "fmn"


def _chunks(nicks: Sequence[str], budget: int = 400) -> Iterator[list[str]]:
    chunk: list[str] = []
    size = 0
    for nick in nicks:
        if chunk and size + len(nick) + 1 > budget:
            yield chunk
            chunk, size = [], 0
        chunk.append(nick)
        size += len(nick) + 1
    if chunk:
        yield chunk
