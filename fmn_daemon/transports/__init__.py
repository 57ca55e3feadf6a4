"""Transports: the one seam between rendered notifications and the outside world.

Every transport has one method, ``async send(destination, rendered)``, which
returns when the destination accepted the message and raises
:class:`TransportError` with a reason a user can read when it did not. Tests and
other backends plug in by implementing the same method.

::

    TransportError          the destination did not take the message
    └── TransportRefused    fmn refused to send there (bad or unsafe address);
                            retrying cannot help

Which transport serves which context is decided in :func:`build_transports`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from fmn_core.config import Config
from fmn_core.rendering import Rendered

if TYPE_CHECKING:
    from .live import LiveHub

__all__ = [
    "DESTINATIONS_AT_ONCE",
    "Blocking",
    "Pooled",
    "Transport",
    "TransportError",
    "TransportRefused",
    "build_transports",
]


#: How many of one message's destinations are sent to at once (a user has at most
#: ``MAX_DESTINATIONS_PER_CONTEXT``, 10): a user whose push servers each keep a send
#: to its deadline holds the claim two deadlines, not ten.
DESTINATIONS_AT_ONCE = 5


class TransportError(Exception):
    """A destination did not accept a message; ``str()`` says why, for users."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r})"


class TransportRefused(TransportError):
    """fmn will not send to this destination (unsafe or unusable); do not retry."""


class Transport(Protocol):
    """Sends one rendered message to one destination."""

    async def send(self, destination: str, rendered: Rendered) -> None:
        """Deliver, or raise :class:`TransportError` with a readable reason."""
        ...


@runtime_checkable
class Blocking(Protocol):
    """A transport whose sends block in a worker thread anyway (SMTP).

    Senders call ``send_blocking`` for a whole batch of messages from one worker
    thread, instead of one thread hand-off (and one wake of the event loop) per
    message.
    """

    def send_blocking(self, destination: str, rendered: Rendered) -> None:
        """Deliver from a worker thread, or raise :class:`TransportError`."""
        ...


@runtime_checkable
class Pooled(Protocol):
    """A transport that keeps connections open between sends (blocking methods)."""

    def close_idle(self) -> int:
        """Close the connections unused for a while; how many were closed."""
        ...

    def close(self) -> None:
        """Close every idle connection (the daemon is stopping)."""
        ...


def build_transports(config: Config, live: LiveHub | None = None) -> Mapping[str, Transport]:
    """The transport for each context the daemon delivers (``irc`` is the bot's)."""
    from .email import EmailTransport
    from .feed import FeedTransport
    from .live import LiveTransport
    from .push import AndroidTransport, PushTransport

    # Threads for every send slot's destinations at once, and one for the confirmation
    # codes sent beside them (started only as sends need them).
    push = PushTransport(config.push, threads=config.delivery.senders * DESTINATIONS_AT_ONCE + 1)
    transports: dict[str, Transport] = {
        "email": EmailTransport(config.smtp),
        "push": push,
        "desktop": push,
        "android": AndroidTransport(push, config.fcm, config.push),
        "rss": FeedTransport(),
    }
    if live is not None:
        transports["live"] = LiveTransport(live)
    if config.matrix.configured:
        # Without a bot (matrix.user_id), nobody can set a Matrix ID either. Imported
        # only then: its HTTP client is ~1 MiB that a daemon without a bot never uses.
        from .matrix import MatrixTransport

        transports["matrix"] = MatrixTransport(config.matrix)
    return {context: t for context, t in transports.items() if context in config.contexts}
