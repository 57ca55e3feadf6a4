"""Chat lines: how notifications read in a chat (IRC, Matrix), and how fast they go.

A chat gets one line per notification (``[app] summary — url (filter)``), a
digest as one line, and a user's lines above the burst of one round as one
"N more notifications" line. Lines across all users are paced by a
:class:`Pacer` (a token bucket). The IRC bot and the daemon's Matrix sender
use these same functions, so both chats read and behave alike.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence

from . import rendering
from . import text as text_rules
from .outbox import ClaimedNotification

__all__ = [
    "CHAT_CONTEXTS",
    "MAX_LINE_BYTES",
    "Pacer",
    "burst_lines",
    "collapse_line",
    "digest_line",
    "fit_line",
    "notification_line",
    "split_burst",
]

#: The contexts that deliver chat lines: ``irc`` (the bot) and ``matrix`` (the daemon).
CHAT_CONTEXTS = frozenset({"irc", "matrix"})

#: An IRC PRIVMSG line has 512 bytes including the command, the target and the
#: server's prefix on the way out; 400 bytes of text is safe on every network
#: (and short enough to read as one line in a Matrix client).
MAX_LINE_BYTES = 400


def fit_line(text: str, limit: int = MAX_LINE_BYTES) -> str:
    """One chat line: no line breaks or control characters, at most ``limit`` bytes."""
    flat = text_rules.one_line(text)
    if len(flat.encode("utf-8")) <= limit:
        return flat
    cut = flat.encode("utf-8")[: limit - len("…".encode())].decode("utf-8", "ignore")
    return cut.rstrip() + "…"


def notification_line(notification: ClaimedNotification) -> str:
    """``[app] summary — url (filter)`` on one line."""
    rendered = rendering.render(notification)
    text = rendered.subject
    if rendered.url:
        text += f" — {rendered.url}"
    suffix = fit_line(f"({notification.filter_name})", MAX_LINE_BYTES // 4)
    room = MAX_LINE_BYTES - len(suffix.encode("utf-8")) - 1
    return f"{fit_line(text, room)} {suffix}"


def _by_app(notifications: Sequence[ClaimedNotification]) -> str:
    counts = Counter(n.app or n.topic for n in notifications)
    return ", ".join(f"{app} ({count})" for app, count in counts.most_common())


def collapse_line(notifications: Sequence[ClaimedNotification], hint: str = "") -> str:
    """The line that stands for the notifications above a user's burst; ``hint`` says
    where they can be read later (on IRC: ``'fmn recent' lists them``)."""
    more = f"; {hint}" if hint else ""
    return fit_line(f"{len(notifications)} more notifications: {_by_app(notifications)}{more}")


def digest_line(notifications: Sequence[ClaimedNotification]) -> str:
    """One digest line: the count by application, then the first summaries."""
    if len(notifications) == 1:
        return notification_line(notifications[0])
    first = "; ".join(rendering.render(n).subject for n in notifications[:3])
    return fit_line(
        f"Digest: {len(notifications)} notifications, {_by_app(notifications)}: {first}"
        + ("; …" if len(notifications) > 3 else "")
    )


def split_burst(
    rows: Sequence[ClaimedNotification], burst: int
) -> tuple[list[ClaimedNotification], list[ClaimedNotification]]:
    """A user's rows of one round: those that get a line each (at most ``burst``
    lines in all), and those collapsed into one last line (empty when none are)."""
    burst = max(burst, 1)
    if len(rows) <= burst:
        return list(rows), []
    return list(rows[: burst - 1]), list(rows[burst - 1 :])


def burst_lines(
    rows: Sequence[ClaimedNotification], burst: int, *, hint: str = ""
) -> list[tuple[str, list[int]]]:
    """A user's lines for one round, each with the row ids it stands for (see
    :func:`split_burst`); ``hint`` ends the collapsed line (:func:`collapse_line`)."""
    singles, collapsed = split_burst(rows, burst)
    lines = [(notification_line(r), [r.id]) for r in singles]
    if collapsed:
        lines.append((collapse_line(collapsed, hint), [r.id for r in collapsed]))
    return lines


class Pacer:
    """A token bucket: ``rate`` lines per second, up to ``burst`` at once."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = max(rate, 0.01)
        self.capacity = float(max(burst, 1))
        self._clock = clock
        self._tokens = self.capacity
        self._last = clock()

    def delay(self) -> float:
        """Seconds to wait before the next line may go (0 when it may go now)."""
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1:
            return 0.0
        return (1 - self._tokens) / self.rate

    def take(self) -> None:
        """Spend one token (call after ``delay()`` came back 0 or was waited out)."""
        self.delay()
        self._tokens -= 1
