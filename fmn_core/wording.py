"""How fmn words its views for people: one phrasing, used by the bot and the TUI.

The bot and the TUI show the same facts (how many filters a context has, its
digest policy); they say them in the same words by asking this module, so a
phrase is changed in one place. Front ends add their own layout (a table cell,
an IRC line), never their own wording of these facts.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

__all__ = ["DigestPolicy", "count", "digest_policy", "quiet_hours", "waiting_reason"]


def count(number: int, noun: str, plural: str | None = None) -> str:
    """A number of things as people read it: ``no filters``, ``1 filter``, ``3 filters``.

    ``plural`` is for nouns that don't take an ``s`` (``count(2, "address", "addresses")``).
    """
    many = plural if plural is not None else f"{noun}s"
    if number == 0:
        return f"no {many}"
    return f"1 {noun}" if number == 1 else f"{number} {many}"


class DigestPolicy(Protocol):
    """What :func:`digest_policy` reads: a ``ContextView`` has both."""

    @property
    def digest_minutes(self) -> int: ...

    @property
    def digest_count(self) -> int: ...

    @property
    def digest_at(self) -> str | None: ...

    @property
    def digest_timezone(self) -> str: ...


def digest_policy(view: DigestPolicy, *, compact: bool = False) -> str:
    """When a context's digest goes out: ``every 60 minutes or after 10 notifications``,
    ``every 60 minutes``, ``after 10 notifications``, ``daily at 08:00 Europe/Prague``,
    or ``off``.

    ``compact`` is the same policy for a table cell: ``60m or 10``, ``every 60m``,
    ``after 10``, ``08:00 Europe/Prague``, ``off``.
    """
    minutes, notifications = view.digest_minutes, view.digest_count
    at = view.digest_at
    if compact:
        if minutes and notifications and at is None:
            return f"{minutes}m or {notifications}"
        parts = [f"every {minutes}m"] if minutes else []
        parts += [f"after {notifications}"] if notifications else []
        parts += [f"{at} {view.digest_timezone}"] if at is not None else []
    else:
        parts = [f"every {count(minutes, 'minute')}"] if minutes else []
        parts += [f"after {count(notifications, 'notification')}"] if notifications else []
        parts += [f"daily at {at} {view.digest_timezone}"] if at is not None else []
    return " or ".join(parts) if parts else "off"


def quiet_hours(start: str | None, end: str | None, timezone: str | None) -> str:
    """A context's quiet hours: ``22:00-07:00 Europe/Prague`` or ``none``."""
    if start is None or end is None:
        return "none"
    return f"{start}-{end} {timezone or 'UTC'}"


def _when(moment: dt.datetime) -> str:
    return f"{moment.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC"


#: What each ``Notification.hold_reason`` means, in words (``until`` follows).
_REASONS = {
    "muted": "held while you muted fmn",
    "quiet_hours": "held for your quiet hours",
    "digest": "held for the next digest",
    "rate_limit": "held: too many this hour, they go out as a digest",
    "no_address": "waiting for a confirmed address (confirm one and it goes at once)",
    "offline": "waiting for you to come online on IRC",
    "retry": "sending failed; trying again",
}


#: Reasons whose row is tried again at ``due_at`` rather than held until then.
_RETRIED = frozenset({"no_address", "offline", "retry"})


def waiting_reason(
    state: str, reason: str | None, due_at: dt.datetime | None, last_error: str | None = None
) -> str:
    """Why a notification has not been sent, and until when, as one phrase.

    ``state`` and ``reason`` are a ``Notification``'s ``state`` and
    ``hold_reason``; ``due_at`` is when it is looked at again. The TUI's recent
    notifications, ``fmn pending`` on IRC and ``fmn-daemon outbox`` all say it so.
    """
    if state == "sent":
        return "sent"
    if state == "sending":
        return "being sent now"
    if state == "dead":
        why = f": {last_error}" if last_error else ""
        return f"given up{why}"
    words = _REASONS.get(reason or "")
    if words is None:
        words = "sending failed; trying again" if state == "failed" else "about to be sent"
        if state == "failed" and last_error:
            words = f"{words} ({last_error})"
    if due_at is None:
        return words
    if reason in _RETRIED or (reason is None and state == "failed"):
        return f"{words}; next try {_when(due_at)}"
    return f"{words} until {_when(due_at)}"
