"""How fmn words its views for people: one phrasing, used by the bot and the TUI.

The bot and the TUI show the same facts (how many filters a context has, its
digest policy); they say them in the same words by asking this module, so a
phrase is changed in one place. Front ends add their own layout (a table cell,
an IRC line), never their own wording of these facts.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["DigestPolicy", "count", "digest_policy"]


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


def digest_policy(view: DigestPolicy, *, compact: bool = False) -> str:
    """When a context's digest goes out: ``every 60 minutes or after 10 notifications``,
    ``every 60 minutes``, ``after 10 notifications``, or ``off``.

    ``compact`` is the same policy for a table cell: ``60m or 10``, ``every 60m``,
    ``after 10``, ``off``.
    """
    minutes, notifications = view.digest_minutes, view.digest_count
    if compact:
        if minutes and notifications:
            return f"{minutes}m or {notifications}"
        parts = [f"every {minutes}m"] if minutes else []
        parts += [f"after {notifications}"] if notifications else []
    else:
        parts = [f"every {count(minutes, 'minute')}"] if minutes else []
        parts += [f"after {count(notifications, 'notification')}"] if notifications else []
    return " or ".join(parts) if parts else "off"
