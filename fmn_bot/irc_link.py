"""The bot's side of IRC for delivery: who is online, which account holds a nick, PRIVMSG.

:class:`IrcLink` is the seam :class:`fmn_bot.delivery.IrcSender` sends through
(tests give it a fake); :class:`LimnoriaLink` is the real one, on the Limnoria
connection the plugin runs in.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import supybot.ircmsgs as ircmsgs
import supybot.ircutils as ircutils
import supybot.world as world

__all__ = ["ISON_TIMEOUT_SECONDS", "IrcLink", "LimnoriaLink"]

#: How long a presence question (ISON) may go unanswered.
ISON_TIMEOUT_SECONDS = 10.0


class IrcLink(Protocol):
    """What delivery needs from the IRC connection."""

    def online(self, nicks: Sequence[str]) -> frozenset[str] | None:
        """The nicks (as given) that are on the network now; None if that can't be told."""
        ...

    def holder(self, nick: str) -> str | None:
        """The Fedora account identified on ``nick``, when the bot knows it."""
        ...

    def send(self, nick: str, text: str) -> bool:
        """Queue one private message; False when it could not be queued."""
        ...


@dataclass
class _IsonQuery:
    nicks: tuple[str, ...]
    done: threading.Event = field(default_factory=threading.Event)
    found: frozenset[str] = frozenset()


class LimnoriaLink:
    """IrcSender's view of IRC: ISON for presence, services accounts, PRIVMSG.

    Presence is asked with ``ISON`` (RFC 1459, answered by every server): it
    sees a nick anywhere on the network, not only in channels the bot shares.
    Replies come back in order, so each ``303`` answers the oldest question.
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
        delivering = self.irc()
        # Callbacks get a proxy of the Irc object: compare networks, not objects.
        if delivering is None or irc.network != delivering.network:
            return
        with self._lock:
            if not self._waiting:
                return
            query = self._waiting.popleft()
        present = {ircutils.toLower(name) for name in names}
        query.found = frozenset(n for n in query.nicks if ircutils.toLower(n) in present)
        query.done.set()

    def holder(self, nick: str) -> str | None:
        """See :meth:`IrcLink.holder`."""
        irc = self.irc()
        if irc is None:
            return None
        try:
            account = irc.state.nickToAccount(nick)
        except KeyError:
            return None
        return self.fedora_name(account) if account else None

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
